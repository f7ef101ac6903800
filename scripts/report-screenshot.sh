#!/usr/bin/env bash
# Compiles a model with qcc -report and saves a screenshot of the report page, rendered by
# headless Chromium (Debian's chromium; scripts/setup.sh installs it).
#
#   scripts/report-screenshot.sh [OUT.png [MODEL [qcc flags ...]]]
#
# Defaults: /tmp/qcc-report.png, the shipped testdata/models/bert.opset13.onnx, and
# -target=tensorrt (Q/DQ kept, so the page has blocks left decomposed with reasons and a
# histogram per quantized activation). HEIGHT (default 3200) is the page height captured.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/qcc-report.png}
model=${2:-testdata/models/bert.opset13.onnx}
shift $(($# > 2 ? 2 : $#))
flags=("$@")
[ ${#flags[@]} -gt 0 ] || flags=(-target=tensorrt)
command -v chromium >/dev/null || { echo "report-screenshot: chromium not found (scripts/setup.sh installs it)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go run ./cmd/qcc "${flags[@]}" -report "$work/report.html" "$model" -o "$work/out.onnx"
DBUS_SESSION_BUS_ADDRESS=disabled: chromium --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars \
	--user-data-dir="$work/profile" --window-size=1200,"${HEIGHT:-3200}" --screenshot="$out" "file://$work/report.html" 2>/dev/null
[ -s "$out" ] || { echo "report-screenshot: chromium wrote no screenshot" >&2; exit 1; }
echo "report-screenshot: $out ($(stat -c %s "$out") bytes) for qcc ${flags[*]} $model"
