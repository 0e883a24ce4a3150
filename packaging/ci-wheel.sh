#!/usr/bin/env bash
# What CI checks beyond the editable build: the release wheel, as users install it. Built with this machine's
# Python (PY, the project venv's by default) into a temporary folder, installed into a fresh virtualenv, and the
# whole suite run against it from a copy away from the source tree (packaging/suite.sh).
set -euo pipefail
# shellcheck source=packaging/common.sh
source "$(dirname "$0")/common.sh"
cd "$REPO"
PY="${PY:-$REPO/.venv/bin/python}"
work="$(mktemp -d "${TMPDIR:-/tmp}/conversation-codec-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
say "release wheel for $("$PY" -c 'import sys; print(sys.version.split()[0])')"
"$PY" -m maturin build --release --out "$work/dist"
wheel="$(ls "$work"/dist/conversation_codec-*.whl)"
say "the suite against $(basename "$wheel"), installed in a fresh virtualenv"
stage_suite "$work/suite"
# The framework adapters' tests too: CI's Python has every framework (the wheel matrix's oldest ones do not).
grep -v -E '^[[:space:]]*(#|$)' requirements-integrations.txt >>"$work/suite/test-requirements.txt"
base="$("$PY" -c 'import sys; print(sys._base_executable)')"
cd "$work/suite" && bash suite.sh "$base" "$wheel" "$work/venv"
