# syntax=docker/dockerfile:1
# etl-pipe: one binary, every stage; the stage is chosen by the command
# (`docker run etl-pipe clean`, `... sink-mysql`).

# ---- build -------------------------------------------------------------------
FROM rust:1-bookworm AS build
# librdkafka is compiled from source by the rdkafka crate (bundled, static), with TLS and SASL
# SCRAM against Debian's OpenSSL (linked dynamically: libssl3 in the runtime image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY schemas ./schemas
RUN cargo build --release --locked --bin etl-pipe \
 && strip target/release/etl-pipe

# ---- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates for HTTPS APIs; libssl3 for librdkafka's TLS and SCRAM; curl for the container
# health checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin etl
COPY --from=build /src/target/release/etl-pipe /usr/local/bin/etl-pipe
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
