#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and end-to-end tests on SQLite and
# PostgreSQL, then the public SCIM compliance suites against a live server.
# Installs what it needs (Chromium via apt-get) and starts PostgreSQL if it is down.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-deps.sh
cargo fmt --all -- --check
# The [workspace.lints] of Cargo.toml and clippy.toml, as errors.
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace --no-fail-fast
if [ "${USHER_SKIP_COMPLIANCE:-0}" != 1 ]; then
  USHER_BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/usher" bash scripts/compliance.sh
fi
