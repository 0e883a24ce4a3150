#!/usr/bin/env bash
# What the torture suites need beyond `make test`, installing only what is missing:
#   torture/setup.sh            strace (crash states), libfiu (I/O errors), valgrind (sanitizers): Debian packages
#   torture/setup.sh --nightly  also a nightly Rust toolchain and cargo-fuzz (sanitizers' ASan build, fuzzing)
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

if [ "${1:-}" = --nightly ]; then
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz
fi
