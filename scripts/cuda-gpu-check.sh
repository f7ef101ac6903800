#!/usr/bin/env bash
# Checks qcc's CUDA kernels on a machine with an NVIDIA GPU, numerically against
# ONNX Runtime (CPU) and for bandwidth:
#
#   1. cuda_kernels/selftest.cu: the building blocks against host references.
#   2. qcc -passes=fold,fuse -emit=cuda for the corpus BERT (bert.opset13) and
#      for full-size BERT-base (its weights made by synth_weights.py); each
#      folder's check.cu is compiled for this GPU and run: per block instance and
#      type (f32, f16), the largest absolute and relative error against the
#      outputs ORT computed on the model's own subgraph for the block, and the
#      bandwidth achieved, in GB/s and as a fraction of the device-to-device
#      cudaMemcpy bandwidth measured in the same run (on 256 MB buffers); every
#      timed launch follows a write that evicts the L2 cache, so small working
#      sets are not measured from cache; attention also gets TFLOP/s, and its
#      fraction of copy bandwidth is its fraction of the memory floor.
#   3. The same for both BERTs made half by the precision pass
#      (fold,fuse<target=ort>,precision<type=fp16>): their attention runs on
#      the tensor-core kernel (qcc/flash_attention.cuh), checked in f16 only.
#   4. Standalone LayerNorm, skip+LayerNorm and BiasGelu at hidden 768 and 1024
#      over enough rows that each kernel moves at least 256 MB in float
#      (one-node models written with the onnx package; about 1.6 GB of check
#      data in all).
#   5. Standalone half Attention-23 at full size (BERT-base's 12 heads of 64 and
#      a decoder's 16 heads of 128, causal, 512 tokens): the tensor-core kernel's
#      errors, its fraction of the memory floor (of_copy: q, k, v and the output
#      moved once) and of the GPU's nominal dense FP16 tensor-core peak (of_tc).
#   6. Every probe model (testdata/probes, opset 17: the architectures beyond BERT,
#      written from their equations) in float (fold,fuse) and half
#      (fold,fuse<target=ort>,precision<type=fp16>): each model's check.cu is compiled
#      (in parallel, one nvcc per core) and run like the BERTs'. A model for which
#      qcc plans no kernel is listed and skipped.
#   At the end the attention lines of every run are printed together.
#
# Without a GPU (nvidia-smi missing or failing) it says so and exits 0.
# Needs: go (or a qcc built elsewhere, QCC_BIN), nvcc, python3 with numpy and onnx, and
# the ONNX Runtime library (QCC_ORT_LIB, or .cache/onnxruntime from scripts/setup.sh).
#
# Environment:
#   QCC_GPU_WORK=DIR        where to build and write (default: a temporary folder,
#                           removed at the end unless QCC_GPU_KEEP=1)
#   QCC_GPU_ARCH=sm_90      the architecture to compile for (default: the GPU's)
#   QCC_GPU_CHECK_DRY=1     do everything but run on the GPU (no GPU needed): for
#                           testing this script on a machine without one
#   QCC_GPU_SKIP_LARGE=1    leave out BERT-base (its weights take ~440 MB)
#   QCC_GPU_PROBES_ONLY=1   run step 6 alone
#   QCC_GPU_PROBE_TYPES=f32 step 6's variants (default "f32 f16")
#   QCC_GPU_PROBES=GLOB     the probe models of step 6 (default testdata/probes/*.opset17.onnx;
#                           empty: none)
#   QCC_PYTHON=python3      the Python with numpy and onnx
#   QCC_BIN=PATH            a qcc built elsewhere, for a GPU machine without Go
#   QCC_MODELS=DIR          the model corpus (default ../shared/models)
#
# The exit status is 1 when a check failed or a step could not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODELS="${QCC_MODELS:-$ROOT/../shared/models}"

say() { printf 'cuda-gpu-check: %s\n' "$*"; }
die() {
	printf 'cuda-gpu-check: %s\n' "$*" >&2
	exit 1
}

DRY="${QCC_GPU_CHECK_DRY:-0}"
if [ "$DRY" != 1 ]; then
	if ! command -v nvidia-smi >/dev/null 2>&1; then
		say "no NVIDIA GPU here (nvidia-smi not found); nothing to check"
		exit 0
	fi
	if ! nvidia-smi -L >/dev/null 2>&1; then
		say "no NVIDIA GPU here (nvidia-smi fails: $(nvidia-smi -L 2>&1 | head -n 1)); nothing to check"
		exit 0
	fi
	say "GPU: $(nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader | head -n 1)"
else
	say "dry run: building and compiling only, nothing runs on a GPU"
fi

tools=(nvcc)
[ -n "${QCC_BIN:-}" ] || tools+=(go)
for tool in "${tools[@]}"; do
	command -v "$tool" >/dev/null || die "$tool not found (scripts/setup.sh installs what qcc needs)"
done
# The first python3 with numpy and onnx (a pyenv shim may shadow Debian's).
PY=""
for p in ${QCC_PYTHON:-} python3 /usr/bin/python3; do
	if command -v "$p" >/dev/null && "$p" -c 'import numpy, onnx' 2>/dev/null; then
		PY="$p"
		break
	fi
done
[ -n "$PY" ] || die "no python3 with numpy and onnx (Debian: python3-numpy python3-onnx; or set QCC_PYTHON)"
export QCC_ORT_LIB="${QCC_ORT_LIB:-$ROOT/.cache/onnxruntime/libonnxruntime.so.1}"
[ -f "$QCC_ORT_LIB" ] || die "ONNX Runtime library $QCC_ORT_LIB not found (run scripts/setup.sh or set QCC_ORT_LIB); the expected outputs come from it"
[ -f "$MODELS/bert.opset13.onnx" ] || die "corpus model $MODELS/bert.opset13.onnx not found"

ARCH="${QCC_GPU_ARCH:-}"
if [ -z "$ARCH" ]; then
	if [ "$DRY" = 1 ]; then
		ARCH=sm_90
	else
		cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d ' .')
		ARCH="sm_$cap"
	fi
fi
NVCC=(nvcc -std=c++17 -O3 -arch="$ARCH")
say "nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), compiling for $ARCH"

if [ -n "${QCC_GPU_WORK:-}" ]; then
	WORK="$QCC_GPU_WORK"
	mkdir -p "$WORK"
else
	WORK="$(mktemp -d)"
	[ "${QCC_GPU_KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
fi
say "working in $WORK"

failed=()
# run NAME DIR CMD...: runs a check binary in DIR (unless dry), keeping its output.
run() {
	local name="$1" dir="$2"
	shift 2
	if [ "$DRY" = 1 ]; then
		say "$name: built (dry run: not run)"
		return 0
	fi
	say "$name: running"
	if ! (cd "$dir" && "$@") 2>&1 | tee "$WORK/$name.log"; then
		failed+=("$name")
	fi
	if grep -q 'FAILED' "$WORK/$name.log"; then
		failed+=("$name")
	fi
}

# generate NAME MODEL [PASSES]: qcc -emit=cuda into $WORK/NAME (after PASSES,
# default fold,fuse), with its check data; fails (1) when qcc plans no kernel.
generate() {
	local name="$1" model="$2" passes="${3:-fold,fuse}" out="$WORK/$1"
	rm -rf "$out"
	"$WORK/qcc" -passes="$passes" -stats -emit=cuda -o "$out" "$model" 2>"$WORK/$name.stats" ||
		die "$name: qcc failed: $(tail -n 3 "$WORK/$name.stats")"
	if grep -q '^emit-cuda  *kernels 0 ' "$WORK/$name.stats"; then
		say "$name: no kernel planned; skipped"
		return 1
	fi
	[ -f "$out/check/manifest.json" ] || die "$name: qcc wrote no check data (is ONNX Runtime loadable?)"
}

# emit NAME MODEL [PASSES]: generate, then compile and run its check binary.
emit() {
	local name="$1" model="$2" passes="${3:-fold,fuse}" out="$WORK/$1"
	say "$name: qcc -passes=$passes -emit=cuda $(basename "$model")"
	generate "$name" "$model" "$passes" || return 0
	grep 'note: kernel: attention' "$WORK/$name.stats" | sed "s/^ *note: kernel: /cuda-gpu-check: $name: /" || true
	say "$name: nvcc check.cu kernels.cu"
	(cd "$out" && "${NVCC[@]}" -o qcc_check check.cu kernels.cu)
	run "$name" "$out" ./qcc_check check
}

if [ -n "${QCC_BIN:-}" ]; then
	say "qcc: $QCC_BIN"
	cp "$QCC_BIN" "$WORK/qcc"
else
	say "building qcc"
	go build -o "$WORK/qcc" ./cmd/qcc
fi

FP16='fold,fuse<target=ort>,precision<type=fp16>'
if [ "${QCC_GPU_PROBES_ONLY:-0}" != 1 ]; then
say "selftest: nvcc cuda_kernels/selftest.cu"
"${NVCC[@]}" -I cuda_kernels -o "$WORK/selftest" cuda_kernels/selftest.cu
run selftest "$WORK" ./selftest

emit bert "$MODELS/bert.opset13.onnx"
emit bert-fp16 "$MODELS/bert.opset13.onnx" "$FP16"

if [ "${QCC_GPU_SKIP_LARGE:-0}" != 1 ]; then
	say "bert-base: synthesising weights (synth_weights.py)"
	"$PY" "$MODELS/large/synth_weights.py" "$MODELS/large/bert-base.opset13.onnx" --out-dir "$WORK/bert-base-graph" >/dev/null
	emit bert-base "$WORK/bert-base-graph/bert-base.opset13.onnx"
	emit bert-base-fp16 "$WORK/bert-base-graph/bert-base.opset13.onnx" "$FP16"
fi

# Standalone blocks: one model per hidden size holding a LayerNorm, a skip+
# LayerNorm and a BiasGelu over static [rows, hidden] inputs, rows such that a
# LayerNorm reads and writes at least 256 MB in float (larger than any L2).
"$PY" - "$WORK" <<'PY'
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

work = sys.argv[1]
for hidden in (768, 1024):
    rows = -(-(256 << 20) // (2 * 4 * hidden) // 1024) * 1024
    rng = np.random.RandomState(hidden)
    def const(name, lo, hi):
        return numpy_helper.from_array(rng.uniform(lo, hi, hidden).astype(np.float32), name)
    inits = [const("gamma", 0.5, 1.5), const("beta", -0.5, 0.5), const("bias", -0.5, 0.5), const("gelu_bias", -0.5, 0.5)]
    io = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [rows, hidden])
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], name="layernorm", axis=-1, epsilon=1e-12),
        helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["skip_ln"], name="skip_layernorm",
                         domain="com.microsoft", epsilon=1e-12),
        helper.make_node("BiasGelu", ["u", "gelu_bias"], ["gelu"], name="bias_gelu", domain="com.microsoft"),
    ]
    graph = helper.make_graph(nodes, f"standalone_h{hidden}", [io("x"), io("skip"), io("u")], [io("ln"), io("skip_ln"), io("gelu")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, f"{work}/standalone_h{hidden}.onnx")
PY
for hidden in 768 1024; do
	emit "standalone-h$hidden" "$WORK/standalone_h$hidden.onnx"
done

# Standalone half attention at full size: Attention-23 on static [batch, 512,
# heads * d] inputs (the plan caps sequences at 512).
"$PY" - "$WORK" <<'PY'
import sys
import onnx
from onnx import TensorProto, helper

work = sys.argv[1]
for name, batch, heads, d, causal in (("attention-fp16-d64", 8, 12, 64, 0), ("attention-fp16-d128-causal", 4, 16, 128, 1)):
    io = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT16, [batch, 512, heads * d])
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attention", q_num_heads=heads, kv_num_heads=heads, is_causal=causal)
    graph = helper.make_graph([node], name, [io("q"), io("k"), io("v")], [io("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    onnx.save(model, f"{work}/{name}.onnx")
PY
for name in attention-fp16-d64 attention-fp16-d128-causal; do
	emit "$name" "$WORK/$name.onnx"
done
fi

# Probe models: emit every one first (qcc is quick), compile in parallel (nvcc is
# not), then run them four at a time: they are small, so their timings mean little.
probes=()
if [ -n "${QCC_GPU_PROBES-x}" ]; then
	for model in ${QCC_GPU_PROBES:-testdata/probes/*.opset17.onnx}; do
		base=$(basename "$model" .onnx)
		base=${base%.opset17}
		for variant in ${QCC_GPU_PROBE_TYPES:-f32 f16}; do
			name="probe-$base-$variant"
			passes=fold,fuse
			[ "$variant" = f16 ] && passes="$FP16"
			generate "$name" "$model" "$passes" && probes+=("$name")
		done
	done
	say "probes: compiling ${#probes[@]} check binaries, $(nproc) at a time"
	compile_probe() { cd "$1" && "${@:2}" -o qcc_check check.cu kernels.cu >nvcc.log 2>&1 || rm -f qcc_check; }
	export -f compile_probe
	printf '%s\n' "${probes[@]}" | xargs -P "$(nproc)" -I{} bash -c 'compile_probe "$@"' _ "$WORK/{}" "${NVCC[@]}"
	built=()
	for name in "${probes[@]}"; do
		if [ -x "$WORK/$name/qcc_check" ]; then
			built+=("$name")
		else
			sed "s|^|$name: nvcc: |" "$WORK/$name/nvcc.log"
			failed+=("$name (nvcc)")
		fi
	done
	probes=("${built[@]}")
	if [ "$DRY" = 1 ]; then
		say "probes: built (dry run: not run)"
	else
		run_probe() { (cd "$1" && ./qcc_check check >"$1.log" 2>&1; echo $? >"$1.rc"); }
		export -f run_probe
		printf '%s\n' "${probes[@]}" | xargs -P 4 -I{} bash -c 'run_probe "$@"' _ "$WORK/{}"
		for name in "${probes[@]}"; do
			sed "s|^|$name: |" "$WORK/$name.log"
			if [ "$(cat "$WORK/$name.rc")" != 0 ] || grep -q 'FAILED' "$WORK/$name.log"; then
				failed+=("$name")
			fi
		done
		say "probes: ${#probes[@]} run"
	fi
fi

if [ "$DRY" != 1 ]; then
	say "attention (of_copy: fraction of the memory floor; of_tc: of the nominal dense FP16 tensor-core peak):"
	for log in "$WORK"/*.log; do
		case "$(basename "$log")" in probe-*) continue ;; esac
		grep -E '^attention' "$log" | sed "s|^|cuda-gpu-check: $(basename "$log" .log): |" || true
	done
fi

if [ ${#failed[@]} -gt 0 ]; then
	say "FAILED: ${failed[*]}"
	exit 1
fi
say "done: every check passed$([ "$DRY" = 1 ] && echo ' (dry run: built only)')"
