#!/usr/bin/env bash
# KAFKA_* environment -> server.properties (the apache/kafka image's rule: drop KAFKA_, lower
# case, `_` -> `.`, `__` -> `_`, `___` -> `-`), then format the log dir once and run the node.
set -euo pipefail
conf=/var/lib/kafka/server.properties
: "${CLUSTER_ID:?CLUSTER_ID is required (a base64 UUID: the same on every node)}"
{
  echo "log.dirs=/var/lib/kafka/data"
  while IFS='=' read -r name value; do
    case "$name" in
      KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JVM_OPTS) continue ;;
      KAFKA_*) ;;
      *) continue ;;
    esac
    key="${name#KAFKA_}"; key="${key,,}"
    key="${key//___/-}"; key="${key//__/@}"; key="${key//_/.}"; key="${key//@/_}"
    echo "$key=$value"
  done < <(env)
} >"$conf"
# The log4j binding for slf4j 1.7 (the API in the jars) first, as deploy/local/stack.sh does.
cp=(-cp "/opt/kafka/log4j-binding/*:/opt/kafka/libs/*" -Dlog4j2.configurationFile=/opt/kafka/log4j2.properties)
if [[ ! -f /var/lib/kafka/data/meta.properties ]]; then
  # shellcheck disable=SC2086
  java ${KAFKA_HEAP_OPTS} "${cp[@]}" kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$conf" --ignore-formatted
fi
# shellcheck disable=SC2086
exec java ${KAFKA_HEAP_OPTS} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 ${KAFKA_OPTS:-} "${cp[@]}" kafka.Kafka "$conf"
