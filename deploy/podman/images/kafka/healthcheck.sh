#!/usr/bin/env bash
# Healthy when the broker answers an ApiVersions request on its own listener.
exec java -Xmx64m -XX:TieredStopAtLevel=1 -cp "/opt/kafka/libs/*" org.apache.kafka.tools.BrokerApiVersionsCommand \
  --bootstrap-server "${1:-localhost:9092}" >/dev/null 2>&1
