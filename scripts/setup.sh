#!/usr/bin/env bash
# Idempotent set-up for building and testing qcc on Debian 12 (run as root, or
# with the Debian packages already present). Safe to re-run: each step checks
# whether its work is already done.
#
#   scripts/setup.sh            everything the tests need (python3-onnx, numpy, nvcc,
#                               chromium, the ONNX Runtime library, Go modules)
#   scripts/setup.sh --minimal  only what the compiler itself needs to run every pass,
#                               calibration included: the ONNX Runtime library, the Go
#                               modules, and a C compiler for cgo where there is none
set -euo pipefail

MINIMAL=0
for arg in "$@"; do
	case "$arg" in
	--minimal) MINIMAL=1 ;;
	-h | --help)
		sed -n '2,11s/^# \{0,1\}//p' "$0"
		exit 0
		;;
	*)
		echo "setup: unknown argument $arg (want --minimal or nothing)" >&2
		exit 2
		;;
	esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ORT_VERSION=1.30.0
ORT_DIR="$ROOT/.cache/onnxruntime"
ORT_LIB="$ORT_DIR/libonnxruntime.so.1"
ORT_MEMBER="package/bin/napi-v6/linux/x64/libonnxruntime.so.1"
# The registry's sha512 of the package tarball (npm view onnxruntime-node@1.30.0
# dist.integrity, base64 sha512-twhs1C2C/BFkz1yc…), in hex for sha512sum.
ORT_SHA512=b7086cd42d82fc1164cf5c9ce4e634288536194aba0d444eee10f86f1e50d90cb79c0309c115d6f31537355733136f5503d96894b3987a9a03f1f8d318e7c8ab
ORT_TARBALL="https://registry.npmjs.org/onnxruntime-node/-/onnxruntime-node-$ORT_VERSION.tgz"

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
# runs only on a machine that lacks something. --minimal needs only a C compiler
# (cgo, for the ort package) and a way to fetch the npm tarball (npm or curl; curl
# is far smaller than Debian's npm, which pulls in hundreds of node packages).
need=()
command -v gcc >/dev/null || need+=(gcc libc6-dev)
if [ "$MINIMAL" -eq 1 ]; then
	command -v npm >/dev/null || command -v curl >/dev/null || need+=(curl ca-certificates)
else
	for pkg in python3-onnx python3-numpy chromium; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
	done
	command -v npm >/dev/null || need+=(nodejs npm)
fi
if [ ${#need[@]} -gt 0 ]; then
	step "installing Debian packages: ${need[*]}"
	apt_install "${need[@]}"
else
	step "Debian packages present"
fi

# 2. ONNX Runtime shared library, taken from the npm package's tarball. Only
# the .so is extracted; the package's install script (which downloads from
# elsewhere) never runs, because npm pack only downloads the tarball.
stamp="$ORT_DIR/VERSION"
if [ -f "$ORT_LIB" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$ORT_VERSION" ]; then
	step "onnxruntime $ORT_VERSION present in .cache/onnxruntime"
else
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' EXIT
	if command -v npm >/dev/null; then
		step "fetching onnxruntime $ORT_VERSION (npm pack onnxruntime-node@$ORT_VERSION)"
		(cd "$tmp" && npm pack --silent --ignore-scripts "onnxruntime-node@$ORT_VERSION" >/dev/null)
	else
		step "fetching onnxruntime $ORT_VERSION ($ORT_TARBALL)"
		curl -fsSL -o "$tmp/onnxruntime-node-$ORT_VERSION.tgz" "$ORT_TARBALL"
	fi
	tgz="$(ls "$tmp"/onnxruntime-node-*.tgz)"
	# npm checks this itself; curl does not, so check both ways alike.
	got="$(sha512sum "$tgz" | cut -d' ' -f1)"
	if [ "$got" != "$ORT_SHA512" ]; then
		echo "setup: $tgz has sha512 $got, want $ORT_SHA512" >&2
		exit 1
	fi
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

# 3. Go modules, so builds and tests run without further downloads.
step "go mod download"
go mod download

if [ "$MINIMAL" -eq 1 ]; then
	step "done (minimal; the library is found in .cache without QCC_ORT_LIB)"
	exit 0
fi

# 4. nvcc (Debian's nvidia-cuda-toolkit, CUDA 11.8), for compiling the CUDA
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

step "done (QCC_ORT_LIB=$ORT_LIB)"
