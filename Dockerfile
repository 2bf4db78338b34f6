# syntax=docker/dockerfile:1
#
# Switchyard container image: one `switchyard` binary plus the interpreters its process runtimes
# start (Python 3 for `runtime: python`, Node.js for `runtime: node`).
#
#   docker build -t switchyard:local .
#   docker run --rm -e SWITCHYARD_TOKEN=change-me-please -p 8080:8080 switchyard:local
#
# See docs/deploy.md for the compose stack and the Kubernetes manifests.

# Both stages use the same Debian release, so the binary never needs a newer glibc than the
# runtime image has. Package names below are bookworm's.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG NODE_MAJOR=22

# ---------------------------------------------------------------------------------------------
# Build stage: the official Rust image (a full Debian with gcc, g++, make, pkg-config, OpenSSL
# and zlib headers). librdkafka (the Kafka connector) is built from source with rdkafka's `ssl`
# feature and links the system OpenSSL, found through pkg-config: libssl-dev is listed so that
# does not depend on the base image. cmake and the SASL/zstd headers are for C dependencies,
# should they be built from source or linked dynamically.
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev libsasl2-dev libzstd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the registry and the target folder between builds; the binary is
# copied out of the cached target folder because cache mounts are not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p switchyard-broker \
 && install -D -m 0755 target/release/switchyard /out/switchyard

# ---------------------------------------------------------------------------------------------
# Node.js comes from the official image: one self-contained `node` binary (needs only glibc and
# libstdc++), newer than Debian's packaged Node.js. npm is not copied: ship a handler's
# node_modules with the handler.
FROM node:${NODE_MAJOR}-${DEBIAN_RELEASE}-slim AS node

# ---------------------------------------------------------------------------------------------
# Runtime stage.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# python3: the python runtime's interpreter (the bootstrap is built into the binary).
# tini: PID 1 that forwards SIGTERM to switchyard (which drains in-flight work) and reaps
#   orphaned grandchildren of function workers.
# ca-certificates, libssl3, libsasl2-2, zlib1g, libzstd1: TLS roots and the shared libraries C
#   dependencies link against (librdkafka links libssl3 for Kafka TLS and SASL SCRAM).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates python3 tini libssl3 libsasl2-2 zlib1g libzstd1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
# Fail the build early if an interpreter cannot start.
RUN python3 --version && node --version

# Non-root user with a fixed uid/gid (10001), so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 switchyard \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/switchyard --shell /usr/sbin/nologin switchyard \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/switchyard \
 && install -d -m 0755 /etc/switchyard

COPY --from=builder /out/switchyard /usr/local/bin/switchyard
# A default configuration (HTTP ingress and API on 0.0.0.0:8080, SQLite records in
# /var/lib/switchyard, token from $SWITCHYARD_TOKEN). Mount your own file over it.
COPY deploy/docker/switchyard.yaml /etc/switchyard/switchyard.yaml

WORKDIR /var/lib/switchyard
USER 10001:10001
# The client commands (`switchyard events list`, `cron list`, ...) run inside the container talk
# to the local server; they read the token from $SWITCHYARD_TOKEN.
ENV SWITCHYARD_URL=http://127.0.0.1:8080
# server.bind's default is 127.0.0.1:8080; the shipped configuration binds 0.0.0.0:8080.
EXPOSE 8080

# Liveness of the HTTP server. Python is in the image anyway, so no curl is needed. Override the
# URL with SWITCHYARD_HEALTH_URL when server.bind uses another port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('SWITCHYARD_HEALTH_URL', 'http://127.0.0.1:8080/healthz'), timeout=2)"]

ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/switchyard"]
CMD ["serve", "-c", "/etc/switchyard/switchyard.yaml"]
