#!/usr/bin/env bash
# Builds the WASM package into web/pkg: an ES module (coto.js), TypeScript types, the .wasm
# binary and a package.json. Installs the wasm-bindgen CLI that matches the wasm-bindgen version
# in Cargo.lock, and runs wasm-opt (Debian's binaryen) when it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
installed=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$installed" != "$version" ]; then
  # Without --locked: with it, the install of 0.2.130 failed on a locked dependency that the
  # registry no longer has.
  cargo install wasm-bindgen-cli --version "$version"
fi
rustup target add wasm32-unknown-unknown >/dev/null

export CARGO_TARGET_DIR=target/wasm
cargo build --locked --profile wasm-release --target wasm32-unknown-unknown --lib
raw=target/wasm/wasm32-unknown-unknown/wasm-release/coto.wasm

rm -rf web/pkg
wasm-bindgen --target web --remove-name-section --out-dir web/pkg --out-name coto "$raw"
bound=$(stat -c %s web/pkg/coto_bg.wasm)

# wasm-opt shrinks the module by about 40%. Versions before 116 (Debian 12 ships 108) write a
# module that browsers reject ("WebAssembly.Table.set(): Argument 1 is invalid"), so they are
# skipped; set WASM_OPT to a newer one, e.g. from `npm install binaryen`.
wasm_opt=${WASM_OPT:-wasm-opt}
opt_version=$("$wasm_opt" --version 2>/dev/null | awk '{ print $3 }' || true)
if [ -n "$opt_version" ] && [ "$opt_version" -ge 116 ] 2>/dev/null; then
  "$wasm_opt" -Oz --enable-reference-types --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-multivalue \
    web/pkg/coto_bg.wasm -o web/pkg/coto_bg.wasm
elif [ -n "$opt_version" ]; then
  echo "skipping wasm-opt $opt_version (version 116 or newer needed); set WASM_OPT to a newer one" >&2
else
  echo "wasm-opt not found; skipping size optimisation (set WASM_OPT, e.g. from npm's binaryen)" >&2
fi

crate_version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
cat > web/pkg/package.json <<JSON
{
  "name": "coto",
  "version": "$crate_version",
  "description": "LoRA fine-tuning under the CoTo schedule in the browser, on WebGPU or the CPU",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "main": "coto.js",
  "types": "coto.d.ts",
  "files": ["coto.js", "coto.d.ts", "coto_bg.wasm", "coto_bg.wasm.d.ts"]
}
JSON

bytes=$(stat -c %s web/pkg/coto_bg.wasm)
echo "coto_bg.wasm: $bytes bytes; after wasm-bindgen $bound; cargo's output $(stat -c %s "$raw")"
