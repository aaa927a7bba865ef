#!/usr/bin/env bash
# The test command: installs and starts the local stack (Kafka, MariaDB, FerretDB) if needed,
# then runs formatting and lint checks and every test against the real services.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
bash deploy/local/stack.sh up
# Topics and databases that earlier (failed or killed) test runs left in the shared stack.
cargo run --quiet --example prune_test_artefacts
cargo fmt --check
bash deploy/validate.sh
cargo clippy --all-targets -- -D warnings
cargo test "$@"
