#!/usr/bin/env bash
# `make test-wheels`: each wheel `make wheels` left in dist/, installed into a fresh virtualenv of its own Python,
# away from the source tree, and the whole test suite run against it (packaging/suite.sh). CPython 3.9-3.13 are
# pyenv's; 3.14 and 3.15 run inside a Debian sid root; the aarch64 wheel runs under qemu-user inside a Debian
# bookworm arm64 root (its CPython is 3.11). The musllinux wheel is built and audited only: no CPython linked
# against musl is to be had from PyPI or Debian. One table at the end; the exit status is non-zero if any run fails.
# ONLY=REGEX limits the runs to the rows whose "python platform" matches, e.g. ONLY='3.1[45]' or ONLY=aarch64.
set -euo pipefail
# shellcheck source=packaging/common.sh
source "$(dirname "$0")/common.sh"
cd "$REPO"
ONLY="${ONLY:-.}"
LOGS="$CACHE/logs"
mkdir -p "$LOGS"
ROWS=()
status=0

wanted() { grep -qE -- "$ONLY" <<<"$1 $2"; }

# wheel_for VERSION TAG: the wheel in dist/ for CPython VERSION and platform TAG, or nothing.
wheel_for() {
    local v="${1/./}"
    compgen -G "dist/conversation_codec-*-cp$v-cp$v-*$2*.whl" | head -1 || true
}

# run_case VERSION TAG ROOT PYTHON: ROOT is "" for the host; PYTHON is a path on the host or a name in the root.
run_case() {
    local v="$1" tag="$2" root="$3" python="$4"
    local case="cp${v/./}-$tag" wheel result
    wanted "$v" "$tag" || return 0
    wheel="$(wheel_for "$v" "$tag")"
    if [[ -z "$wheel" ]]; then
        ROWS+=("$v|$tag|no|no|no wheel in dist/ (make wheels)")
        status=1
        return 0
    fi
    local log="$LOGS/$case.log" start=$SECONDS
    say "CPython $v, $tag: $(basename "$wheel") (log: $log)"
    local rc=0
    if [[ -z "$root" ]]; then
        local stage="$CACHE/suites/$case"
        stage_suite "$stage"
        cp "$wheel" "$stage/"
        (cd "$stage" && bash suite.sh "$python" "$stage/$(basename "$wheel")" "$CACHE/venvs/$case") >"$log" 2>&1 || rc=$?
    else
        local inside="/tmp/conversation-codec-$case"
        stage_suite "$root$inside"
        cp "$wheel" "$root$inside/"
        in_root "$root" bash -c "cd $inside && bash suite.sh $python $inside/$(basename "$wheel") $inside/venv" \
            >"$log" 2>&1 || rc=$?
    fi
    grep -E '^(conversation_codec|_core): ' "$log" >&2 || true
    result="$(summary "$log") [$((SECONDS - start)) s]"
    echo "$result" >&2
    if [[ $rc -ne 0 ]]; then
        tail -30 "$log" >&2
        result="FAILED (exit $rc): $result"
        status=1
    fi
    ROWS+=("$v|$tag|yes|yes|$result")
}

for v in "${PYENV_VERSIONS[@]}"; do
    run_case "${v%.*}" manylinux_2_17_x86_64 "" "$PYENV_ROOT/versions/$v/bin/python"
done
for v in "${SID_VERSIONS[@]}"; do
    wanted "$v" manylinux_2_17_x86_64 || continue
    sid_root
    run_case "$v" manylinux_2_17_x86_64 "$SID_ROOT" "python$v"
done
if wanted 3.11 manylinux_2_17_aarch64; then
    arm_root
    run_case 3.11 manylinux_2_17_aarch64 "$ARM_ROOT" python3.11
fi
for v in "${PYENV_VERSIONS[@]%.*}" "${SID_VERSIONS[@]}"; do
    for tag in manylinux_2_17_aarch64 musllinux_1_2_x86_64; do
        [[ "$tag" == manylinux_2_17_aarch64 && "$v" == 3.11 ]] && continue
        wanted "$v" "$tag" || continue
        if [[ -n "$(wheel_for "$v" "$tag")" ]]; then built=yes; else built=no; fi
        ROWS+=("$v|$tag|$built|no|-")
    done
done

say "wheel matrix: built, tested, result"
{
    echo "| CPython | platform | built | tested | suite |"
    echo "|---|---|---|---|---|"
    for row in "${ROWS[@]}"; do echo "| ${row//|/ | } |"; done
} | tee "$LOGS/matrix.md"
exit "$status"
