# Shared by the bench-*.sh scripts (sourced, not run): the synthesised large graphs and
# the timing of one command. Callers set $work (a scratch folder) first.

# synth_large MODEL: writes ../shared/models/large/MODEL.opset13.onnx with synthesised
# external weights to $work/in, builds qcc to $work/qcc, and sets $src (the model) and
# $size (graph + weights, bytes).
synth_large() {
	local large=../shared/models/large
	[ -f "$large/$1.opset13.onnx" ] || { echo "$(basename "$0"): $large/$1.opset13.onnx not found" >&2; exit 1; }
	echo "synthesising $1 weights ..."
	/usr/bin/python3 "$large/synth_weights.py" "$large/$1.opset13.onnx" --out-dir "$work/in" --seed 0 >/dev/null
	go build -o "$work/qcc" ./cmd/qcc
	src="$work/in/$1.opset13.onnx"
	size=$(( $(stat -c %s "$src") + $(stat -c %s "$src.data") ))
}

# measure N CMD...: runs CMD N times, each into an empty $work/out, and prints
# "seconds maxrss_kib" of the fastest run.
measure() {
	local n=$1 best="" line
	shift
	for _ in $(seq "$n"); do
		rm -rf "$work/out" && mkdir "$work/out"
		sync
		line=$(/usr/bin/time -f "%e %M" "$@" 2>&1 >/dev/null | tail -1)
		if [ -z "$best" ] || awk -v a="${line%% *}" -v b="${best%% *}" 'BEGIN{exit !(a<b)}'; then best=$line; fi
	done
	rm -rf "$work/out"
	echo "$best"
}
