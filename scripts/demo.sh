#!/usr/bin/env bash
# The run command: installs and starts the local stack (Kafka, registry, MariaDB, FerretDB) if needed,
# builds etl-pipe, creates the run's topics, starts the sample API and every stage as separate
# processes, waits until every record has landed and prints a summary.
#   bash scripts/demo.sh                 # 20 000 records with faults (429s, 5xx, bad records, drift)
#   bash scripts/demo.sh --records 200000 --no-faults
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
bash deploy/local/stack.sh up
cargo build --release --bin etl-pipe
export ETL_MYSQL_PASSWORD="${ETL_MYSQL_PASSWORD:-etl}"
# With the stack's schema registry up (the default), cleaned and scored are Confluent-framed so
# Kafdrop decodes them; ETL_STACK_REGISTRY=0 leaves it out and the demo uses single-object Avro.
registry="http://127.0.0.1:${ETL_REGISTRY_PORT:-8081}/apis/ccompat/v7"
if curl -fsS -o /dev/null "$registry/subjects" 2>/dev/null; then
  set -- --schema-registry "$registry" "$@"
fi
exec ./target/release/etl-pipe --config config/demo.toml demo "$@"
