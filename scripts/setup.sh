#!/usr/bin/env bash
# Idempotent set-up for building and testing qcc on Debian 12 (run as root, or
# with the Debian packages already present). Safe to re-run: each step checks
# whether its work is already done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ORT_VERSION=1.30.0
ORT_DIR="$ROOT/.cache/onnxruntime"
ORT_LIB="$ORT_DIR/libonnxruntime.so.1"
ORT_MEMBER="package/bin/napi-v6/linux/x64/libonnxruntime.so.1"

step() { printf 'setup: %s\n' "$*"; }

APT_UPDATED=0
apt_install() {
	if ! command -v apt-get >/dev/null; then
		echo "setup: need Debian packages $* but apt-get is missing" >&2
		return 1
	fi
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	if [ "$APT_UPDATED" -eq 0 ]; then
		"${sudo[@]}" apt-get update -qq >/dev/null
		APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# 1. Debian packages. Only the ones missing are installed, so apt-get update
# runs only on a machine that lacks something.
need=()
for pkg in python3-onnx python3-numpy; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
command -v npm >/dev/null || need+=(nodejs npm)
# cgo (the ort package) needs a C compiler.
command -v gcc >/dev/null || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
	step "installing Debian packages: ${need[*]}"
	apt_install "${need[@]}"
else
	step "Debian packages present (python3-onnx python3-numpy npm gcc)"
fi

# 2. ONNX Runtime shared library, taken from the npm package's tarball. Only
# the .so is extracted; the package's install script (which downloads from
# elsewhere) never runs, because npm pack only downloads the tarball.
stamp="$ORT_DIR/VERSION"
if [ -f "$ORT_LIB" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$ORT_VERSION" ]; then
	step "onnxruntime $ORT_VERSION present in .cache/onnxruntime"
else
	step "fetching onnxruntime $ORT_VERSION (npm pack onnxruntime-node@$ORT_VERSION)"
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && npm pack --silent --ignore-scripts "onnxruntime-node@$ORT_VERSION" >/dev/null)
	tgz="$(ls "$tmp"/onnxruntime-node-*.tgz)"
	tar -xzf "$tgz" -C "$tmp" "$ORT_MEMBER"
	mkdir -p "$ORT_DIR"
	# Write under a temporary name and rename, so an interrupted run never
	# leaves a half-written library that later runs would trust.
	cp "$tmp/$ORT_MEMBER" "$ORT_LIB.tmp"
	mv -f "$ORT_LIB.tmp" "$ORT_LIB"
	echo "$ORT_VERSION" >"$stamp"
	rm -rf "$tmp"
	trap - EXIT
fi
size=$(stat -c %s "$ORT_LIB")
if [ "$size" -le 1000000 ]; then
	echo "setup: $ORT_LIB is only $size bytes; delete .cache/onnxruntime and re-run" >&2
	exit 1
fi

# 3. nvcc (Debian's nvidia-cuda-toolkit, CUDA 11.8), for compiling the CUDA
# code that qcc -emit=cuda writes and the sources in cuda_kernels/. It lives in
# the contrib and non-free components, which the stock sources leave out: add
# them for the mirror the main component comes from. No GPU is needed to
# compile; tests that need nvcc fail without it when QCC_REQUIRE_ORT=1.
if command -v nvcc >/dev/null; then
	step "nvcc present ($(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'))"
else
	nonfree=/etc/apt/sources.list.d/qcc-contrib-non-free.sources
	# (non-free-firmware, which bookworm's default sources carry, is another component.)
	if ! grep -rqsE '^[^#]*[[:space:]]non-free([[:space:]]|$)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
		mirror=${mirror:-http://deb.debian.org/debian}
		step "adding contrib non-free components ($nonfree, $mirror)"
		sudo=()
		[ "$(id -u)" -eq 0 ] || sudo=(sudo)
		printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" |
			"${sudo[@]}" tee "$nonfree" >/dev/null
		APT_UPDATED=0
	fi
	step "installing nvidia-cuda-toolkit (nvcc; large, takes a few minutes)"
	apt_install nvidia-cuda-toolkit
	command -v nvcc >/dev/null || { echo "setup: nvidia-cuda-toolkit installed but nvcc is not on PATH" >&2; exit 1; }
fi

# 4. Go modules, so tests can run without further downloads.
step "go mod download"
go mod download

step "done (QCC_ORT_LIB=$ORT_LIB)"
