# syntax=docker/dockerfile:1
# etl-pipe: one binary, every stage; the stage is chosen by the command
# (`docker run etl-pipe clean`, `... sink-mysql`).

# The two base images. Where no image registry is reachable, deploy/podman/images.sh makes
# local ones and passes them here (README "Containers (Podman)").
ARG BUILD_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- build -------------------------------------------------------------------
FROM ${BUILD_IMAGE} AS build
# librdkafka is compiled from source by the rdkafka crate (bundled, static), with TLS and SASL
# SCRAM against Debian's OpenSSL (linked dynamically: libssl3 in the runtime image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
COPY schemas ./schemas
# Crates and the target directory live in build caches: a rebuild after a source change compiles
# only what changed. The binary is copied out of the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin etl-pipe \
 && strip -o /usr/local/bin/etl-pipe target/release/etl-pipe

# ---- runtime -----------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
# ca-certificates for HTTPS APIs; libssl3 for librdkafka's TLS and SCRAM; curl for the container
# health checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin etl
COPY --from=build /usr/local/bin/etl-pipe /usr/local/bin/etl-pipe
COPY schemas /etc/etl-pipe/schemas
COPY baselines /etc/etl-pipe/baselines
COPY config/demo.toml /etc/etl-pipe/config.toml
# Relative paths in the config (schemas/, baselines/) resolve from here.
WORKDIR /etc/etl-pipe
ENV ETL_CONFIG=/etc/etl-pipe/config.toml
USER 10001:10001
EXPOSE 9898
ENTRYPOINT ["/usr/local/bin/etl-pipe"]
CMD ["--help"]
