#!/usr/bin/env bash
# Benchmark: `qcc -passes=fold` (load + run + save) on a full-size BERT graph from
# ../shared/models/large, whose weights synth_weights.py recreates.
#
# Prints wall time as a ratio to copying the same bytes (cp of .onnx + .data) and peak RSS
# as a ratio to the model size. Usage: scripts/bench-fold.sh [bert-large|bert-base] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-bert-large}
runs=${2:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source scripts/lib/bench.sh
synth_large "$model"
cat "$src" "$src.data" >/dev/null # warm the page cache for both contenders

cp_res=$(measure "$runs" cp "$src" "$src.data" "$work/out/")
qcc_res=$(measure "$runs" "$work/qcc" -passes=fold "$src" -o "$work/out/$model.folded.onnx")
sync_res=$(measure "$runs" "$work/qcc" -passes=fold -fsync "$src" -o "$work/out/$model.folded.onnx")
mkdir -p "$work/out" && "$work/qcc" -passes=fold -stats "$src" -o "$work/out/$model.folded.onnx" 2>&1 | head -1

read -r cp_s cp_kb <<<"$cp_res"
read -r q_s q_kb <<<"$qcc_res"
read -r s_s s_kb <<<"$sync_res"
awk -v cs="$cp_s" -v qs="$q_s" -v kb="$q_kb" -v ss="$s_s" -v size="$size" -v m="$model" 'BEGIN {
	printf "%s: model %.1f MB (graph + external data)\n", m, size/1e6
	printf "cp:            %.2f s\n", cs
	printf "qcc fold:      %.2f s, peak RSS %.1f MB\n", qs, kb*1024/1e6
	printf "time ratio:    %.2fx the copy (target <= 3)\n", qs/(cs>0?cs:0.01)
	printf "memory ratio:  %.3fx the model size (target <= 1.5)\n", kb*1024/size
	printf "with -fsync:   %.2f s, %.2fx the copy (cp does not flush)\n", ss, ss/(cs>0?cs:0.01)
}'
