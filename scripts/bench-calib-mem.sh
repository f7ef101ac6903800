#!/usr/bin/env bash
# Benchmark: peak RSS of calibration with and without calib-mem's bound, on a full-size
# BERT graph from ../shared/models/large (weights recreated by synth_weights.py).
#
# `precision` calibrates every float32 activation of the model (about a thousand tensors
# for bert-base): fetched in one ORT pass, all of one batch's are held at once; with
# calib-mem=MiB they are fetched in groups of at most that many bytes per batch, one ORT
# pass over the data each. Prints peak RSS, wall time and ORT passes per bound, and the
# ratio of each peak to the unbounded run's.
# Usage: scripts/bench-calib-mem.sh [bert-base|bert-large] [batch] [MiB ...]   (default: bert-base 32 0 256 64)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-bert-base}
batch=${2:-32}
shift $(( $# > 2 ? 2 : $# ))
bounds=("$@")
[ ${#bounds[@]} -gt 0 ] || bounds=(0 256 64)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source scripts/lib/bench.sh
synth_large "$model"

printf '%-10s %12s %10s %8s %10s %s\n' calib-mem "peak RSS" "vs none" wall "ORT passes" tensors
base=""
for mib in "${bounds[@]}"; do
	spec="fold,precision<type=fp16;data=random:2;batch=$batch;calib-mem=$mib>"
	line=$( { /usr/bin/time -f "TIME %e %M" "$work/qcc" -passes="$spec" -stats "$src" -o "$work/out.onnx" >/dev/null; } 2>&1 )
	read -r _ secs kb <<<"$(grep '^TIME' <<<"$line")"
	passes=$(grep -o 'calibration ORT passes *[0-9]*' <<<"$line" | awk '{print $NF}')
	tensors=$(grep -o 'tensors calibrated *[0-9]*' <<<"$line" | awk '{print $NF}')
	[ -n "$base" ] || base=$kb
	label=$mib; [ "$mib" = 0 ] && label="none"
	printf '%-10s %9d MiB %9.2fx %7ss %10s %s\n' "$label" $((kb / 1024)) "$(awk -v a="$kb" -v b="$base" 'BEGIN{print a/b}')" "$secs" "${passes:-1}" "${tensors:-?}"
done
echo "model $model, $((size / 1048576)) MiB of weights; batch $batch (random data, 2 batches)"
