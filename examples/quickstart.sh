#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs a real training job end to end on the embedded
# default (SQLite, local processes, local object store): upload code and data, submit, follow, show
# the model the job wrote to its output channel, stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Each worker runs in a sandbox (bubblewrap) where the machine has it; without it jobs run on the host.
if ! command -v bwrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null || true
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -e .
OA=.venv/bin/openarts

DATA=${OPENARTS_DATA_DIR:-$(mktemp -d /tmp/openarts-quickstart.XXXXXX)}
echo "== data directory: $DATA"
# The local object store: obs://BUCKET/KEY is DATA/obs/BUCKET/KEY.
mkdir -p "$DATA/obs/demo/code" "$DATA/obs/demo/data"
cp examples/train/train.py "$DATA/obs/demo/code/"
.venv/bin/python examples/make_data.py > "$DATA/obs/demo/data/train.csv"

"$OA" serve --port 0 --data-dir "$DATA" --log-level warning > "$DATA/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true; wait $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  [ -s "$DATA/server.json" ] && break
  sleep 0.1
done
URL=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$DATA/server.json")
for _ in $(seq 1 100); do
  .venv/bin/python -c 'import httpx,sys; httpx.get(sys.argv[1] + "/health").raise_for_status()' "$URL" 2>/dev/null && break
  sleep 0.1
done
echo "== server: $URL"

export OPENARTS_SERVER=$URL OPENARTS_PROJECT=quickstart
"$OA" submit examples/train-job.yaml --name "quickstart-$(date +%s)" --wait | tee "$DATA/submit.out"
JOB_ID=$("$OA" list --json --limit 1 | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["metadata"]["id"])')
echo "== log of worker-0"
"$OA" logs "$JOB_ID" --task worker-0
echo "== model written to obs://demo/output/"
cat "$DATA/obs/demo/output/model.json"; echo
