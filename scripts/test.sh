#!/usr/bin/env bash
# The test command: installs and starts the local stack if needed — the single Kafka broker,
# the 3-node Kafka cluster (ETL_STACK_PROFILE=cluster), the secure profile
# (ETL_STACK_PROFILE=secure), the Apicurio schema registry, MariaDB and FerretDB, and builds the
# container images (deploy/podman/images.sh) — then runs formatting and lint checks and every test against the real services.
# The cluster and secure profiles it had to start are stopped again at the end (see below).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
bash deploy/local/stack.sh up
# The cluster and the secure profile serve only the tests: the ones this script starts are
# stopped again when it ends (pass or fail), so that their four Kafka JVMs take no memory or CPU
# from the demo and the benchmarks afterwards. Ones already running stay, and so does all of it
# with ETL_TEST_KEEP_STACK=1 (repeated runs skip the start-up). The single broker and the
# databases stay up: they are the demo's.
started=()
for profile in cluster secure; do
  ETL_STACK_PROFILE=$profile bash deploy/local/stack.sh status >/dev/null 2>&1 || started+=("$profile")
done
stop_started() {
  local rc=$? profile
  if [[ "${ETL_TEST_KEEP_STACK:-0}" != 1 ]]; then
    for profile in "${started[@]}"; do
      ETL_STACK_PROFILE=$profile bash deploy/local/stack.sh down >/dev/null 2>&1 \
        || echo "test.sh: could not stop the $profile profile (deploy/local/stack.sh down)" >&2
    done
  fi
  exit "$rc"
}
trap stop_started EXIT
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
