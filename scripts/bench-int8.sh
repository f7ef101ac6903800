#!/usr/bin/env bash
# Benchmark: ONNX Runtime CPU latency of qcc's INT8 model against the FP32 model, on the
# full-size BERT-base graph (synthesised weights; calibrated on random data, which is fine
# for timing), batch 1 x sequence 128, ORT optimization level "all", ONE intra-op thread;
# the models are timed in turn, run by run (ortbench). Two INT8 models: the Q/DQ model
# (fold,qdq: the TensorRT form, which ORT runs through its own QDQ rewrites) and that model
# fused for ORT's CPU provider (fold,qdq,fuse<target=ort;provider=cpu;opset=23>:
# MatMulIntegerToFloat with the biases in the GEMM epilogue, Attention-23 on the Q/K/V
# projections, Sum + LayerNormalization).
# Then the accuracy of the same two models on the trained classifier (calibrated on its
# calib.npz, evaluated on the 2000 examples of eval.npz), since synthesised weights say
# nothing about accuracy.
#
# The default placement is policy=linear with pairs=per-reader and the pooler left float
# (disable=other$): ONNX Runtime on x86 turns an int8 activation Q/DQ into
# MatMulIntegerToFloat only when the QuantizeLinear feeds a single DequantizeLinear (its
# QDQS8ToU8 rewrite needs that), and it does not fuse a Q/DQ Gemm without an output Q, so
# a quantized pooler dequantizes its weight every run.
# Usage: scripts/bench-int8.sh [qdq options] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
qopts=${1:-'policy=linear;pairs=per-reader;disable=other$'}
runs=${2:-100}
large=../shared/models/large
trained=../shared/models/trained
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export QCC_ORT_LIB="${QCC_ORT_LIB:-$PWD/.cache/onnxruntime/libonnxruntime.so.1}"
[ -f "$QCC_ORT_LIB" ] || scripts/setup.sh >/dev/null
echo "synthesising bert-base weights ..."
/usr/bin/python3 "$large/synth_weights.py" "$large/bert-base.opset13.onnx" --out-dir "$work" --seed 0 >/dev/null
go build -o "$work/qcc" ./cmd/qcc
go build -o "$work/ortbench" ./internal/cmd/ortbench
go build -o "$work/evalacc" ./internal/cmd/evalacc
echo "quantizing (calibration on random data) ..."
cpu='fuse<target=ort;provider=cpu;opset=23>'
"$work/qcc" -stats -passes="fold,qdq<$qopts;data=random>" "$work/bert-base.opset13.onnx" -o "$work/int8.onnx" 2>&1 |
	grep -E "qdq: (nodes quantized|Q/DQ pairs added|weights int8|left float)" || true
"$work/qcc" -stats -passes="$cpu" "$work/int8.onnx" -o "$work/int8.cpu.onnx" 2>&1 | grep -E "fuse: " || true
"$work/ortbench" -batch 1 -seq 128 -opt all -threads 1 -runs "$runs" -check-cos 0.99 \
	"$work/bert-base.opset13.onnx" "$work/int8.onnx" "$work/int8.cpu.onnx" >"$work/times"
"$work/qcc" -passes="fold,qdq<$qopts;data=$trained/calib.npz>" "$trained/bert-cls-trained.opset13.onnx" -o "$work/trained-int8.onnx"
"$work/qcc" -passes="$cpu" "$work/trained-int8.onnx" -o "$work/trained-int8.cpu.onnx"
"$work/evalacc" -data "$trained/eval.npz" "$trained/bert-cls-trained.opset13.onnx" "$work/trained-int8.onnx" "$work/trained-int8.cpu.onnx" >"$work/acc"
read -r _ fmin fmed _ < <(sed -n 1p "$work/times")
read -r _ imin imed ipair < <(sed -n 2p "$work/times")
read -r _ cmin cmed cpair < <(sed -n 3p "$work/times")
read -r _ facc _ < <(sed -n 1p "$work/acc")
read -r _ iacc _ < <(sed -n 2p "$work/acc")
read -r _ cacc _ < <(sed -n 3p "$work/acc")
awk -v a="$fmin" -v am="$fmed" -v b="$imin" -v bm="$imed" -v c="$cmin" -v cm="$cmed" -v ip="$ipair" -v cp="$cpair" -v q="$qopts" -v f="$cpu" -v r="$runs" \
	-v fa="$facc" -v ia="$iacc" -v ca="$cacc" 'BEGIN {
	printf "BERT-base, batch 1 x seq 128, ORT CPU, optimization level all, 1 thread, %d runs each, alternating (min / median; speed-up by min / by median / paired = median of per-round ratios)\n", r
	printf "  FP32:                                       %.4f / %.4f s\n", a, am
	printf "  INT8 fold,qdq<%s>: %.4f / %.4f s  (%.2fx / %.2fx / %.2fx)\n", q, b, bm, a/b, am/bm, ip
	printf "  INT8 ... then %s: %.4f / %.4f s  (%.2fx / %.2fx / %.2fx; target >= 3)\n", f, c, cm, a/c, am/cm, cp
	printf "  accuracy on trained/bert-cls-trained (eval.npz, same placement): FP32 %.4f, Q/DQ %.4f, fused for CPU %.4f\n", fa, ia, ca
}'
