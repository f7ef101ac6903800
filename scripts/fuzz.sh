#!/usr/bin/env bash
# Differential fuzzing of qcc's passes, checked by ONNX Runtime: generates random DAGs and
# mutated transformer blocks on every core for DURATION (Go syntax: 30s, 10m, 1h), runs
# each through every pipeline, shrinks each failure to a minimal model under
# testdata/fuzz/ (replayed by `go test ./internal/fuzz`), and ends with
#   graphs=N mismatches=M panics=P
# then the other failure kinds and matched / refused per mutation class.
# Usage: scripts/fuzz.sh DURATION [extra flags of internal/cmd/fuzz, e.g. -seed 1,
# -classes seq-first,nm-seq-first-softmax-batch]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:?usage: scripts/fuzz.sh DURATION [flags]}
shift
export QCC_ORT_LIB="${QCC_ORT_LIB:-$PWD/.cache/onnxruntime/libonnxruntime.so.1}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/fuzz" ./internal/cmd/fuzz
"$work/fuzz" -duration "$duration" -workers "$(nproc)" -out testdata/fuzz "$@"
