#!/usr/bin/env bash
# Serve a screen from a fresh clone: makes .venv (see tests/venv.sh), installs the project in
# it, then runs `spiceserver serve` with these arguments (default: the animated test pattern
# on 127.0.0.1:5900 with a one-time password, and a remote-viewer line to paste).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/venv.sh
PYTHON=$(project_python)
"$PYTHON" -m pip install -q -e .
exec "$PYTHON" -m spiceserver serve "$@"
