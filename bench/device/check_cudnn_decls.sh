#!/usr/bin/env bash
# Proves that our cuDNN declarations (native/cuda/cudnn_api.h) match the real cudnn.h on this machine by
# compiling test/cudnn_decls/check_decls.cc against both (static_asserts on every value, size and signature).
# Finds cudnn.h in: $CUDNN_INCLUDE, the pip wheel's nvidia/cudnn/include, /usr/include, /usr/local/cuda/include.
# Exit 0: match; 1: mismatch (the compiler names the declaration); 2: no cudnn.h or no compiler here (skipped).
set -euo pipefail
cd "$(dirname "$0")/../.."

cxx="${CXX:-$(command -v g++ || command -v c++ || command -v clang++ || true)}"
if [ -z "$cxx" ]; then
  echo "check_cudnn_decls: SKIPPED: no C++ compiler found"
  exit 2
fi

candidates=()
[ -n "${CUDNN_INCLUDE:-}" ] && candidates+=("$CUDNN_INCLUDE")
if command -v python3 >/dev/null 2>&1; then
  wheel="$(timeout 20 python3 -c 'import nvidia.cudnn as m, os; print(os.path.join(list(m.__path__)[0], "include"))' 2>/dev/null || true)"
  [ -n "$wheel" ] && candidates+=("$wheel")
fi
candidates+=(/usr/include /usr/include/x86_64-linux-gnu /usr/local/cuda/include)

include=""
for dir in "${candidates[@]}"; do
  if [ -f "$dir/cudnn.h" ]; then
    include="$dir"
    break
  fi
done
if [ -z "$include" ]; then
  echo "check_cudnn_decls: SKIPPED: no cudnn.h in ${candidates[*]} (set CUDNN_INCLUDE)"
  exit 2
fi

cuda_include="${CUDA_INCLUDE:-}"
if [ -z "$cuda_include" ]; then
  for dir in /usr/local/cuda/include /usr/local/cuda-*/include /usr/include; do
    if [ -f "$dir/cuda_runtime_api.h" ]; then
      cuda_include="$dir"
      break
    fi
  done
fi
# A pip-only machine may have the runtime headers in the nvidia/cuda_runtime wheel.
if [ -z "$cuda_include" ] && command -v python3 >/dev/null 2>&1; then
  cuda_include="$(timeout 20 python3 -c 'import nvidia.cuda_runtime as m, os; print(os.path.join(list(m.__path__)[0], "include"))' 2>/dev/null || true)"
fi
if [ -z "$cuda_include" ] || [ ! -f "$cuda_include/cuda_runtime_api.h" ]; then
  echo "check_cudnn_decls: SKIPPED: no cuda_runtime_api.h found (set CUDA_INCLUDE)"
  exit 2
fi

version="$(grep -hE '^#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) ' "$include/cudnn_version.h" "$include/cudnn.h" 2>/dev/null | awk '{print $3}' | paste -sd. - || true)"
echo "check_cudnn_decls: cudnn.h ${version:-?} from $include, CUDA headers from $cuda_include, compiler $cxx"
if "$cxx" -std=c++17 -fsyntax-only -Wall -Wextra -I"$include" -I"$cuda_include" test/cudnn_decls/check_decls.cc; then
  echo "check_cudnn_decls: OK: native/cuda/cudnn_api.h matches cudnn.h ${version:-?} (values, sizes, layouts, signatures)"
else
  echo "check_cudnn_decls: MISMATCH between native/cuda/cudnn_api.h and $include/cudnn.h (see the static_assert above)"
  exit 1
fi
