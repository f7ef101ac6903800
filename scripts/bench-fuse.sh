#!/usr/bin/env bash
# Benchmark: ONNX Runtime CPU latency of qcc's fused model against ORT's own "extended"
# optimization of the original, on the full-size BERT-base graph (synthesised weights),
# batch 8 x sequence 128, one thread. Usage: scripts/bench-fuse.sh [pipeline] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
pipeline=${1:-fold,fuse<target=ort>}
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
orig=$("$work/ortbench" -runs "$runs" -opt extended "$work/bert-base.opset13.onnx" | cut -f2)
ours=$("$work/ortbench" -runs "$runs" -opt extended "$work/qcc.onnx" | cut -f2)
awk -v a="$orig" -v b="$ours" -v p="$pipeline" 'BEGIN {
	printf "BERT-base, batch 8 x seq 128, 1 thread, ORT CPU, median of runs\n"
	printf "original, ORT extended:      %.3f s\n", a
	printf "qcc %s, ORT extended: %.3f s\n", p, b
	printf "speed-up: %.2fx (target >= 1.1)\n", a/b
}'
