#!/usr/bin/env bash
# Runs Usher on the embedded default: `usher demo` starts the bundled admin app ("Acme
# Admin", the server-rendered fixture), a SCIM gateway for it with the provisioning
# engine and headless Chromium, on SQLite in ./usher-demo. It prints the SCIM URL, the
# token and a curl command that provisions a user. Ctrl-C stops everything.
# USHER_DEMO_LISTEN changes the gateway's address (default 127.0.0.1:8080).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-deps.sh
cargo build --release -q --bin usher
TARGET="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release"
exec "$TARGET/usher" demo --listen "${USHER_DEMO_LISTEN:-127.0.0.1:8080}" --dir "${USHER_DEMO_DIR:-usher-demo}" "$@"
