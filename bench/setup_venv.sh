#!/usr/bin/env bash
# Creates the Python environment of the `implicit` comparison:
# bench/out/venv with implicit 0.7.2 (the library the original system used),
# scipy and numpy, installed from wheels. Skipped when it is already there and
# imports. Prints the environment's python on stdout (progress goes to
# stderr), so callers can do:
#
#   PY=$(bench/setup_venv.sh)
#   "$PY" bench/implicit_fit.py SPLIT_DIR
#
# PYTHON selects the interpreter that creates the venv (default: python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/out/venv"
py="$venv/bin/python"

check() {
    "$py" - <<'EOF' 2>/dev/null
import os
os.environ["OPENBLAS_NUM_THREADS"] = "1"
import numpy, scipy, implicit, implicit.cpu.als
assert implicit.__version__ == "0.7.2", implicit.__version__
EOF
}

if [ -x "$py" ] && check; then
    echo "setup_venv: $venv is ready" >&2
    echo "$py"
    exit 0
fi

echo "setup_venv: creating $venv" >&2
mkdir -p "$here/out"
"${PYTHON:-python3}" -m venv "$venv"
"$py" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
    "implicit==0.7.2" numpy scipy >&2
if ! check; then
    echo "setup_venv: $venv does not import implicit 0.7.2" >&2
    exit 1
fi
echo "setup_venv: $venv is ready" >&2
echo "$py"
