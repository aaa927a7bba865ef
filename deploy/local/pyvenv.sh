#!/usr/bin/env bash
# Python venv for test tools that talk to the local stack as a third-party client would: the
# Confluent Python client (confluent-kafka, with its Avro serdes and schema-registry client) is
# the reference for the Confluent wire format that the Rust side must interoperate with.
#
#   deploy/local/pyvenv.sh    create the venv once (PyPI), then print its python's path on stdout
#
#   PY="$(bash deploy/local/pyvenv.sh)" && "$PY" tests/python/confluent_roundtrip.py BOOTSTRAP REGISTRY TOPIC
#
# The venv lives at $ETL_STACK_HOME/venv (default ~/.local/share/etl-pipe-stack/venv), beside the
# stack's cache. Messages go to stderr, so stdout is only the path. ETL_PYTHON picks the
# interpreter (default python3); ETL_CONFLUENT_KAFKA_VERSION the client version.
set -euo pipefail

STACK_HOME="${ETL_STACK_HOME:-$HOME/.local/share/etl-pipe-stack}"
VENV="$STACK_HOME/venv"
PYTHON="${ETL_PYTHON:-python3}"
CONFLUENT_KAFKA_VERSION="${ETL_CONFLUENT_KAFKA_VERSION:-2.16.1}"
# The marker names what was installed: a changed version makes a new venv, not a mixed one.
SPEC="confluent-kafka[avro,schemaregistry]==$CONFLUENT_KAFKA_VERSION"

say() { printf '[pyvenv] %s\n' "$*" >&2; }
die() { printf '[pyvenv] error: %s\n' "$*" >&2; exit 1; }

if [[ -f "$VENV/.complete" && "$(cat "$VENV/.complete")" == "$SPEC" && -x "$VENV/bin/python" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found: install Python 3.9+ (Debian: python3 python3-venv)"
say "creating $VENV with $SPEC (PyPI)"
rm -rf "$VENV"
mkdir -p "$STACK_HOME"
# Debian's python3 without python3-venv has no ensurepip: say so instead of a half-made venv.
"$PYTHON" -m venv "$VENV" >&2 || die "'$PYTHON -m venv' failed (Debian: apt-get install python3-venv)"
log="$STACK_HOME/pyvenv-pip.log"
if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$SPEC" >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  die "pip install $SPEC failed (log: $log)"
fi
echo "$SPEC" >"$VENV/.complete"
say "ready: $("$VENV/bin/python" -c 'import confluent_kafka as c; print("confluent-kafka", c.__version__, "librdkafka", c.libversion()[0])')"
echo "$VENV/bin/python"
