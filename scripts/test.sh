#!/usr/bin/env bash
# The test command: installs and starts the local stack (Kafka, MariaDB, FerretDB) if needed,
# then runs formatting and lint checks and every test against the real services.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
bash deploy/local/stack.sh up
cargo fmt --check
bash deploy/validate.sh
cargo clippy --all-targets -- -D warnings
cargo test "$@"
