#!/usr/bin/env bash
# Runs Usher on the embedded default: SQLite in a temporary folder, the bundled demo
# admin app (the server-rendered fixture "Acme Admin"), and one integration whose SCIM
# gateway points at it. Prints the SCIM URL, the token and a curl command that
# provisions a user. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-deps.sh
cargo build --release -q --workspace --bins
TARGET="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release"
WORK="$(mktemp -d)"; PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
APP_PORT=$(free_port); PORT=${USHER_DEMO_PORT:-8080}
"$TARGET/usher-fixture-apps" --kind classic --port "$APP_PORT" > "$WORK/app.log" 2>&1 &
PIDS+=($!)
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat > "$WORK/usher.yaml" <<YAML
listen: 127.0.0.1:$PORT
database: sqlite://$WORK/usher.db
integrations:
  - id: demo
    name: Acme Admin (demo)
    app: Acme Admin
    playbook: playbooks/classic.yaml
    base_url: http://127.0.0.1:$APP_PORT
    service_account: acme-admin
    scim_token: \${DEMO_SCIM_TOKEN}
YAML
DEMO_SCIM_TOKEN=$TOKEN "$TARGET/usher" serve --config "$WORK/usher.yaml" &
PIDS+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
cat <<TXT

Usher demo
  admin app:   http://127.0.0.1:$APP_PORT  (credentials in $WORK/app.log)
  SCIM URL:    http://127.0.0.1:$PORT/scim/v2/demo
  SCIM token:  $TOKEN

Provision a user:
  curl -s -X POST http://127.0.0.1:$PORT/scim/v2/demo/Users \\
    -H 'Authorization: Bearer $TOKEN' -H 'Content-Type: application/scim+json' \\
    -d '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"jane@acme.example","name":{"givenName":"Jane","familyName":"Doe"},"emails":[{"value":"jane@acme.example","type":"work","primary":true}]}'

TXT
wait
