#!/usr/bin/env bash
# `make wheels`: the release wheels for CPython 3.9-3.15 on manylinux2014 x86_64 and aarch64 and musllinux_1_2
# x86_64, plus the sdist, into dist/; then `auditwheel show` on each wheel, which must report the tag it was built
# for. maturin cross-compiles with zig (the ziglang package), so no target Python is needed here: see PATH below.
# Needs the rustup targets (added if missing) and patchelf.
set -euo pipefail
# shellcheck source=packaging/common.sh
source "$(dirname "$0")/common.sh"
cd "$REPO"
PY="${PY:-$REPO/.venv/bin/python}"
# The venv's bin first: maturin finds zig as `python -m ziglang` there. Then pyenv's interpreters (not its shims),
# so python3.X is the real one where there is one; the others come from maturin's bundled sysconfig.
PATH="$(dirname "$PY"):$PATH"
for v in "${PYENV_VERSIONS[@]}"; do PATH="$PATH:$PYENV_ROOT/versions/$v/bin"; done
export PATH

# target  compatibility  the platform tag auditwheel must find
MATRIX=(
    "x86_64-unknown-linux-gnu manylinux2014 manylinux_2_17_x86_64"
    "aarch64-unknown-linux-gnu manylinux2014 manylinux_2_17_aarch64"
    "x86_64-unknown-linux-musl musllinux_1_2 musllinux_1_2_x86_64"
)
# PYTHONS="3.11 3.14" and TARGETS=REGEX build a part of the matrix (the rest of dist/ is then left as it is).
PYTHONS="${PYTHONS:-}"
TARGETS="${TARGETS:-.}"
INTERPRETERS=()
for v in ${PYTHONS:-"${PYENV_VERSIONS[@]%.*}" "${SID_VERSIONS[@]}"}; do INTERPRETERS+=("python$v"); done
selected=()
for row in "${MATRIX[@]}"; do grep -qE -- "$TARGETS" <<<"$row" && selected+=("$row"); done
MATRIX=("${selected[@]}")

command -v patchelf >/dev/null || die "patchelf is missing (the musl wheels need it): apt-get install patchelf"
installed_targets="$(rustup target list --installed)"
for row in "${MATRIX[@]}"; do
    read -r target _ _ <<<"$row"
    grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done

# zig links a musl extension against "libc.so"; a musl system's libc is "libc.musl-x86_64.so.1", the name auditwheel
# (and the loader) look for. So each musl wheel's extension gets that name, and the wheel is packed again (RECORD).
musl_soname() {
    local whl="$1" work so
    work="$(mktemp -d)"
    "$PY" -m wheel unpack -d "$work/u" "$whl" >/dev/null
    for so in "$work"/u/*/conversation_codec/_core*.so; do
        patchelf --print-needed "$so" | grep -qx libc.so && patchelf --replace-needed libc.so libc.musl-x86_64.so.1 "$so"
    done
    mkdir "$work/out"
    "$PY" -m wheel pack -d "$work/out" "$work"/u/* >/dev/null
    mv "$work"/out/*.whl "$whl"
    rm -rf "$work"
}

build() {
    [[ -z "$PYTHONS" && "$TARGETS" == . ]] && rm -f dist/conversation_codec-*.whl dist/conversation_codec-*.tar.gz
    local row target compat start whl
    for row in "${MATRIX[@]}"; do
        read -r target compat _ <<<"$row"
        say "building $target ($compat) for ${INTERPRETERS[*]}"
        start=$SECONDS
        "$PY" -m maturin build --release --zig --target "$target" --compatibility "$compat" \
            -i "${INTERPRETERS[@]}" --out dist
        echo "$target: $((SECONDS - start)) s" >&2
    done
    for whl in dist/conversation_codec-*-musllinux_*.whl; do [[ -e "$whl" ]] && musl_soname "$whl"; done
    say "sdist"
    "$PY" -m maturin sdist --out dist
}

mkdir -p dist
# --audit: only the checks, of the wheels dist/ already holds.
[[ "${1:-}" == --audit ]] || build

say "auditwheel show"
status=0
report="$(mktemp)"
printf '%-8s %-24s %-8s %s\n' python platform audit wheel >"$report"
for row in "${MATRIX[@]}"; do
    read -r _ _ tag <<<"$row"
    for interp in "${INTERPRETERS[@]}"; do
        v="${interp#python}"
        whl=(dist/conversation_codec-*-cp"${v/./}"-cp"${v/./}"-*"$tag"*.whl)
        if [[ ! -e "${whl[0]}" ]]; then
            printf '%-8s %-24s %-8s %s\n' "$v" "$tag" MISSING - >>"$report"
            status=1
            continue
        fi
        # auditwheel names the tag the wheel is consistent with; anything else (or a failure) is a fail.
        if "$PY" -m auditwheel show "${whl[0]}" 2>&1 | tr -s '\n ' '  ' |
            grep -q "consistent with the following platform tag: \"$tag\""; then
            audit=ok
        else
            audit=FAIL
            status=1
            "$PY" -m auditwheel show "${whl[0]}" >&2 || true
        fi
        printf '%-8s %-24s %-8s %s\n' "$v" "$tag" "$audit" "$(basename "${whl[0]}")" >>"$report"
    done
done
say "wheel matrix (dist/)"
cat "$report"
ls dist/*.tar.gz
rm -f "$report"
exit "$status"
