#!/usr/bin/env bash
# `make run`: the embedded server on disk, the database set up, a worker named `demo`, and an
# example task that visibly runs within seconds. Everything stays up: `make stop` ends it.
set -euo pipefail
cd "$(dirname "$0")/.."
AFTER=.venv/bin/after
URL="${AFTER_COUCHDB_URL:-http://127.0.0.1:${PORT:-5984}}"
export AFTER_COUCHDB_URL="$URL"

if ! $AFTER server status >/dev/null 2>&1; then
  $AFTER server start
fi
$AFTER setup
if ! $AFTER list --json | grep -q '"name": "demo"'; then
  $AFTER start demo -b
fi

id="hello-$(date -u +%H%M%S)"
when=$(.venv/bin/python -c 'from datetime import datetime, timedelta, UTC; print((datetime.now(UTC) + timedelta(seconds=3)).isoformat(timespec="milliseconds").replace("+00:00", "Z"))')
echo
echo "Posting the task '$id' for the worker 'demo', due at $when (in 3 seconds):"
$AFTER add hello '"you"' --worker demo --at "$when" --id "$id" >/dev/null
for _ in $(seq 1 40); do
  status=$($AFTER show "$id" --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["task"]["status"])')
  printf '  %s  %s\n' "$(date -u +%H:%M:%S.%3N)" "$status"
  [ "$status" = done ] || [ "$status" = error ] && break
  sleep 0.5
done
echo
$AFTER show "$id"
cat <<TEXT

The worker 'demo' runs in the background (its log: .venv/bin/after log demo -f).
Post your own task with plain HTTP, e.g. in 10 seconds:

  curl -X PUT $URL/tasks/my-first-task -H 'Content-Type: application/json' -d '{
    "worker": "demo",
    "date": "$(.venv/bin/python -c 'from datetime import datetime, timedelta, UTC; print((datetime.now(UTC) + timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ"))')",
    "job": {"name": "hello", "arguments": ["curl"]},
    "status": "waiting"
  }'

Then: .venv/bin/after show my-first-task   (and 'make stop' to stop the worker and the server)
TEXT
