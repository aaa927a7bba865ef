#!/usr/bin/env bash
# Healthy when the broker answers an ApiVersions request on its own listener.
exec java -Xmx64m -XX:TieredStopAtLevel=1 -cp "/opt/kafka/log4j-binding/*:/opt/kafka/libs/*" \
  -Dlog4j2.configurationFile=/opt/kafka/log4j2.properties org.apache.kafka.tools.BrokerApiVersionsCommand \
  --bootstrap-server "${1:-localhost:9092}" >/dev/null 2>&1
