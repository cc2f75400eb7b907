#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs the whole test suite: lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The local executor needs setsid (util-linux) and bwrap (bubblewrap) for its sandbox; custom images need
# skopeo and umoci; the image tests start a real registry (docker-registry, with an htpasswd file from
# apache2-utils) and build their image from busybox-static; the console's browser tests drive Debian's chromium.
need=""
for tool in setsid:util-linux bwrap:bubblewrap skopeo:skopeo umoci:umoci docker-registry:docker-registry \
            busybox:busybox-static htpasswd:apache2-utils chromium:chromium; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need="$need ${tool#*:}"
done
if [ -n "$need" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
  else
    echo "scripts/test.sh: please install:$need" >&2; exit 1
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -e '.[test,ray]'
.venv/bin/ruff check src tests bench examples
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
