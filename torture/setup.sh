#!/usr/bin/env bash
# What the torture suites need beyond `make test`: strace (crash states), libfiu (I/O errors), valgrind
# (sanitizers), a nightly Rust toolchain and cargo-fuzz (fuzzing). Installs only what is missing.
set -euo pipefail

missing=()
command -v strace >/dev/null || missing+=(strace)
command -v fiu-run >/dev/null || missing+=(fiu-utils)
command -v valgrind >/dev/null || missing+=(valgrind)
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz
