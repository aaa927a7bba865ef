#!/usr/bin/env bash
# The run command: installs and starts the local stack, builds etl-pipe and sets up the
# pipeline's topics. (The full end-to-end run is added by the end-to-end issue.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
bash deploy/local/stack.sh up
cargo build --release
export ETL_MYSQL_PASSWORD="${ETL_MYSQL_PASSWORD:-etl}"
./target/release/etl-pipe --config config/demo.toml topics apply
echo
echo "The stack keeps running. Stop it with: bash deploy/local/stack.sh down"
