#!/usr/bin/env bash
# Installs what Usher's tests and demo need on a Debian machine, when it is missing:
# Chromium (the engine's browser), Node.js with npm and the console tests' npm packages
# (oidc-provider, axe-core, swagger-parser; into tests/node/node_modules, never
# globally), DokuWiki with the PHP command line (scripts/dokuwiki.sh), wrk (the
# benchmark's load tool) and with --bench the benchmark's npm packages, rustfmt and clippy
# (through rustup, when the toolchain comes from it), and starts the local PostgreSQL
# server the tests use when one is installed but down.
set -euo pipefail
if command -v rustup >/dev/null 2>&1 && ! { cargo clippy --version && cargo fmt --version; } >/dev/null 2>&1; then
  echo "install-deps: rustup component add clippy rustfmt"
  rustup component add clippy rustfmt
fi
need=()
command -v chromium >/dev/null 2>&1 || [ -x "${USHER_CHROME:-/usr/bin/chromium}" ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ "${1:-}" = "--bench" ]; then command -v wrk >/dev/null 2>&1 || need+=(wrk); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# DokuWiki and the PHP command line for tests/dokuwiki.rs, here rather than from the
# tests themselves, so that tests running in parallel processes never race apt-get.
if [ "${USHER_SKIP_DOKUWIKI:-0}" != 1 ]; then bash "$(dirname "$0")/dokuwiki.sh"; fi
# The console tests' real OpenID provider and accessibility checker (tests/console.rs).
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -d "$root/tests/node/node_modules/oidc-provider" ] || [ ! -d "$root/tests/node/node_modules/axe-core" ] || [ ! -d "$root/tests/node/node_modules/@apidevtools/swagger-parser" ]; then
  echo "install-deps: npm install in tests/node"
  (cd "$root/tests/node" && npm install --no-audit --no-fund --silent)
fi
# The benchmark's hand-written Playwright baseline (bench/playwright; playwright-core
# drives the system Chromium, no browser download).
if [ "${1:-}" = "--bench" ] && [ -f "$root/bench/playwright/package.json" ] && [ ! -d "$root/bench/playwright/node_modules/playwright-core" ]; then
  echo "install-deps: npm install in bench/playwright"
  (cd "$root/bench/playwright" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent)
fi
# The SCIM benchmark's peer, scimgateway 6.1 with its in-memory plugin (bench/scimgateway).
# Its postinstall needs Bun and copies plugins into the folder: skipped, start.mjs runs
# the plugin from node_modules with tsx. Allowed to fail: npm's output stays in
# bench/scimgateway/npm-install.log and scripts/bench.sh prints "scimgateway: not installed".
if [ "${1:-}" = "--bench" ] && [ -f "$root/bench/scimgateway/package.json" ] && [ ! -f "$root/bench/scimgateway/node_modules/scimgateway/package.json" ]; then
  echo "install-deps: npm install in bench/scimgateway"
  if (cd "$root/bench/scimgateway" && npm install --no-audit --no-fund --ignore-scripts >npm-install.log 2>&1); then
    rm -f "$root/bench/scimgateway/npm-install.log"
  else
    echo "install-deps: npm install in bench/scimgateway failed (bench/scimgateway/npm-install.log); scripts/bench.sh skips the peer"
  fi
fi
if [ "${USHER_SKIP_PG:-0}" != 1 ] && command -v pg_ctlcluster >/dev/null 2>&1; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "install-deps: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi
