#!/usr/bin/env bash
# The GPU check, run on a lent GPU machine (shared/DEVICE.md) after bench/device/prepare.sh ran HERE and its
# `carry` list travelled: sets up Node (from .device/), checks that the CUDA addon built here loads (else rebuilds
# it with the machine's nvcc/CMake when the driver is older than its runtime or it lacks kernels for the GPU), finds
# cuDNN in the pip wheel, runs the cuDNN declarations check, the CUDA tests (inference and training), our inference
# and training benchmarks with PyTorch's beside them (and our training step's op-by-op profile), then the rest of the
# test suite. Logs and JSON go into $OUT/logs.tar.gz (the device tool brings back at most 8 files) beside summary.txt,
# cuda-tests.log and bench-table.md; the summary and the tables are printed last. Every phase runs even when an
# earlier one failed.
# Knobs (environment): QUICK=1 (A0,B0; batches 1,128; 0.3 s per timing), BENCH_MODELS, BENCH_BATCHES,
# BENCH_PRECISIONS, BENCH_SECONDS, BENCH_TRAIN_BATCHES (training-time form inference), TRAIN_MODELS, TRAIN_BATCH,
# TRAIN_ROUNDS (training steps), SKIP_TESTS=1, SKIP_SUITE=1 (CUDA tests only), SUITE_SECONDS (default 300), SKIP_BENCH=1,
# SKIP_TORCH=1, RUN_SECONDS (the whole run's budget, default 540).
# Not for: this (GPU-less) machine: bench/device/prepare.sh is the part that runs here.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO="$PWD"
OUT="${OUT:-$REPO/device-out}"
WORK="${TMPDIR:-/tmp}/repvgg-device"
mkdir -p "$OUT" "$WORK"
START=$(date +%s)

if [ "${QUICK:-0}" = 1 ]; then
  : "${BENCH_MODELS:=A0,B0}" "${BENCH_BATCHES:=1,128}" "${BENCH_SECONDS:=0.3}"
fi
MODELS="${BENCH_MODELS:-A0,A1,B0,B1g4,B3}"
BATCHES="${BENCH_BATCHES:-1,32,128}"
PRECISIONS="${BENCH_PRECISIONS:-fp32,fp16}"
SECONDS_PER="${BENCH_SECONDS:-0.5}"
TRAIN_BATCHES="${BENCH_TRAIN_BATCHES:-128}"

summary=()
note() {
  echo "run.sh [$(($(date +%s) - START))s] $*"
  summary+=("$*")
}

# The device tool brings back at most 8 files from $OUT: at the end (or when the run is stopped) every log goes into
# one archive, and the summary and the two files read first stay beside it.
bundle() {
  printf '%s\n' "${summary[@]}" > "$OUT/summary.txt"
  tar -czf "$WORK/logs.tar.gz" -C "$OUT" . 2>/dev/null
  find "$OUT" -mindepth 1 -maxdepth 1 ! -name summary.txt ! -name cuda-tests.log ! -name bench-table.md -exec rm -rf {} +
  mv "$WORK/logs.tar.gz" "$OUT/"
}
trap 'note "stopped by a signal"; bundle; exit 1' TERM INT

# ---- machine
{
  echo "== nvidia-smi"; nvidia-smi -L 2>&1; nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>&1
  echo "== nvcc"; (command -v nvcc >/dev/null && nvcc --version) || /usr/local/cuda/bin/nvcc --version 2>&1
  echo "== cmake"; cmake --version 2>&1 | head -1
  echo "== python"; python3 -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' 2>&1
  echo "== glibc"; ldd --version 2>&1 | head -1
  echo "== NVIDIA libraries in python3's wheels (where our cuDNN search and its dependency pre-load look)"
  timeout 30 python3 -c 'import nvidia, os
for root in nvidia.__path__:
    for dirpath, _, files in os.walk(root):
        libs = sorted(f for f in files if f.startswith(("libcudnn.so", "libcublasLt.so", "libcublas.so", "libnvrtc")))
        if libs: print(dirpath, " ".join(libs))' 2>&1
} > "$OUT/machine.txt" 2>&1
gpu="$(nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>/dev/null | head -1)"
note "GPU: ${gpu:-unknown (nvidia-smi failed)}"

# ---- Node (carried as .device/node.xz) and the CPU addon's libraries (carried as .device/lib.tar.xz)
if [ -f .device/node.xz ]; then
  xz -dc .device/node.xz > "$WORK/node" && chmod +x "$WORK/node" && export PATH="$WORK:$PATH"
fi
if ! command -v node >/dev/null 2>&1; then
  note "FATAL: no node (carry .device/node.xz: run bench/device/prepare.sh here first)"
  printf '%s\n' "${summary[@]}"
  bundle
  exit 1
fi
mkdir -p "$WORK/lib"
[ -f .device/lib.tar.xz ] && tar -xJf .device/lib.tar.xz -C "$WORK/lib"
# Only node sees the carried libraries: PyTorch keeps its own.
nodex() { LD_LIBRARY_PATH="$WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" node "$@"; }
if [ ! -d node_modules/ava ] && [ -f .device/node_modules.tar.xz ]; then tar -xJf .device/node_modules.tar.xz; fi
note "node $(node --version); node_modules: $(ls node_modules 2>/dev/null | wc -l) packages"

# ---- cuDNN from the pip wheel (our loader should find it by itself; this is for the record and the check)
wheel_cudnn="$(timeout 30 python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null || true)"
note "pip cuDNN wheel: ${wheel_cudnn:-not found}"

# ---- the CUDA addon built here, or a rebuild with this machine's toolkit. Loading is not enough: a CUDA 13 build
# loads fine under an older driver and then reports "unavailable", so the decision is the driver's CUDA version
# against the runtime linked into the addon (and whether it has kernels for this GPU).
rebuild_reason=""
if versions="$(nodex -e 'const i = require("./build-cuda/Release/repvgg_cuda.node").info();
    console.log([i.driverVersion, i.runtimeVersion, i.kernelError ? "no-kernels" : "kernels-ok"].join(" "))' 2> "$OUT/addon-load.log")"; then
  read -r driver_cuda runtime_cuda kernels <<< "$versions"
  if [ "$driver_cuda" = none ]; then
    note "addon: loads; no NVIDIA driver answers (a rebuild cannot help)"
  elif [ "$(printf '%s\n%s\n' "$driver_cuda" "$runtime_cuda" | sort -V | head -1)" != "$runtime_cuda" ]; then
    rebuild_reason="the driver supports CUDA $driver_cuda, older than the addon's runtime $runtime_cuda"
  elif [ "$kernels" = no-kernels ]; then
    rebuild_reason="the addon has no kernels for this GPU's architecture"
  else
    note "addon: the binary built here loads and fits (driver CUDA $driver_cuda >= runtime $runtime_cuda)"
  fi
else
  rebuild_reason="the binary built here does not load ($(tr "\n" " " < "$OUT/addon-load.log" | head -c 300))"
fi
if [ -n "$rebuild_reason" ]; then
  note "addon: rebuilding: $rebuild_reason"
  arch="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')"
  nvcc_bin="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
  if cmake -S . -B "$WORK/build-cuda" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc_bin" \
      -DREPVGG_CUDA_ARCHS="${arch:-90}" -DNODE_API_INCLUDE_DIR="$REPO/node_modules/node-api-headers/include" \
      -DNODE_ADDON_API_DIR="$REPO/node_modules/node-addon-api" -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$REPO/build-cuda/Release" \
      > "$OUT/rebuild.log" 2>&1 && cmake --build "$WORK/build-cuda" -j "$(nproc)" >> "$OUT/rebuild.log" 2>&1; then
    note "addon: rebuilt for sm_${arch:-90} ($(grep -m1 'repvgg: nvcc' "$OUT/rebuild.log" | sed 's/.*repvgg: //'))"
  else
    note "addon: REBUILD FAILED (see rebuild.log: $(tail -3 "$OUT/rebuild.log" | tr '\n' ' '))"
  fi
fi

# ---- what the backend reports
status_js='import("./dist/lib/backend/cuda.js").then((m) => { const s = m.cudaStatus(); console.log(JSON.stringify(s, null, 1)); process.exit(s.available ? 0 : 3); })'
if nodex -e "$status_js" > "$OUT/cuda-status.json" 2>&1; then
  note "cudaStatus: available ($(nodex -e 'const s=require(process.argv[1]); const d=s.details; console.log(`${d.deviceName} sm ${d.computeCapability}, driver ${d.driverVersion}, runtime ${d.runtimeVersion}, cuDNN ${d.cudnnVersion} at ${d.cudnnPath}`)' "$OUT/cuda-status.json" 2>/dev/null))"
else
  note "cudaStatus: UNAVAILABLE by itself: $(grep -m1 '"reason"' "$OUT/cuda-status.json")"
  if [ -n "$wheel_cudnn" ]; then
    export REPVGG_CUDNN_PATH="$wheel_cudnn/lib"
    if nodex -e "$status_js" > "$OUT/cuda-status.json" 2>&1; then
      note "cudaStatus: available with REPVGG_CUDNN_PATH=$REPVGG_CUDNN_PATH (the wheel search missed it: a bug to fix)"
    else
      note "cudaStatus: still unavailable with REPVGG_CUDNN_PATH: $(grep -m1 '"reason"' "$OUT/cuda-status.json")"
    fi
  fi
fi

# ---- our cuDNN declarations against the real cudnn.h
CUDNN_INCLUDE="${CUDNN_INCLUDE:-${wheel_cudnn:+$wheel_cudnn/include}}" bash bench/device/check_cudnn_decls.sh > "$OUT/check-decls.log" 2>&1
rc=$?
note "declarations check: $([ $rc = 0 ] && echo OK || ([ $rc = 2 ] && echo SKIPPED || echo FAILED)) ($(tail -1 "$OUT/check-decls.log"))"

# ---- phases below share one time budget (RUN_SECONDS, default 540: the device tool's per-call limit is 600),
# the GPU-specific ones first; each gets at most its own cap and what is left.
DEADLINE=$((START + ${RUN_SECONDS:-540}))
budget() { local left=$((DEADLINE - $(date +%s) - 10)); [ "$left" -gt "$1" ] && left=$1; [ "$left" -lt 20 ] && left=20; echo "$left"; }
ava() { timeout "$1" env LD_LIBRARY_PATH="$WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" node node_modules/ava/entrypoints/cli.mjs "${@:2}"; }
summarize() { grep -E '^\s+[0-9]+ tests? (passed|failed|skipped)|known failure|uncaught|timed out' "$1" | tr -s ' ' | tr '\n' ';'; }

# ---- the CUDA test files (inference and training), the logs to read first
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  # cuDNN's own log of its errors (cuDNN 9: level 1 = errors) says why a call returned BAD_PARAM or NOT_SUPPORTED.
  CUDNN_LOGLEVEL_DBG=1 CUDNN_LOGDEST_DBG="$OUT/cudnn-errors.log" \
    ava "$(budget 200)" dist/test/cuda.test.js dist/test/cuda-training.test.js --verbose --timeout=4m > "$OUT/cuda-tests.log" 2>&1
  note "CUDA tests (inference + training): exit $?; $(summarize "$OUT/cuda-tests.log")"
  grep -E '✘|Error:|uncaught|timed out' "$OUT/cuda-tests.log" | head -20
fi

# ---- inference benchmarks: ours, then PyTorch on the same exported weights, then the table
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  rm -rf "$WORK/bench"
  timeout "$(budget 200)" env LD_LIBRARY_PATH="$WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" node dist/bench/cuda.js --out "$WORK/bench" \
    --models "$MODELS" --batches "$BATCHES" --precisions "$PRECISIONS" --seconds "$SECONDS_PER" --train-batches "$TRAIN_BATCHES" \
    > "$OUT/bench-ours.log" 2>&1
  note "our benchmark: exit $? ($(grep -c 'img/s' "$OUT/bench-ours.log") timings; $(grep -c 'FAILED\|DIFFERS' "$OUT/bench-ours.log") failures)"
  cp "$WORK/bench/ours.json" "$OUT/" 2>/dev/null
  if [ "${SKIP_TORCH:-0}" != 1 ]; then
    timeout "$(budget 150)" python3 bench/device/torch_bench.py --dir "$WORK/bench" --models "$MODELS" --batches "$BATCHES" \
      --precisions "$PRECISIONS" --seconds "$SECONDS_PER" --out "$WORK/bench/torch.json" > "$OUT/bench-table.md" 2> "$OUT/bench-torch.log"
    note "PyTorch benchmark: exit $?"
    cp "$WORK/bench/torch.json" "$OUT/" 2>/dev/null
  fi
  # The table from whatever was measured (also when PyTorch timed out).
  python3 bench/device/torch_bench.py --dir "$WORK/bench" --out "$WORK/bench/torch.json" --table-only > "$OUT/bench-table.md" 2>/dev/null

  # ---- training steps on the GPU: ours fp32 vs PyTorch eager fp32, then ours mixed precision vs PyTorch AMP, each
  # with our step's op-by-op profile (host cost of each call, and with a device sync after each)
  for mode in fp32 fp16; do
    amp=$([ "$mode" = fp16 ] && echo --torch-amp)
    timeout "$(budget 120)" env LD_LIBRARY_PATH="$WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" node dist/bench/train.js --backend cuda \
      --precision "$mode" --models "${TRAIN_MODELS:-A0,B0}" --size 224 --batch "${TRAIN_BATCH:-64}" --steps 10 --warmup 3 \
      --rounds "${TRAIN_ROUNDS:-2}" --profile --python python3 $amp --json "$OUT/train-bench-$mode.json" \
      > "$OUT/train-bench-$mode.md" 2> "$OUT/train-bench-$mode.log"
    note "training benchmark, ours $mode vs PyTorch ${amp:+AMP}${amp:-fp32}: exit $?"
  done
fi

# ---- the rest of the test suite (what `npm test` runs; npm itself is not there): the CPU tests, which name their
# backend, and the CLI/server tests, where 'auto' now finds a GPU
if [ "${SKIP_TESTS:-0}" != 1 ] && [ "${SKIP_SUITE:-0}" != 1 ]; then
  mapfile -t rest < <(ls dist/test/*.test.js | grep -v '/cuda.test.js$\|/cuda-training.test.js$')
  if [ ! -d node_modules/onnxruntime-node ]; then
    # Not carried (size limit, see prepare.sh): leave out the CPU interop tests that import it, and bench-args,
    # whose scripts (cpu, serve, serve-overload) import it before they read their options.
    mapfile -t rest < <(printf '%s\n' "${rest[@]}" | grep -v '/onnx.test.js$\|/bench.test.js$\|/quant.test.js$\|/cli.test.js$\|/bench-args.test.js$')
    note "suite: onnx, bench, quant, cli and bench-args tests left out (onnxruntime-node is not carried; CI runs them)"
  fi
  match=()
  if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    match=(--match '!*Fashion-MNIST*')  # Debian's dataset-fashion-mnist, which `npm run setup` installs, is not there
    note "suite: tests that train on Fashion-MNIST left out (the dataset is not installed there; CI runs them)"
  fi
  ava "$(budget "${SUITE_SECONDS:-300}")" "${rest[@]}" "${match[@]}" --concurrency="$(nproc)" --timeout=5m > "$OUT/suite-tests.log" 2>&1
  note "rest of the suite: exit $?; $(summarize "$OUT/suite-tests.log")"
  grep -E '✘|uncaught|timed out' "$OUT/suite-tests.log" | head -30
fi

echo
echo "==== summary ($(($(date +%s) - START)) s; logs and JSON in $OUT)"
printf '%s\n' "${summary[@]}"
echo
[ -f "$OUT/bench-table.md" ] && cat "$OUT/bench-table.md"
for f in "$OUT/train-bench-fp32.md" "$OUT/train-bench-fp16.md"; do [ -f "$f" ] && { echo; cat "$f"; }; done
bundle
exit 0
