# shellcheck shell=bash disable=SC2034  # sourced: its variables are used by the scripts that source it
# Shared by packaging/*.sh (sourced, not run): where things live, and the Debian roots that provide the Pythons
# pyenv does not have (CPython 3.14 and 3.15 from Debian sid) and an aarch64 Python (Debian bookworm arm64, run
# under qemu-user). The roots are cached outside the repository and made once; delete the folder to make them anew.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${WHEELS_CACHE:-/var/tmp/conversation-codec-wheels}"
PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"
# CPython versions pyenv provides here, and the ones taken from the sid root.
PYENV_VERSIONS=(3.9.18 3.10.13 3.11.7 3.12.1 3.13.0)
SID_VERSIONS=(3.14 3.15)
SID_ROOT="$CACHE/roots/sid-amd64"
ARM_ROOT="$CACHE/roots/bookworm-arm64"

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need_root_tools() {
    command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: apt-get install mmdebstrap"
}

# aarch64 binaries run through qemu-user-static's binfmt entry (flag F: the emulator is opened now, so it also
# works inside a chroot); the entry may be there but disabled, or binfmt_misc not mounted.
enable_qemu_aarch64() {
    [[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] && return 0
    command -v update-binfmts >/dev/null || die "qemu-user-static is missing: apt-get install qemu-user-static binfmt-support"
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64
}

# make_root DIR ARCH SUITE PACKAGES...: a Debian root in DIR, made once (DIR/.complete marks a finished one).
make_root() {
    local dir="$1" arch="$2" suite="$3"
    shift 3
    if [[ -e "$dir/.complete" ]]; then
        # A root made with fewer packages than now listed gets the others.
        [[ "$(cat "$dir/.complete")" == "$*" ]] && return 0
        say "adding packages to $dir: $*"
        in_root "$dir" bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"' \
            bash "$@" >&2
        echo "$*" >"$dir/.complete"
        return 0
    fi
    need_root_tools
    [[ "$arch" == arm64 ]] && enable_qemu_aarch64
    say "making the Debian $suite $arch root in $dir (a few minutes, once)"
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    local include
    include="$(IFS=,; echo "$*")"
    mmdebstrap --arch="$arch" --variant=apt --include="$include" \
        --aptopt='Acquire::Check-Valid-Until "false"' "$suite" "$dir" http://deb.debian.org/debian >&2
    echo "$*" >"$dir/.complete"
}

sid_root() {
    # mount: the full-disk tests mount a small tmpfs.
    local pkgs=(ca-certificates mount)
    local v
    for v in "${SID_VERSIONS[@]}"; do pkgs+=("python$v" "python$v-venv"); done
    make_root "$SID_ROOT" amd64 sid "${pkgs[@]}"
}

arm_root() { make_root "$ARM_ROOT" arm64 bookworm ca-certificates mount python3 python3-venv; }

# in_root DIR CMD...: run CMD inside the root, with /proc, /dev and /tmp set up for it and the host's CA bundle
# (pip reaches PyPI through it); mounts are made in a private mount namespace, so nothing is left mounted.
in_root() {
    local dir="$1"
    shift
    cp /etc/resolv.conf "$dir/etc/resolv.conf"
    cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
    unshare --mount --propagation private -- bash -c '
        set -e
        d="$1"; shift
        mount -t proc proc "$d/proc"
        mount --rbind /dev "$d/dev"
        mount -t tmpfs tmpfs "$d/dev/shm"
        exec chroot "$d" env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
            PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 "$@"
    ' bash "$dir" "$@"
}

# stage_suite DEST: the test suite, and what it imports from the repository (torture/ for the workload tests,
# benches/ for the original design's codec), copied to DEST, away from the source tree; pyproject.toml carries the
# pytest settings. The test dependencies are requirements-dev.txt's less the build and lint tools, so a test
# dependency added there is installed here too.
stage_suite() {
    local dest="$1"
    rm -rf "$dest"
    mkdir -p "$dest"
    cp -r "$REPO/tests" "$REPO/torture" "$REPO/benches" "$REPO/pyproject.toml" "$REPO/packaging/suite.sh" "$dest/"
    find "$dest" -name __pycache__ -prune -exec rm -rf {} +
    grep -v -E '^[[:space:]]*(#|$)' "$REPO/requirements-dev.txt" | grep -v -i -E '^(maturin|ruff|mypy)([^a-z0-9_.-]|$)' \
        >"$dest/test-requirements.txt"
}

# summary LOG: pytest's closing line ("N passed, M skipped in Ts"), or "no result".
summary() {
    grep -E '^=*[ ]*[0-9]+ (passed|failed|error)' "$1" | tail -1 | sed -E 's/^=+ //; s/ =+$//' || echo "no result"
}
