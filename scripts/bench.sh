#!/usr/bin/env bash
# Usher's benchmark: SCIM throughput and latency against a live release build, on
# SQLite and on PostgreSQL, with wrk (installed from Debian when missing). Bounded:
# each load phase runs BENCH_SECONDS (default 10 s) at BENCH_CONNECTIONS (default 32).
# Prints one line per figure:  <db> <scenario> rps=N p50=Xms p99=Yms
# and the same for the peer, scimgateway 6.1 in memory (bench/scimgateway), with the
# ratio of Usher's SQLite throughput to it (docs/operations.md, "Sizing").
# `scripts/bench.sh memory` prints only the sizing figures (memory of usher and of its
# Chromium at 1, 2 and 4 workers; a few minutes), as quoted in docs/operations.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-deps.sh --bench >/dev/null
SECONDS_PER=${BENCH_SECONDS:-10}; CONNS=${BENCH_CONNECTIONS:-32}; SEED=${BENCH_SEED_USERS:-2000}
# `scripts/bench.sh memory` = BENCH_ONLY=memory (the sizing figures alone, a few minutes).
ONLY="${1:-${BENCH_ONLY:-all}}"
# BENCH_PROFILE=debug measures an existing debug build instead of building a release one.
PROFILE=${BENCH_PROFILE:-release}
# Both binaries (`--bin usher` alone would leave the fixture app unbuilt).
if [ "$PROFILE" = release ]; then cargo build --release -q -p usher -p usher-fixture-apps --bin usher --bin usher-fixture-apps
else cargo build -q -p usher -p usher-fixture-apps --bin usher --bin usher-fixture-apps; fi
TARGET="${CARGO_TARGET_DIR:-target}"; USHER="$(cd "$TARGET" && pwd)/$PROFILE/usher"
FIXTURE="$(cd "$TARGET" && pwd)/$PROFILE/usher-fixture-apps"
WORK="$(mktemp -d)"; PID=""; APP_PID=""
cleanup() { { [ -n "$PID" ] && kill "$PID"; [ -n "$APP_PID" ] && kill "$APP_PID"; } 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
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
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
to_ms() { # wrk prints 812.00us / 1.23ms / 1.02s
  awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n=n/1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n=n*1000; printf "%.2f", n }'
}

bench_db() { # name database-url
  local name=$1 url=$2
  local port; port=$(free_port)
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
  seed "$root"
  scim_load "$name" "$root" "each with job + audit event"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

# Seed users for the look-ups (Okta and Entra look a user up before each create):
# seed-1..N@bench.example, POSTed to ROOT/Users, each answered 201 Created.
seed() { # root-url
  python3 - "$1" "$TOKEN" "$SEED" <<'PY'
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
}

# The two loads against ROOT/Users; prints the two figure lines and remembers the rps
# in RPS_<name>_get and RPS_<name>_post (for the peer ratio).
scim_load() { # name root-url post-note
  local name=$1 root=$2 note=$3 figures rps p50 p99 path
  path=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).path)' "$root/Users")
  sed -e "s/seed_users/$SEED/; s#users_path#\"$path\"#" "$WORK/get.lua" > "$WORK/get-$name.lua"
  figures=$(wrk_run "$WORK/get-$name.lua" "$root/Users") || exit 1
  read -r rps p50 p99 <<< "$figures"
  echo "$name filtered_get rps=$rps p50=${p50}ms p99=${p99}ms (connections=$CONNS, ${SEED} users)"
  printf -v "RPS_${name}_get" '%s' "$rps"
  sed -e "s/run_id/\"$name$$\"/" "$WORK/post.lua" > "$WORK/post-$name.lua"
  figures=$(wrk_run "$WORK/post-$name.lua" "$root/Users") || exit 1
  read -r rps p50 p99 <<< "$figures"
  echo "$name post_create rps=$rps p50=${p50}ms p99=${p99}ms (connections=$CONNS, $note)"
  printf -v "RPS_${name}_post" '%s' "$rps"
}

# The peer: scimgateway 6.1 (Node) with its in-memory plugin, plugin-loki
# (bench/scimgateway, installed by install-deps.sh --bench), under the same two loads
# and seed, then the ratio of Usher's SQLite throughput to the peer's. Not installed
# (the install is allowed to fail) or not started: one line saying so, no figures.
bench_peer() {
  local dir="$PWD/bench/scimgateway" port reason
  if [ ! -f "$dir/node_modules/scimgateway/package.json" ]; then
    reason=$(grep -m1 -E '^npm error [0-9]{3} [^ ]' "$dir/npm-install.log" 2>/dev/null || grep -m1 '^npm error' "$dir/npm-install.log" 2>/dev/null || true)
    if [ -n "$reason" ]; then reason="npm install in bench/scimgateway: ${reason#npm error }"; else reason="no bench/scimgateway/node_modules/scimgateway"; fi
    echo "scimgateway: not installed ($reason)"
    return 0
  fi
  port=$(free_port)
  BENCH_TOKEN=$TOKEN node "$dir/start.mjs" --port "$port" --dir "$WORK/scimgateway" >"$WORK/scimgateway.log" 2>&1 &
  PID=$!
  local root="http://127.0.0.1:$port"
  for _ in $(seq 1 200); do
    curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" "$root/ServiceProviderConfig" && break
    kill -0 "$PID" 2>/dev/null || break; sleep 0.1
  done
  if ! curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" "$root/ServiceProviderConfig"; then
    reason=$(grep -m1 -E '^[A-Za-z]*Error|"level":"error"' "$WORK/scimgateway.log" || grep -v '^\s*$' "$WORK/scimgateway.log" | tail -1 || true)
    echo "scimgateway: not started (${reason:0:200})"
    kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""
    return 0
  fi
  seed "$root"
  scim_load scimgateway "$root" "in memory"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  awk -v ug="$RPS_sqlite_get" -v up="$RPS_sqlite_post" -v pg="$RPS_scimgateway_get" -v pp="$RPS_scimgateway_post" \
    'BEGIN { printf "ratio sqlite/scimgateway filtered_get=%.2f post_create=%.2f (targets: ≥5 and ≥3)\n", ug / pg, up / pp }'
}

# BENCH_ONLY=scim|playbooks|engine|memory (or the first argument) runs one part.
# engine: BENCH_APPS=classic,spa,dokuwiki BENCH_UI_N=5 BENCH_JOINERS=100 (defaults).
if [ "$ONLY" = all ] || [ "$ONLY" = scim ]; then
bench_db sqlite "sqlite://$WORK/bench.db"
fi
if { [ "$ONLY" = all ] || [ "$ONLY" = scim ]; } && [ "${BENCH_SKIP_PG:-0}" != 1 ]; then
  DBN="usher_bench_$$"
  psql "$PG_ADMIN" -qc "CREATE DATABASE $DBN" >/dev/null
  bench_db postgres "${PG_ADMIN%/*}/$DBN"
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $DBN WITH (FORCE)" >/dev/null
fi
if [ "$ONLY" = all ] || [ "$ONLY" = scim ]; then
  bench_peer
fi

# Playbooks in real Chromium against the fixture apps (release build).
if [ "$ONLY" = all ] || [ "$ONLY" = playbooks ]; then
  cargo run --release -q --example bench_playbooks
fi

# The engine end to end, per app (classic and SPA fixtures, a real DokuWiki): each UI
# action from the SCIM request to read-back done against a hand-written Playwright
# script doing the same UI work (ratio), and joiners per minute with 1 and 4 workers with
# peak memory. PHP's built-in server runs DokuWiki with 4 workers (like a web server),
# so that four sessions are not served one request at a time.
if [ "$ONLY" = all ] || [ "$ONLY" = engine ]; then
  PHP_CLI_SERVER_WORKERS=${PHP_CLI_SERVER_WORKERS:-4} cargo run --release -q --example bench_engine
fi

# Sizing: peak memory of `usher serve` and of its Chromium process tree during a burst
# of joiners into the classic fixture app, with engine.workers = 1, 2 and 4 (integration
# concurrency = workers). Usher: VmHWM (the kernel's peak resident set). Chromium: the
# peak, over samples every 0.2 s, of the summed Pss (smaps_rollup) of every descendant
# of the usher process: Chromium's processes share pages, so a sum of their RSS would
# count shared libraries and the zygote many times over.
descendants() { # pid -> every descendant pid
  local kids; kids=$(cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$1" '$4==p {print $1}')
  for k in $kids; do echo "$k"; descendants "$k"; done
}
memory_run() { # workers joiners -> one line of figures
  local workers=$1 n=$2 dir="$WORK/mem-$1" port; mkdir -p "$dir"; port=$(free_port)
  cat > "$dir/usher.yaml" <<YAML
listen: 127.0.0.1:$port
database: sqlite://usher.db
vault:
  key_file: vault.key
engine:
  workers: $workers
  poll: 100ms
integrations:
  - id: acme
    name: Acme Admin (fixture)
    app: Acme Admin
    playbook: $PWD/playbooks/classic.yaml
    base_url: $APP_URL
    service_account: acme-admin
    concurrency: $workers
    scim_token: \${BENCH_TOKEN}
YAML
  "$USHER" vault keygen --out "$dir/vault.key" >/dev/null
  printf '%s\n' 'correct horse battery' JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP |
    "$USHER" vault set acme-admin --username admin@acme.example --totp --config "$dir/usher.yaml" >/dev/null
  # Each run has a fresh database that does not know the TOTP codes the previous run
  # used; the app refuses a replayed code (and Usher would pause). Usher may take the
  # next window's code early (the app accepts one window of skew), so skip two windows.
  sleep $((61 - $(date +%s) % 30))
  BENCH_TOKEN=$TOKEN USHER_LOG=warn "$USHER" serve --config "$dir/usher.yaml" >"$dir/serve.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  local idle; idle=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
  for i in $(seq 1 "$n"); do
    curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/scim+json' \
      -d "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"mem$workers-$i@bench.example\",\"name\":{\"givenName\":\"Mem\",\"familyName\":\"User\"},\"emails\":[{\"value\":\"mem$workers-$i@bench.example\",\"primary\":true}]}" \
      "http://127.0.0.1:$port/scim/v2/acme/Users"
  done
  local peak_pss=0 procs=0 done_jobs=0 pss count
  for _ in $(seq 1 3000); do # at most 10 minutes
    pss=0; count=0
    for p in $(descendants "$PID"); do
      v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
      [ -n "$v" ] && { pss=$((pss + v)); count=$((count + 1)); }
    done
    [ "$pss" -gt "$peak_pss" ] && peak_pss=$pss
    [ "$count" -gt "$procs" ] && procs=$count
    done_jobs=$("$USHER" jobs list --config "$dir/usher.yaml" --json --limit 1000 2>/dev/null |
      python3 -c 'import json,sys; print(sum(j["status"] in ("succeeded","failed") for j in json.load(sys.stdin)))' || echo 0)
    [ "$done_jobs" -ge "$n" ] && break
    sleep 0.2
  done
  local hwm; hwm=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
  echo "memory workers=$workers joiners=$n done=$done_jobs usher_idle_rss=$((idle / 1024))MiB usher_peak_rss=$((hwm / 1024))MiB chromium_peak_pss=$((peak_pss / 1024))MiB chromium_processes_max=$procs ($PROFILE build)"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}
if [ "$ONLY" = all ] || [ "$ONLY" = memory ]; then
  APP_PORT=$(free_port); APP_URL="http://127.0.0.1:$APP_PORT"
  "$FIXTURE" --kind classic --port "$APP_PORT" >"$WORK/app.log" 2>&1 &
  APP_PID=$!
  for _ in $(seq 1 100); do curl -fs -o /dev/null "$APP_URL/" 2>/dev/null && break; sleep 0.1; done
  curl -fs -o /dev/null "$APP_URL/" || { echo "bench: the fixture app did not start; see $WORK/app.log" >&2; cat "$WORK/app.log" >&2; exit 1; }
  for w in 1 2 4; do memory_run "$w" "${BENCH_MEMORY_JOINERS:-20}"; done
  kill "$APP_PID"; wait "$APP_PID" 2>/dev/null || true; APP_PID=""
fi
