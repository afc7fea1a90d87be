# shellcheck shell=bash
# Sourced by the container scripts: how podman runs on these machines.
# crun refuses the hybrid cgroup layout of this kind of VM and setting some ulimits is
# denied, so podman runs with runc and an empty default ulimit list. Set PODMAN to use
# another engine command (e.g. PODMAN=docker on a machine with a Docker engine).
if [[ -z "${PODMAN:-}" ]]; then
    if [[ -z "${CONTAINERS_CONF:-}" ]]; then
        export CONTAINERS_CONF="${TMPDIR:-/tmp}/usher-containers.conf"
        printf '[containers]\ndefault_ulimits = []\n' >"$CONTAINERS_CONF"
    fi
    PODMAN="podman --runtime runc"
fi
