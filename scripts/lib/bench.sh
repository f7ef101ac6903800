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

# once CMD...: runs CMD once into an empty $work/out and prints "seconds maxrss_kib".
once() {
	rm -rf "$work/out" && mkdir "$work/out"
	sync
	/usr/bin/time -f "%e %M" "$@" 2>&1 >/dev/null | tail -1
}

# fastest: of "seconds kib" lines on stdin, the line with the fewest seconds.
fastest() { sort -g -k1,1 | head -1; }

# measure N CMD...: runs CMD N times, each into an empty $work/out, and prints
# "seconds maxrss_kib" of the fastest run.
measure() {
	local n=$1 lines=""
	shift
	for _ in $(seq "$n"); do lines+="$(once "$@")"$'\n'; done
	rm -rf "$work/out"
	printf '%s' "$lines" | fastest
}

# measure_pair N CMD_A... -- CMD_B...: runs A and B in turn, N rounds, each into an
# empty $work/out, so that a drift in the machine's speed (page-cache pressure, a
# neighbour) touches both alike; prints "a_seconds a_kib b_seconds b_kib" of each
# one's fastest run.
measure_pair() {
	local n=$1 a=() b=() x side=a la="" lb=""
	shift
	for x in "$@"; do
		if [ "$side" = a ] && [ "$x" = -- ]; then side=b; continue; fi
		if [ "$side" = a ]; then a+=("$x"); else b+=("$x"); fi
	done
	for _ in $(seq "$n"); do
		la+="$(once "${a[@]}")"$'\n'
		lb+="$(once "${b[@]}")"$'\n'
	done
	rm -rf "$work/out"
	echo "$(printf '%s' "$la" | fastest) $(printf '%s' "$lb" | fastest)"
}
