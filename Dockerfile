# Usher: SCIM 2.0 gateway that provisions users through headless Chromium.
# Build:  docker build -t usher .      (podman: podman build --format docker -t usher .)
# Run:    docker run -v ./usher.yaml:/etc/usher/usher.yaml:ro -v usher-data:/var/lib/usher \
#           -p 8080:8080 usher
# docs/operations.md ("Container") says what each part is for.

ARG RUST_VERSION=1.95.0

# --- builder ----------------------------------------------------------------------------
# cargo-chef: the dependencies are compiled in a layer keyed on their recipe (the
# manifests and lock file), so an edit to Usher's own sources rebuilds only Usher.
FROM rust:${RUST_VERSION}-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78 \
    && rm -rf "$CARGO_HOME/registry"
WORKDIR /build

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin usher
COPY . .
# The release profile keeps line tables for backtraces; the image drops them (the
# binary goes from 154 MB to 35 MB) and keeps the symbols, so a backtrace still names
# each function.
RUN cargo build --release --locked --bin usher \
    && install -D -m 0755 target/release/usher /out/usher \
    && strip --strip-debug /out/usher

# --- runtime ----------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# Debian's Chromium and its security updates: versions are deliberately not pinned,
# because the security archive keeps only the newest build and a pin would stop the
# image from building after the next browser update. Liberation fonts give screenshots
# real text (metric-compatible with Arial, Times, Courier); tini is PID 1: it forwards
# SIGTERM to Usher and reaps Chromium's orphaned helper processes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates chromium fonts-liberation tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 usher \
    && useradd --uid 10001 --gid usher --home-dir /var/lib/usher --no-create-home \
        --shell /usr/sbin/nologin usher \
    && install -d -o usher -g usher -m 0750 /var/lib/usher \
    && install -d -m 0755 /etc/usher

COPY --from=builder /out/usher /usr/local/bin/usher

# USHER_CONFIG is the default of every subcommand's --config (serve, healthcheck, jobs,
# vault). Chromium writes caches and its profile under /tmp, so a read-only root file
# system needs only /tmp (and the data volume) writable.
ENV USHER_CONFIG=/etc/usher/usher.yaml \
    XDG_CONFIG_HOME=/tmp/.config \
    XDG_CACHE_HOME=/tmp/.cache

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="Usher" \
      org.opencontainers.image.description="SCIM 2.0 gateway that provisions users into admin web UIs through headless Chromium" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.documentation="docs/operations.md" \
      org.opencontainers.image.base.name="debian:bookworm-slim"

WORKDIR /var/lib/usher
VOLUME ["/etc/usher", "/var/lib/usher"]
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["usher", "healthcheck"]
ENTRYPOINT ["/usr/bin/tini", "--", "usher"]
CMD ["serve"]
