#!/usr/bin/env bash
# Runs the public SCIM compliance suites (../shared/scim-suites) against a live
# `usher serve` on SQLite: scim2-tester, Okta's OIN SPEC test and Microsoft's
# Entra collection. Prints each suite's summary and one closing line.
#
# The Entra collection has checks that depart from RFC 7644; Usher accepts the safe
# ones leniently (docs/scim.md lists them). Any check listed in ENTRA_NON_RFC below is
# reported but not counted as a failure; every other check must pass.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"; ROOT="$(dirname "$HERE")"
SUITES="${SCIM_SUITES:-$ROOT/../shared/scim-suites}"
[ -d "$SUITES" ] || { echo "compliance: no SCIM suites at $SUITES (set SCIM_SUITES)"; exit 1; }
USHER="${USHER_BIN:-$ROOT/target/debug/usher}"
[ -x "$USHER" ] || { echo "compliance: build usher first ($USHER missing)"; exit 1; }
bash "$SUITES/install.sh" >/dev/null
# The suites' install.sh leaves out scim2-client's `httpx2` extra, which its runner imports.
VENV="${SCIM_SUITES_HOME:-$HOME/.cache/scim-suites}/venv"
"$VENV/bin/python" -c 'import httpx2' 2>/dev/null || "$VENV/bin/pip" install -q 'scim2-client[httpx2]==0.13.2'

WORK="$(mktemp -d)"; trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
run_suite() { # name gateway command...
  local name=$1; shift
  local out="$WORK/$name.log"
  set +e; "$@" > "$out" 2>&1; local rc=$?; set -e
  tail -1 "$out" | sed "s/^/$name: /"
  echo "$rc" > "$WORK/$name.rc"
}
# The suites test the SCIM gateway: no engine (workers: 0), so their writes stay queued.
cat > "$WORK/usher.yaml" <<YAML
listen: 127.0.0.1:$PORT
database: sqlite://$WORK/usher.db
engine:
  workers: 0
integrations:
YAML
for gw in tester okta entra; do
  cat >> "$WORK/usher.yaml" <<YAML
  - id: $gw
    name: Compliance $gw
    app: Compliance
    playbook: playbooks/none.yaml
    base_url: http://127.0.0.1:9
    service_account: none
    scim_token: \${COMPLIANCE_TOKEN}
YAML
done
COMPLIANCE_TOKEN=$TOKEN USHER_LOG=warn "$USHER" serve --config "$WORK/usher.yaml" > "$WORK/usher.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

BASE="http://127.0.0.1:$PORT/scim/v2"
run_suite scim2-tester bash "$SUITES/run-scim2-tester.sh" "$BASE/tester" "$TOKEN"
IGNORE_TIMING=${IGNORE_TIMING:-0} run_suite okta bash "$SUITES/run-newman.sh" "$BASE/okta" "$TOKEN" okta
run_suite entra bash "$SUITES/run-newman.sh" "$BASE/entra" "$TOKEN" entra

# Checks of Microsoft's collection that contradict RFC 7644 (see docs/scim.md).
ENTRA_NON_RFC=()
passed=0; failed=0; bad=()
for suite in scim2-tester okta entra; do
  log="$WORK/$suite.log"
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1 || true)
  [ -n "$summary" ] || { echo "compliance: $suite printed no summary"; tail -20 "$log"; failed=$((failed+1)); continue; }
  p=$(echo "$summary" | sed -E 's/^([0-9]+) passed.*/\1/'); f=$(echo "$summary" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
  passed=$((passed+p))
  if [ "$f" -gt 0 ]; then
    while IFS= read -r line; do
      allowed=0
      for a in "${ENTRA_NON_RFC[@]}"; do [ "$suite" = entra ] && [[ "$line" == *"$a"* ]] && allowed=1; done
      if [ $allowed = 1 ]; then echo "compliance: $suite: accepted non-RFC check: $line"; else bad+=("$suite: $line"); fi
    done < <(grep -E '^(FAIL|not ok|✗|x )' "$log" || true)
    [ ${#bad[@]} -gt 0 ] || [ "$suite" = entra ] || bad+=("$suite: $f failed")
  fi
done
for b in "${bad[@]}"; do echo "compliance: FAILED $b"; done
failed=$((failed+${#bad[@]}))
echo "compliance: $passed passed, $failed failed"
[ "$failed" = 0 ]
