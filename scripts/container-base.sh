#!/usr/bin/env bash
# Makes the two base images the Dockerfile names, locally, when they are missing:
#   debian:bookworm-slim       a debootstrap minbase root, slimmed like the official image
#   rust:<rustc>-bookworm      that root + build-essential + pkg-config + the host's Rust
#                              toolchain in the official image's layout
# For machines that reach Debian's package mirror but no container registry. Where a
# registry is reachable, `podman pull` (or `docker pull`) the real images instead.
#
# Usage: scripts/container-base.sh [--force]      (root; needs podman, runc, debootstrap)
# Environment: PODMAN (default "podman --runtime runc"), MIRROR (default: the first
# Debian mirror in /etc/apt/sources.list*), RUST_VERSION (default: the host rustc's).
set -euo pipefail

force=0
[[ "${1:-}" == "--force" ]] && force=1

here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/container-env.sh
source "$here/scripts/container-env.sh"

rust_version="${RUST_VERSION:-$(rustc --version | awk '{print $2}')}"
rust_image="rust:${rust_version}-bookworm"

have_image() { $PODMAN image exists "$1"; }

work="$(mktemp -d /var/tmp/usher-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT

if [[ $force == 1 ]] || ! have_image debian:bookworm-slim; then
    mirror="${MIRROR:-$(set +o pipefail; cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -oE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' | awk '{print $2}' | head -n1)}"
    mirror="${mirror:-http://deb.debian.org/debian}"
    echo "==> debian:bookworm-slim: debootstrap minbase from $mirror (about 2 minutes)"
    debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 20 "$work/debootstrap.log"; exit 1; }
    root="$work/rootfs"
    # What the official slim image does (debuerreotype --slimify and its apt settings):
    # no docs, man pages or locales from later installs, no kept .debs or package lists.
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    printf 'Acquire::GzipIndexes "true";\nAcquire::CompressionTypes::Order:: "gz";\n' \
        >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
    printf 'APT::AutoRemove::SuggestsImportant "false";\n' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/{man,info,groff,lintian,linda}/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    # the official image's sources: main, updates and security
    cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian*}/debian-security bookworm-security main
EOF
    $PODMAN rmi -f debian:bookworm-slim >/dev/null 2>&1 || true
    tar -C "$root" --numeric-owner -c . \
        | $PODMAN import --quiet --change 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
    rm -rf "$root"
fi
echo "==> debian:bookworm-slim: $($PODMAN image inspect --format '{{.Size}}' debian:bookworm-slim | numfmt --to=iec) "

if [[ $force == 1 ]] || ! have_image "$rust_image"; then
    sysroot="$(rustc +"$rust_version" --print sysroot 2>/dev/null || rustc --print sysroot)"
    [[ "$("$sysroot/bin/rustc" --version | awk '{print $2}')" == "$rust_version" ]] \
        || { echo "container-base: no host toolchain $rust_version to copy" >&2; exit 1; }
    echo "==> $rust_image: the host toolchain ($sysroot) in the official image's layout"
    ctx="$work/rust"
    mkdir -p "$ctx/rustup/toolchains/$rust_version-x86_64-unknown-linux-gnu" "$ctx/cargo/bin"
    # the toolchain without its 800 MB of HTML docs (the official image has none either)
    tar -C "$sysroot" --exclude=./share/doc -c . \
        | tar -C "$ctx/rustup/toolchains/$rust_version-x86_64-unknown-linux-gnu" -x
    rustup_bin="$(command -v rustup)"
    cp "$(readlink -f "$rustup_bin")" "$ctx/cargo/bin/rustup"
    for proxy in cargo rustc rustdoc rustfmt cargo-fmt cargo-clippy clippy-driver rust-gdb rust-lldb; do
        ln -s rustup "$ctx/cargo/bin/$proxy"
    done
    printf 'version = "12"\ndefault_toolchain = "%s-x86_64-unknown-linux-gnu"\nprofile = "minimal"\n' \
        "$rust_version" >"$ctx/rustup/settings.toml"
    # This machine's own extra trust anchors (e.g. of a TLS-inspecting proxy in front of
    # the package registries), so that cargo inside the builder reaches crates.io as the
    # host does. Certificates only; the Dockerfile itself knows nothing of them.
    mkdir -p "$ctx/extra-ca"
    find /usr/local/share/ca-certificates -name '*.crt' -exec cp {} "$ctx/extra-ca/" \; 2>/dev/null || true
    cat >"$ctx/Containerfile" <<EOF
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \\
        build-essential pkg-config ca-certificates git \\
    && rm -rf /var/lib/apt/lists/*
COPY extra-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    RUST_VERSION=$rust_version
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
RUN chmod -R a+w /usr/local/rustup /usr/local/cargo && rustc --version && cargo --version
EOF
    $PODMAN build --network=host --ulimit nofile=20000:20000 -t "$rust_image" "$ctx" \
        >"$work/rust-build.log" 2>&1 || { tail -n 30 "$work/rust-build.log"; exit 1; }
fi
echo "==> $rust_image: $($PODMAN image inspect --format '{{.Size}}' "$rust_image" | numfmt --to=iec)"
