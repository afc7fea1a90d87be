#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and end-to-end tests on SQLite and
# PostgreSQL, then the public SCIM compliance suites against a live server.
# Installs what it needs (Chromium, DokuWiki and PHP via apt-get) and starts PostgreSQL if it is down.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-deps.sh
cargo fmt --all -- --check
# The [workspace.lints] of Cargo.toml and clippy.toml, as errors.
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
# cargo-nextest runs every test as its own process, across all test binaries at once
# (.config/nextest.toml sets how many and the hang guard), so the few long end-to-end
# tests overlap instead of running one binary after another; plain `cargo test`
# otherwise. USHER_TEST_RUNNER=cargo forces the latter.
if [ "${USHER_TEST_RUNNER:-nextest}" = nextest ] && cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  # nextest does not run doctests; they are cheap to keep in the contract.
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast
fi
if [ "${USHER_SKIP_COMPLIANCE:-0}" != 1 ]; then
  USHER_BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/usher" bash scripts/compliance.sh
fi
