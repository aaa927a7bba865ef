#!/usr/bin/env bash
# Start command of the apache/kafka brokers in deploy/compose.secure.yml. Formats the broker's
# KRaft storage once with the administrator's SCRAM credential (`kafka-storage format
# --add-scram`), so the brokers can authenticate each other over SASL_SSL from their first start,
# then runs the image's own start script (given as the arguments, /etc/kafka/docker/run), whose
# format step then finds the storage formatted and goes on.
#
# Only `admin` is made here: the other users (one per stage, schema-registry, kafdrop) are made
# by the kafka-setup one-shot (deploy/secure-init/kafka-setup.sh), as admin, so a broker never
# holds a stage's password. The properties below are the few `kafka-storage format` checks,
# taken from the same KAFKA_* variables the image turns into server.properties.
set -euo pipefail
: "${CLUSTER_ID:?}" "${KAFKA_NODE_ID:?}" "${KAFKA_LOG_DIRS:?}"
storage="${KAFKA_HOME:-/opt/kafka}/bin/kafka-storage.sh"
admin_password_file="${ETL_ADMIN_PASSWORD_FILE:-/etc/kafka/secrets/admin.password}"

if [[ ! -f "$KAFKA_LOG_DIRS/meta.properties" ]]; then
  props="$(mktemp)"
  cat >"$props" <<PROPS
process.roles=${KAFKA_PROCESS_ROLES:?}
node.id=$KAFKA_NODE_ID
controller.quorum.voters=${KAFKA_CONTROLLER_QUORUM_VOTERS:?}
controller.listener.names=${KAFKA_CONTROLLER_LISTENER_NAMES:?}
listeners=${KAFKA_LISTENERS:?}
advertised.listeners=${KAFKA_ADVERTISED_LISTENERS:?}
listener.security.protocol.map=${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP:?}
inter.broker.listener.name=${KAFKA_INTER_BROKER_LISTENER_NAME:?}
sasl.enabled.mechanisms=${KAFKA_SASL_ENABLED_MECHANISMS:?}
sasl.mechanism.inter.broker.protocol=${KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL:?}
log.dirs=$KAFKA_LOG_DIRS
PROPS
  echo "===> etl-pipe: formatting $KAFKA_LOG_DIRS with the SCRAM-SHA-512 user admin"
  "$storage" format --cluster-id "$CLUSTER_ID" --config "$props" --ignore-formatted \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$(cat "$admin_password_file")]"
  rm -f "$props"
fi
exec "$@"
