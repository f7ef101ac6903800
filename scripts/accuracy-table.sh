#!/usr/bin/env bash
# Accuracy table: qcc's INT8 (QDQ) placements of the trained BERT classifier
# (../shared/models/trained, FP32 accuracy 0.8615) run in ONNX Runtime (CPU) on all 2000
# examples of eval.npz (argmax of the logits against the labels), calibrated on
# calib.npz: every policy (linear, attention, full) x calibration (max, percentile:99.99,
# entropy) x pass order (fold,qdq,fuse<target=onnx> and fold,fuse<target=onnx>,qdq) x
# ORT optimization level (all: ORT's int8 kernels; disabled: the Q/DQ nodes simulated in
# float, as the graph says); then the accuracy budget (policy=full, budget=0.003 with
# eval=eval.npz) for the default calibration and for a harsh one that needs it.
# With HELDOUT=N, every model is also scored (ORT level all) on N fresh examples of the
# task (internal/cmd/heldout, seed HELDOUT_SEED, default 1) that no placement or budget was
# judged on: accuracy and agreement with the FP32 model's predictions. On eval.npz's 2000
# rows one prediction is 0.05 point.
# QCC=path/to/qcc measures another build's placements (an older commit's, say) with this
# tree's tools.
# Usage: [HELDOUT=40000] [QCC=qcc] scripts/accuracy-table.sh [extra qdq options, e.g. "pairs=per-reader"]
set -euo pipefail
cd "$(dirname "$0")/.."
trained=../shared/models/trained
model=$trained/bert-cls-trained.opset13.onnx
extra=${1:+;$1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export QCC_ORT_LIB="${QCC_ORT_LIB:-$PWD/.cache/onnxruntime/libonnxruntime.so.1}"
[ -f "$QCC_ORT_LIB" ] || scripts/setup.sh >/dev/null
if [ -n "${QCC:-}" ]; then
	cp "$QCC" "$work/qcc"
else
	go build -o "$work/qcc" ./cmd/qcc
fi
go build -o "$work/evalacc" ./internal/cmd/evalacc

policies=(linear attention full)
calibs=(max percentile:99.99 entropy)
models=("$model")
for p in "${policies[@]}"; do
	for c in "${calibs[@]}"; do
		q="qdq<policy=$p;calib=$c;data=$trained/calib.npz$extra>"
		"$work/qcc" -passes="fold,$q,fuse<target=onnx>" "$model" -o "$work/$p.$c.qdq-fuse.onnx"
		"$work/qcc" -passes="fold,fuse<target=onnx>,$q" "$model" -o "$work/$p.$c.fuse-qdq.onnx"
		models+=("$work/$p.$c.qdq-fuse.onnx" "$work/$p.$c.fuse-qdq.onnx")
	done
done
budget=()
for c in percentile:99.99 percentile:95; do
	"$work/qcc" -stats -passes="fold,qdq<policy=full;calib=$c;data=$trained/calib.npz;budget=0.003;eval=$trained/eval.npz$extra>" \
		"$model" -o "$work/budget.$c.onnx" 2>"$work/budget.$c.stats"
	models+=("$work/budget.$c.onnx")
	budget+=("$c")
done
"$work/evalacc" -data "$trained/eval.npz" -opt all "${models[@]}" >"$work/acc.all"
"$work/evalacc" -data "$trained/eval.npz" -opt disabled "${models[@]}" >"$work/acc.disabled"
if [ "${HELDOUT:-0}" -gt 0 ]; then
	go build -o "$work/heldout" ./internal/cmd/heldout
	"$work/heldout" -like "$trained/eval.npz" -n "$HELDOUT" -seed "${HELDOUT_SEED:-1}" -o "$work/heldout.npz"
	"$work/evalacc" -data "$work/heldout.npz" -opt all -ref "$model" "${models[@]}" >"$work/acc.heldout"
fi
acc() { awk -F'\t' -v m="$1" '$1 == m { print $2 }' "$work/acc.${2:-all}"; }
fp32=$(acc "$model")

echo "bert-cls-trained on eval.npz (2000 examples), ONNX Runtime CPU; calibrated on calib.npz${extra:+; extra qdq options: ${extra#;}}"
echo "FP32 accuracy: $fp32 (ORT level all), $(acc "$model" disabled) (disabled); in parentheses: INT8 - FP32 in points"
printf '%-10s %-17s | %-14s %-14s | %-14s %-14s\n' "" "" "ORT level all" "" "ORT disabled" ""
printf '%-10s %-17s | %-14s %-14s | %-14s %-14s\n' policy calib "fold,qdq,fuse" "fold,fuse,qdq" "fold,qdq,fuse" "fold,fuse,qdq"
for p in "${policies[@]}"; do
	for c in "${calibs[@]}"; do
		row=()
		for l in all disabled; do
			for o in qdq-fuse fuse-qdq; do
				row+=("$(acc "$work/$p.$c.$o.onnx" $l)")
			done
		done
		awk -v p="$p" -v c="$c" -v r="${row[*]}" -v f="$fp32" 'BEGIN {
			n = split(r, a, " ")
			printf "%-10s %-17s |", p, c
			for (i = 1; i <= n; i++) printf " %.4f (%+.2f)%s", a[i], 100*(a[i]-f), i == 2 ? " |" : ""
			printf "\n" }'
	done
done
echo "accuracy budget, fold,qdq<policy=full;budget=0.003;eval=eval.npz>:"
for c in "${budget[@]}"; do
	a=$(acc "$work/budget.$c.onnx")
	kept=$(awk '/qdq: budget quantizers kept/ { print $NF }' "$work/budget.$c.stats")
	total=$(awk '/qdq: budget quantizers total/ { print $NF }' "$work/budget.$c.stats")
	off=$(sed -n 's/.*budget: result: \([0-9]* of [0-9]* groups off[^;]*\);.*/\1/p' "$work/budget.$c.stats")
	awk -v c="$c" -v a="$a" -v f="$fp32" -v k="$kept" -v t="$total" -v o="$off" 'BEGIN {
		printf "  calib=%-16s %.4f (%+.2f points), %s of %s quantizers kept, %s\n", c, a, 100*(a-f), k, t, o }'
done
if [ "${HELDOUT:-0}" -gt 0 ]; then
	hf=$(acc "$model" heldout)
	echo "held out: $HELDOUT fresh examples (internal/cmd/heldout -seed ${HELDOUT_SEED:-1}), ORT level all, FP32 accuracy $hf:"
	echo "accuracy (INT8 - FP32 in points) and the rows whose argmax is FP32's"
	agree() { awk -F'\t' -v m="$1" '$1 == m { print $5 }' "$work/acc.heldout"; }
	printf '%-10s %-17s | %-29s | %-29s\n' policy calib "fold,qdq,fuse" "fold,fuse,qdq"
	for p in "${policies[@]}"; do
		for c in "${calibs[@]}"; do
			row=()
			for o in qdq-fuse fuse-qdq; do
				row+=("$(acc "$work/$p.$c.$o.onnx" heldout)" "$(agree "$work/$p.$c.$o.onnx")")
			done
			awk -v p="$p" -v c="$c" -v r="${row[*]}" -v f="$hf" 'BEGIN {
				split(r, a, " ")
				printf "%-10s %-17s | %.4f (%+.2f) %-13s | %.4f (%+.2f) %s\n", p, c, a[1], 100*(a[1]-f), a[2], a[3], 100*(a[3]-f), a[4] }'
		done
	done
	for c in "${budget[@]}"; do
		awk -v c="$c" -v a="$(acc "$work/budget.$c.onnx" heldout)" -v g="$(agree "$work/budget.$c.onnx")" -v f="$hf" 'BEGIN {
			printf "  budget calib=%-16s %.4f (%+.2f points), %s agree\n", c, a, 100*(a-f), g }'
	done
fi
