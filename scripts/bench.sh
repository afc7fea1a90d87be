#!/usr/bin/env bash
# Usher's benchmark: SCIM throughput and latency against a live release build, on
# SQLite and on PostgreSQL, with wrk (installed from Debian when missing). Bounded:
# each load phase runs BENCH_SECONDS (default 10 s) at BENCH_CONNECTIONS (default 32).
# Prints one line per figure:  <db> <scenario> rps=N p50=Xms p99=Yms
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-deps.sh --bench >/dev/null
SECONDS_PER=${BENCH_SECONDS:-10}; CONNS=${BENCH_CONNECTIONS:-32}; SEED=${BENCH_SEED_USERS:-2000}
cargo build --release -q --bin usher
TARGET="${CARGO_TARGET_DIR:-target}"; USHER="$(cd "$TARGET" && pwd)/release/usher"
WORK="$(mktemp -d)"; PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
PG_ADMIN=${USHER_BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}

cat > "$WORK/post.lua" <<'LUA'
local counter = 0
local n = 0
-- `tid` is a global each thread gets from setup (a local here would shadow it).
setup = function(thread) thread:set("tid", n); n = n + 1 end
request = function()
  counter = counter + 1
  local body = string.format('{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"load-%s-%d-%d@bench.example","name":{"givenName":"Load","familyName":"Test"},"emails":[{"value":"load-%d-%d@bench.example","type":"work","primary":true}],"active":true}', run_id, tid, counter, tid, counter)
  -- An explicit header table replaces wrk's -H headers, so carry them over.
  local headers = {}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  headers["Content-Type"] = "application/scim+json"
  return wrk.format("POST", nil, headers, body)
end
LUA
cat > "$WORK/get.lua" <<'LUA'
request = function()
  local i = math.random(1, seed_users)
  return wrk.format("GET", string.format('%s?filter=userName%%20eq%%20%%22seed-%d@bench.example%%22', users_path, i))
end
LUA

wrk_run() { # lua url -> prints "rps p50 p99" (ms)
  local lua=$1 url=$2 out
  out=$(wrk -t2 -c"$CONNS" -d"${SECONDS_PER}s" --latency -s "$lua" -H "Authorization: Bearer $TOKEN" "$url")
  local rps p50 p99 non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  # A figure over failed requests would be a lie: stop instead.
  [ -z "$non2xx" ] || { echo "bench: $non2xx non-2xx answers from $url; see the server log" >&2; return 1; }
  echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}
to_ms() { # wrk prints 812.00us / 1.23ms / 1.02s
  awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n=n/1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n=n*1000; printf "%.2f", n }'
}

bench_db() { # name database-url
  local name=$1 url=$2
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$WORK/$name.yaml" <<YAML
listen: 127.0.0.1:$port
database: $url
scim:
  max_in_flight: 4096
engine:
  workers: 0   # the gateway alone; the engine has its own figures below
integrations:
  - id: bench
    name: Bench
    app: Bench
    playbook: playbooks/none.yaml
    base_url: http://127.0.0.1:9
    service_account: none
    scim_token: \${BENCH_TOKEN}
YAML
  BENCH_TOKEN=$TOKEN USHER_LOG=warn "$USHER" serve --config "$WORK/$name.yaml" >"$WORK/$name.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  local root="http://127.0.0.1:$port/scim/v2/bench"
  # Seed users for the look-ups (Okta and Entra look a user up before each create).
  python3 - "$root" "$TOKEN" "$SEED" <<'PY'
import http.client, json, sys, urllib.parse
root, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urllib.parse.urlsplit(root)
c = http.client.HTTPConnection(u.hostname, u.port)
for i in range(1, n + 1):
    body = json.dumps({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": f"seed-{i}@bench.example",
                       "name": {"givenName": "Seed", "familyName": str(i)}, "emails": [{"value": f"seed-{i}@bench.example", "type": "work"}]})
    c.request("POST", u.path + "/Users", body, {"Authorization": "Bearer " + token, "Content-Type": "application/scim+json"})
    r = c.getresponse(); r.read()
    if r.status != 201: sys.exit(f"seeding failed: {r.status}")
PY
  sed -e "s/seed_users/$SEED/; s#users_path#\"/scim/v2/bench/Users\"#" "$WORK/get.lua" > "$WORK/get-$name.lua"
  figures=$(wrk_run "$WORK/get-$name.lua" "$root/Users") || exit 1
  read -r rps p50 p99 <<< "$figures"
  echo "$name filtered_get rps=$rps p50=${p50}ms p99=${p99}ms (connections=$CONNS, ${SEED} users)"
  sed -e "s/run_id/\"$name$$\"/" "$WORK/post.lua" > "$WORK/post-$name.lua"
  figures=$(wrk_run "$WORK/post-$name.lua" "$root/Users") || exit 1
  read -r rps p50 p99 <<< "$figures"
  echo "$name post_create rps=$rps p50=${p50}ms p99=${p99}ms (connections=$CONNS, each with job + audit event)"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

# BENCH_ONLY=scim, BENCH_ONLY=playbooks or BENCH_ONLY=engine runs one part.
ONLY="${BENCH_ONLY:-all}"
if [ "$ONLY" = all ] || [ "$ONLY" = scim ]; then
bench_db sqlite "sqlite://$WORK/bench.db"
fi
if { [ "$ONLY" = all ] || [ "$ONLY" = scim ]; } && [ "${BENCH_SKIP_PG:-0}" != 1 ]; then
  DBN="usher_bench_$$"
  psql "$PG_ADMIN" -qc "CREATE DATABASE $DBN" >/dev/null
  bench_db postgres "${PG_ADMIN%/*}/$DBN"
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $DBN WITH (FORCE)" >/dev/null
fi

# Playbooks in real Chromium against the fixture apps (release build).
if [ "$ONLY" = all ] || [ "$ONLY" = playbooks ]; then
  cargo run --release -q --example bench_playbooks
fi

# The engine end to end: SCIM POST → account in the app; joiners per minute.
if [ "$ONLY" = all ] || [ "$ONLY" = engine ]; then
  cargo run --release -q --example bench_engine
fi
