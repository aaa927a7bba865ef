#!/usr/bin/env bash
# One-shot `kafka-setup` of deploy/compose.secure.yml (apache/kafka image), run as the
# administrator once the brokers are healthy:
#   1. the SCRAM-SHA-512 users of every principal but admin (made at format time by
#      kafka-start.sh): one per stage (etl-extract, etl-clean, etl-score, etl-sink-mysql,
#      etl-sink-mongo), schema-registry and kafdrop, each from its own password file;
#   2. the ACLs of the two clients that are not etl-pipe stages: the schema registry (its
#      _schemas topic and its group) and Kafdrop (read-only: the pipeline's topics and groups).
# The stages' ACLs are `etl-pipe acls --execute` (one-shot `acls`), which knows what each needs.
# Idempotent: a user's password is set again, an existing ACL is left as it is.
# A password is on kafka-configs' command line while it runs (this container only).
set -euo pipefail
bin="${KAFKA_HOME:-/opt/kafka}/bin"
bootstrap="${BOOTSTRAP_SERVERS:-kafka-1:9092,kafka-2:9092,kafka-3:9092}"
admin="${ADMIN_CLIENT_PROPERTIES:-/etc/kafka/secrets/admin-client.properties}"
secrets="${SECRETS_DIR:-/run/secrets}"
prefix="${PIPELINE_NAME:-etl-pipe}." # the pipeline's topics and consumer groups

for user in etl-extract etl-clean etl-score etl-sink-mysql etl-sink-mongo schema-registry kafdrop; do
  file="$secrets/kafka_${user//-/_}_password"
  "$bin/kafka-configs.sh" --bootstrap-server "$bootstrap" --command-config "$admin" --alter \
    --entity-type users --entity-name "$user" --add-config "SCRAM-SHA-512=[password=$(cat "$file")]" >/dev/null
  echo "kafka-setup: SCRAM-SHA-512 user $user"
done

acl() { "$bin/kafka-acls.sh" --bootstrap-server "$bootstrap" --command-config "$admin" --add "$@" >/dev/null; }
# Schema registry: it creates, writes and reads its store topic and elects a leader in its group.
acl --allow-principal User:schema-registry --topic _schemas \
  --operation Create --operation Read --operation Write --operation Describe --operation DescribeConfigs
acl --allow-principal User:schema-registry --group schema-registry --resource-pattern-type prefixed \
  --operation Read
# Kafdrop: browse the pipeline's topics (read, describe, configs), its groups' lag, the ACL list.
acl --allow-principal User:kafdrop --topic "$prefix" --resource-pattern-type prefixed \
  --operation Read --operation Describe --operation DescribeConfigs
acl --allow-principal User:kafdrop --group "$prefix" --resource-pattern-type prefixed --operation Describe
acl --allow-principal User:kafdrop --cluster --operation Describe
echo "kafka-setup: ACLs of User:schema-registry and User:kafdrop"
