#!/usr/bin/env bash
# The test command: installs and starts the local stack if needed — the single Kafka broker,
# the 3-node Kafka cluster (ETL_STACK_PROFILE=cluster), the secure profile
# (ETL_STACK_PROFILE=secure), the Apicurio schema registry, MariaDB and FerretDB, and builds the
# container images (deploy/podman/images.sh) — then runs formatting and lint checks and every test against the real services.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
bash deploy/local/stack.sh up
ETL_STACK_PROFILE=cluster bash deploy/local/stack.sh up
# Its own Kafka (SASL_SSL + SCRAM + ACLs), MariaDB (TLS required) and FerretDB (TLS): tests/secure.rs.
ETL_STACK_PROFILE=secure bash deploy/local/stack.sh up
# The container images (Podman; built once, cached): tests/containers.rs runs the production
# compose file with them, scaled and disturbed.
bash deploy/podman/images.sh
# The Python confluent-kafka client the conformance test reads etl-pipe's Avro with.
bash deploy/local/pyvenv.sh >/dev/null
# Topics and databases that earlier (failed or killed) test runs left in the shared stack.
cargo run --quiet --example prune_test_artefacts
cargo fmt --check
bash deploy/validate.sh
cargo clippy --all-targets -- -D warnings
cargo test "$@"
