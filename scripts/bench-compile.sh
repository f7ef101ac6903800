#!/usr/bin/env bash
# Benchmark: `qcc -passes=fold,fuse` (load + passes + save) against copying the same files
# with cp, and against ONNX Runtime's own optimize-and-save (level extended) where it can
# run, on three models:
#   - BERT-large as one inline protobuf (1.3 GB), its weights synthesised by
#     ../shared/models/large/synth_weights.py;
#   - the same graph with its weights as external data;
#   - a LLaMA-7B-shaped decoder (32 layers, hidden 4096, 32 heads, KV heads $KV,
#     intermediate 11008, vocab 32000, FP16 external weights, about 13.5 GB) written by
#     internal/cmd/genllama. It needs about 45 GB of free disk for input and outputs;
#     SKIP_7B=1 leaves it out.
# Each figure is the fastest of $RUNS runs (the 7B one of $RUNS_7B) after warming the page
# cache; peak RSS (max resident set, mapped file pages included) from /usr/bin/time. cp
# and qcc run in turn, round by round, so that a drift in the machine's speed over the
# minutes of a run touches both alike.
# Targets: time <= 1.5x cp; peak RSS <= 1.1x the model inline, <= 300 MB + the largest
# tensor with external data.
#
# Usage: scripts/bench-compile.sh [WORKDIR]     (default: a temporary folder, removed after)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
RUNS_7B=${RUNS_7B:-1}
KV=${KV:-32}
large=../shared/models/large
if [ -n "${1:-}" ]; then work=$1; mkdir -p "$work"; else work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; fi
lib="${QCC_ORT_LIB:-$PWD/.cache/onnxruntime/libonnxruntime.so.1}"
go build -o "$work/qcc" ./cmd/qcc
go build -o "$work/genllama" ./internal/cmd/genllama
go build -o "$work/ortbench" ./internal/cmd/ortbench

source scripts/lib/bench.sh
largest() { # bytes of the largest initializer of a model stored with external data
	/usr/bin/python3 - "$1" <<'PY'
import sys, numpy, onnx
m = onnx.load(sys.argv[1], load_external_data=False)
size = lambda t: numpy.dtype(onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[t.data_type]).itemsize * int(numpy.prod(t.dims))
print(max(size(t) for t in m.graph.initializer))
PY
}
rows=()
row() { # name files... ; measures cp, qcc and (unless NO_ORT) ORT on the first file
	local name=$1 runs=$2 ort=$3
	shift 3
	local model=$1 size=0 f
	for f in "$@"; do size=$((size + $(stat -c %s "$f"))); done
	cat "$@" >/dev/null # warm the page cache for every contender alike
	local pair ort_r="- -"
	pair=$(measure_pair "$runs" cp "$@" "$work/out/" -- "$work/qcc" -passes=fold,fuse "$model" -o "$work/out/m.onnx")
	if [ "$ort" = yes ]; then
		ort_r=$(measure "$runs" "$work/ortbench" -ort-lib "$lib" -save-only -opt extended -optimized "$work/out" "$model" || echo "- -")
	fi
	local big=0
	if [ $# -gt 1 ]; then big=$(largest "$model"); fi
	rows+=("$name $size $big $pair $ort_r")
}

echo "bench-compile: preparing BERT-large ..." >&2
/usr/bin/python3 "$large/synth_weights.py" "$large/bert-large.opset13.onnx" --out-dir "$work/ext" --seed 0 >/dev/null
mkdir -p "$work/inline"
"$work/qcc" -passes= -external-data=never "$work/ext/bert-large.opset13.onnx" -o "$work/inline/bert-large.onnx"
row "BERT-large-inline" "$RUNS" yes "$work/inline/bert-large.onnx"
rm -rf "$work/inline"
row "BERT-large-external" "$RUNS" yes "$work/ext/bert-large.opset13.onnx" "$work/ext/bert-large.opset13.onnx.data"
rm -rf "$work/ext"
if [ "${SKIP_7B:-}" != 1 ]; then
	echo "bench-compile: generating the 7B-shaped decoder ..." >&2
	mkdir -p "$work/7b"
	gen=$( { /usr/bin/time -f "%e %M" "$work/genllama" -layers 32 -hidden 4096 -heads 32 -kv-heads "$KV" \
		-intermediate 11008 -vocab 32000 -dtype fp16 -o "$work/7b/llama-7b.onnx" 2>&1 >/dev/null; } | tail -1)
	echo "bench-compile: genllama wrote it in ${gen% *} s, peak RSS $(( ${gen#* } / 1024 )) MB" >&2
	# ORT's optimize-and-save is not run here: it holds all 13 GB of weights in memory and
	# saves the optimized model as one protobuf, over the 2 GB limit.
	row "LLaMA-7B-fp16-external" "$RUNS_7B" no "$work/7b/llama-7b.onnx" "$work/7b/llama-7b.onnx.data"
	rm -rf "$work/7b"
fi

printf '%-24s %9s %7s %7s %6s %9s %9s %7s %9s\n' model size_MB cp_s qcc_s ratio qcc_RSS RSS_ratio ORT_s ORT_RSS
for r in "${rows[@]}"; do
	read -r name size big cp_s cp_kb q_s q_kb o_s o_kb <<<"$r"
	awk -v n="$name" -v size="$size" -v big="$big" -v cs="$cp_s" -v qs="$q_s" -v qk="$q_kb" -v os="$o_s" -v ok="$o_kb" 'BEGIN {
		rss = qk * 1024
		if (big == 0) { lim = 1.1 * size; what = sprintf("%.2fx model", rss / size) }
		else { lim = 300e6 + big; what = sprintf("%.2fx (300MB+%dMB)", rss / lim, big / 1e6) }
		ort_s = (os == "-") ? "-" : sprintf("%.2f", os)
		ort_m = (ok == "-") ? "-" : sprintf("%.0fMB", ok * 1024 / 1e6)
		printf "%-24s %9.0f %7.2f %7.2f %5.2fx %7.0fMB %9s %7s %9s  time %s, memory %s\n", n, size / 1e6, cs, qs, qs / (cs > 0 ? cs : 0.01), rss / 1e6, what, ort_s, ort_m,
			(qs <= 1.5 * cs ? "ok" : "over"), (rss <= lim ? "ok" : "over")
	}'
done
