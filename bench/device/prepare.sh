#!/usr/bin/env bash
# HERE, on a machine without a GPU: builds everything the GPU run needs (CPU addon, CUDA addon, TypeScript) and
# packs what the lent GPU machine lacks into .device/ (git-ignored): Node itself, the CPU addon's shared
# libraries (oneDNN, libjpeg-turbo), and the node_modules the tests import (ava, Node-API headers for a rebuild there). Prints the
# `carry` list for the device tool's run (<= 8 paths, <= 64 MiB together) and the command to give it.
# Not for: running anything on a GPU (bench/device/run.sh does that, on the GPU machine).
set -euo pipefail
cd "$(dirname "$0")/../.."

echo "prepare: CPU addon"
[ -f build/Release/repvgg_cpu.node ] || npm run build:native --silent
echo "prepare: CUDA addon (npm run build:cuda)"
npm run build:cuda --silent
echo "prepare: TypeScript"
npx tsc -p tsconfig.json || echo "prepare: tsc reported errors (above); dist/ was still written"
for f in dist/test/cuda.test.js dist/test/cuda-training.test.js dist/bench/cuda.js dist/bench/train.js dist/lib/backend/cuda.js build-cuda/Release/repvgg_cuda.node build/Release/repvgg_cpu.node; do
  [ -f "$f" ] || { echo "prepare: $f is missing" >&2; exit 1; }
done

mkdir -p .device
node_bin="$(command -v node)"
if [ ! -f .device/node.xz ] || [ "$node_bin" -nt .device/node.xz ]; then
  echo "prepare: packing $node_bin ($(node --version)) into .device/node.xz"
  xz -T2 -9e -c "$node_bin" > .device/node.xz
fi

# The CPU addon's own libraries (oneDNN and what it pulls in), but not the C/C++ runtime the GPU machine has.
libs=()
while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) ;;
    *) libs+=("$lib") ;;
  esac
done < <(ldd build/Release/repvgg_cpu.node | awk '/=> \//{print $3}')
rm -rf .device/lib && mkdir -p .device/lib
for lib in "${libs[@]}"; do cp -L "$lib" .device/lib/; done
tar -cJf .device/lib.tar.xz -C .device/lib . && rm -rf .device/lib
echo "prepare: packed $(printf '%s ' "${libs[@]##*/}")into .device/lib.tar.xz"

# node_modules the GPU run imports, with their dependency closure: every runtime dependency, ava and yaml (the test
# suite runs there), node-addon-api and node-api-headers (a rebuild there). Not onnxruntime-node: its 12 MiB
# (compressed) would take the working tree over the device tool's 64 MiB, and the four test files that import it
# test CPU interop that CI runs here (run.sh leaves them out and says so).
node -e '
const fs = require("fs"), path = require("path");
const seen = new Set();
function resolve(from, name) {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, "node_modules", name);
    if (fs.existsSync(path.join(candidate, "package.json"))) return candidate;
    if (path.dirname(dir) === dir) return null;
  }
}
function walk(dir) {
  if (seen.has(dir)) return;
  seen.add(dir);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  for (const name of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
    const found = resolve(dir, name);
    if (found) walk(found);
  }
}
const roots = Object.keys(JSON.parse(fs.readFileSync("package.json", "utf8")).dependencies);
for (const name of [...roots, "ava", "yaml", "node-addon-api", "node-api-headers"]) {
  walk(path.join(process.cwd(), "node_modules", name));
}
fs.writeFileSync(".device/node_modules.list", [...seen].map((d) => path.relative(process.cwd(), d)).join("\n") + "\n");
'
XZ_OPT="-T2 -9e" tar -cJf .device/node_modules.tar.xz -T .device/node_modules.list
echo "prepare: packed $(wc -l < .device/node_modules.list) packages into .device/node_modules.tar.xz"

carry=(.device dist build/Release/repvgg_cpu.node build-cuda/Release/repvgg_cuda.node)
# The device tool's limit covers everything that travels: the tracked files too.
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
total=$(( $(du -cb "${carry[@]}" | tail -1 | cut -f1) + tracked ))
du -sh "${carry[@]}"
echo "prepare: carry plus tracked files $((total / 1048576)) MiB (limit 64 MiB)"
if [ "$total" -gt $((64 * 1048576)) ]; then
  echo "prepare: TOO BIG for the device tool's carry limit" >&2
  exit 1
fi
printf 'prepare: carry = ["%s"]\n' "$(IFS='|'; echo "${carry[*]}" | sed 's/|/", "/g')"
echo 'prepare: command = bash bench/device/run.sh   (QUICK=1 for a short run; see run.sh for the knobs)'
