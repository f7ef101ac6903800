#!/usr/bin/env bash
# Benchmark: does -target=ort-cpu give ONNX Runtime's CPU provider the fastest INT8 model
# qcc can make? On the full-size BERT-base graph (synthesised weights; calibrated on
# random data, which is fine for timing), batch 1 x sequence 128, ORT optimization level
# "all", ONE intra-op thread, it times in one ortbench run, model by model in turn:
#   FP32       the original model
#   target     qcc -target=ort-cpu
#   hand-written pipelines (the best of them is what -target has to match):
#     onnx     fold,qdq,fuse<target=onnx>                  (the TensorRT Q/DQ form)
#     qattn    fold,qdq<linear;per-reader;pooler float>,fuse<target=ort;provider=cpu>   (QAttention)
#     attn23   the same with opset=23                      (Attention-23 over integer GEMMs)
# Every model's outputs are compared with FP32's before any timing (cosine >= 0.99, else
# the script fails): a wrong fast model never reports a speed-up.
# It prints each speed-up over FP32 (paired: the median over rounds of FP32's time over
# the model's in the same round; by minimum in brackets), the best hand-written one, and
# the ratio target / best (the issue's bar: >= 0.97).
# Usage: scripts/bench-target.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-60}
large=../shared/models/large
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -f .cache/onnxruntime/libonnxruntime.so.1 ] || [ -n "${QCC_ORT_LIB:-}" ] || scripts/setup.sh --minimal >/dev/null
echo "synthesising bert-base weights ..."
/usr/bin/python3 "$large/synth_weights.py" "$large/bert-base.opset13.onnx" --out-dir "$work" --seed 0 >/dev/null
go build -o "$work/qcc" ./cmd/qcc
go build -o "$work/ortbench" ./internal/cmd/ortbench
src="$work/bert-base.opset13.onnx"
q='qdq<policy=linear;pairs=per-reader;disable=other$>'
names=(target onnx qattn attn23)
specs=(
	"-target=ort-cpu"
	"-passes=fold,qdq,fuse<target=onnx>"
	"-passes=fold,$q,fuse<target=ort;provider=cpu>"
	"-passes=fold,$q,fuse<target=ort;provider=cpu;opset=23>"
)
models=()
for i in "${!names[@]}"; do
	echo "compiling ${names[$i]}: qcc ${specs[$i]}"
	# One self-contained file each (under 2 GB), so that identical models compare equal.
	"$work/qcc" "${specs[$i]}" -external-data=never "$src" -o "$work/${names[$i]}.onnx"
	models+=("$work/${names[$i]}.onnx")
done
echo "target pipeline: $("$work/qcc" -target=ort-cpu -print-pipeline 2>/dev/null)"
same=""
for n in "${names[@]:1}"; do
	if cmp -s "$work/target.onnx" "$work/$n.onnx"; then same="$n"; fi
done
"$work/ortbench" -batch 1 -seq 128 -opt all -threads 1 -runs "$runs" -check-cos 0.99 \
	"$src" "${models[@]}" >"$work/times"
awk -v runs="$runs" -v names="FP32 ${names[*]}" -v same="$same" 'BEGIN { n = split(names, name, " ") }
{ min[NR] = $2; med[NR] = $3; paired[NR] = $4 }
END {
	printf "BERT-base, batch 1 x seq 128, ORT CPU, optimization level all, 1 thread, %d runs each, alternating\n", runs
	printf "  %-8s %.4f s (min) %.4f s (median)\n", name[1], min[1], med[1]
	best = 0
	for (i = 2; i <= NR; i++) {
		printf "  %-8s %.4f s (min) %.4f s (median)  speed-up %.2fx paired (%.2fx by min)\n", name[i], min[i], med[i], paired[i], min[1] / min[i]
		if (i > 2 && paired[i] > best) { best = paired[i]; bi = i }
	}
	printf "speed-up of -target=ort-cpu: %.2fx; best hand-written (%s): %.2fx; ratio %.3f paired, %.3f by min\n", paired[2], name[bi], best, paired[2] / best, min[bi] / min[2]
	if (same != "")
		printf "(the -target=ort-cpu model is byte for byte the %s model: their difference is the timing noise of this run)\n", same
}' "$work/times"
