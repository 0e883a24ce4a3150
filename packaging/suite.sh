#!/usr/bin/env bash
# Runs where the wheel is tested (the host, or inside a Debian root), from a staged copy of the test suite (see
# stage_suite in common.sh): a fresh virtualenv of PYTHON, the wheel and the test dependencies installed in it, a
# check that `conversation_codec` is the installed wheel's and not a source tree's, then the whole suite.
# Usage: suite.sh PYTHON WHEEL VENV   (run from the staged suite's folder)
set -euo pipefail
python="$1" wheel="$2" venv="$3"
unset PYTHONPATH
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q "$wheel" -r test-requirements.txt
"$venv/bin/python" - "$venv" <<'PY'
import os, sys
import conversation_codec
from conversation_codec import _core
venv = os.path.realpath(sys.argv[1])
for name, path in (("conversation_codec", conversation_codec.__file__), ("_core", _core.__file__)):
    print(f"{name}: {path}")
    assert os.path.realpath(path).startswith(venv + os.sep), f"{name} is not the installed wheel's: {path}"
PY
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider
