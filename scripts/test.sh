#!/usr/bin/env bash
# The project's test command: set up (idempotent, fast when done), then run
# every Go test. ORT tests fail rather than skip when the library is missing,
# unless QCC_REQUIRE_ORT=0. Extra arguments go to go test (e.g. -run X -v).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/setup.sh
export QCC_ORT_LIB="${QCC_ORT_LIB:-$ROOT/.cache/onnxruntime/libonnxruntime.so.1}"
# setup.sh installs chromium for the report tests; they fail rather than skip without it.
export QCC_REQUIRE_CHROMIUM="${QCC_REQUIRE_CHROMIUM:-1}"
# The real-model corpus (../shared/models) is there in CI: its tests fail rather than skip.
export QCC_REQUIRE_CORPUS="${QCC_REQUIRE_CORPUS:-1}"
# -timeout: the CUDA package compiles many kernels with nvcc; 10 minutes is tight on 2 cores.
QCC_REQUIRE_ORT="${QCC_REQUIRE_ORT:-1}" go test -timeout 40m ./... "$@"
