#!/usr/bin/env bash
# `npm run setup`: everything a fresh Debian 12 checkout needs, in order: system packages when missing
# (oneDNN, libjpeg-turbo, compiler), npm packages from the lockfile, the native CPU addon, the TypeScript build.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pkg in libdnnl-dev libjpeg62-turbo-dev g++ make python3 dataset-fashion-mnist; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
else
  echo "setup: Debian packages present (libdnnl-dev $(dpkg-query -W -f='${Version}' libdnnl-dev))"
fi

echo "setup: npm ci"
# onnxruntime-node (benchmark peer, dev only) ships its CPU binaries in the package; its postinstall would
# try to download GPU binaries from outside the registry.
ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund

echo "setup: building the CPU addon (node-gyp, oneDNN)"
npm run build:native --silent
echo "setup: compiling TypeScript"
npm run build:ts --silent

if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup: nvcc found: building the CUDA addon (cmake-js; cuDNN is loaded at run time, not needed here)"
  # The CPU backend stays usable if this fails: `repvgg info` then says why CUDA is unavailable.
  PATH="$PATH:/usr/local/cuda/bin" npm run build:cuda --silent || echo "setup: WARNING: the CUDA addon did not build; continuing with the CPU backend"
else
  echo "setup: no nvcc: skipping the CUDA addon (CPU backend only)"
fi
node dist/lib/cli/main.js info
echo "setup: done. Try: npm start"
