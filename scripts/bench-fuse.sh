#!/usr/bin/env bash
# Benchmark: ONNX Runtime CPU latency of qcc's fused model against ORT's own "extended"
# optimization of the original, on the full-size BERT-base graph (synthesised weights),
# batch 8 x sequence 128, one thread. The default pipeline fuses for ORT's CPU provider
# (provider=cpu: its SkipLayerNormalization kernel is slower than Add + LayerNormalization).
# Usage: scripts/bench-fuse.sh [pipeline] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
pipeline=${1:-fold,fuse<target=ort;provider=cpu>}
runs=${2:-5}
large=../shared/models/large
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scripts/setup.sh >/dev/null
export QCC_ORT_LIB="${QCC_ORT_LIB:-$PWD/.cache/onnxruntime/libonnxruntime.so.1}"
echo "synthesising bert-base weights ..."
/usr/bin/python3 "$large/synth_weights.py" "$large/bert-base.opset13.onnx" --out-dir "$work" --seed 0 >/dev/null
go build -o "$work/qcc" ./cmd/qcc
go build -o "$work/ortbench" ./internal/cmd/ortbench
"$work/qcc" -passes="$pipeline" -stats "$work/bert-base.opset13.onnx" -o "$work/qcc.onnx" 2>&1 | grep -E "fuse:|fully" || true
for level in extended all; do
	"$work/ortbench" -runs "$runs" -opt $level -check-cos 0.9999 "$work/bert-base.opset13.onnx" "$work/qcc.onnx" >"$work/times.$level"
done
read -r _ orig_min orig_med _ < <(sed -n 1p "$work/times.extended")
for level in extended all; do
	# The paired ratio (median of per-round ratios) exists only where both models ran
	# in the same ortbench, i.e. at level extended.
	read -r _ ours_min ours_med paired < <(sed -n 2p "$work/times.$level")
	awk -v a="$orig_min" -v am="$orig_med" -v b="$ours_min" -v bm="$ours_med" -v pr="$paired" -v p="$pipeline" -v l="$level" -v r="$runs" 'BEGIN {
		printf "BERT-base, batch 8 x seq 128, 1 thread, ORT CPU, %d runs each, alternating (min / median)\n", r
		printf "  original with ORT extended:  %.3f / %.3f s\n", a, am
		printf "  qcc %s with ORT %s: %.3f / %.3f s\n", p, l, b, bm
		printf "  speed-up: %.2fx by min, %.2fx by median", a/b, am/bm
		if (l == "extended") printf ", %.2fx paired", pr
		printf " (target >= 1.1)\n"
	}'
done
