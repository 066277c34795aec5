#!/usr/bin/env bash
# Schemathesis against the served OpenAPI document, with an admin token: no 5xx, no response
# outside the schema, no crash; afterwards the server still answers and the seeded jobs are
# intact. Installs Schemathesis from PyPI into target/ when missing. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
venv=target/schemathesis-venv
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi
cargo build --locked --bin retryd
bin=$PWD/target/debug/retryd

work=$(mktemp -d)
cleanup() { [ -n "${server:-}" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
cd "$work"
# An API-only node (no attempt runs: generated commands stay stored, never executed) with a
# rate limit high enough for the fuzzer.
printf '[auth]\nrate_limit = 1000000\nrate_burst = 1000000\n' > retryd.toml
"$bin" serve --listen 127.0.0.1:0 --concurrency 0 --log-format json > out.txt 2> server.log &
server=$!
for _ in $(seq 1 100); do grep -q "listening on" out.txt && break; sleep 0.1; done
base=$(grep -o 'listening on http://[^ ]*' out.txt | cut -d' ' -f3)
token=$(grep -o 'RETRYD_TOKEN=.*' out.txt | cut -d= -f2)
api() { curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' "$@"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# Seeds: a finished job for reads (its log ends at once), another for cancel/retry, a policy.
later="\"run_at\":\"$(date -u -d '+300 days' +%Y-%m-%dT%H:%M:%SZ)\""
read_job=$(api -d "{\"action\":{\"type\":\"command\",\"program\":\"true\"},$later,\"labels\":{\"seed\":\"read\"}}" "$base/api/v1/jobs" | field "['id']")
api -X POST "$base/api/v1/jobs/$read_job/cancel" > /dev/null
act_job=$(api -d "{\"action\":{\"type\":\"command\",\"program\":\"true\"},$later}" "$base/api/v1/jobs" | field "['id']")
api -d '{"name":"fuzz","policy":{"max_attempts":3}}' "$base/api/v1/policies" > /dev/null
# The token the fuzzer may revoke (it must not revoke its own).
api -d '{"name":"fuzz-victim","role":"viewer"}' "$base/api/v1/tokens" > /dev/null
before=$(api "$base/api/v1/jobs/$read_job" | field "['state'], end=''")

cat > schemathesis.toml <<EOF
[[operations]]
include-path-regex = "/jobs/\\\\{id\\\\}/(retry|cancel)\$"
parameters = { "path.id" = "$act_job" }

[[operations]]
include-path-regex = "/jobs/\\\\{id\\\\}(/(log|attempts|events|notifications))?\$"
parameters = { "path.id" = "$read_job" }

[[operations]]
include-path-regex = "/policies/\\\\{name\\\\}\$"
parameters = { "path.name" = "fuzz" }

[[operations]]
include-path-regex = "/tokens/\\\\{id\\\\}\$"
parameters = { "path.id" = "fuzz-victim" }
EOF

# Streams (SSE, WebSocket) never end by design; tests/e2e/events.rs covers them.
"$OLDPWD/$venv/bin/schemathesis" run "$base/api/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --exclude-path /api/v1/events --exclude-path /api/v1/ws \
  --phases examples,coverage,fuzzing --max-examples 25 --workers 2 \
  --request-timeout 10 --seed 1 --warnings off

# Still alive, and the seeded job is as it was.
curl -sf "$base/healthz" > /dev/null
after=$(api "$base/api/v1/jobs/$read_job" | field "['state'], end=''")
labels=$(api "$base/api/v1/jobs/$read_job" | field "['labels']['seed'], end=''")
if [ "$before" != "$after" ] || [ "$labels" != "read" ]; then
  echo "seeded job changed: $before -> $after ($labels)" >&2
  exit 1
fi
if grep -q '"level":"ERROR"\|panicked' server.log; then
  echo "the server logged errors during the run:" >&2
  grep '"level":"ERROR"\|panicked' server.log | head -20 >&2
  exit 1
fi
echo "schemathesis: no failure; server alive; seeded jobs intact"
