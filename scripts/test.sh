#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs the whole test suite: lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v setsid >/dev/null 2>&1; then
  # setsid comes with util-linux; the local executor needs it.
  if command -v apt-get >/dev/null 2>&1; then apt-get update -qq && apt-get install -y -qq util-linux; fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check src tests bench examples
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
