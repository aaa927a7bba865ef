"""Confluent wire-format round trip with the reference client, against the local stack.

    PY="$(bash deploy/local/pyvenv.sh)"
    "$PY" tests/python/confluent_roundtrip.py 127.0.0.1:19092,127.0.0.1:19192,127.0.0.1:19292 \
        http://127.0.0.1:8081/apis/ccompat/v7 roundtrip-check [--keep]

Creates TOPIC (1 partition, the brokers' default replication factor, so it works on the single
broker and on the cluster), produces one record with the Confluent AvroSerializer (the schema is
registered under TOPIC-value), reads the raw bytes back, checks the framing (magic byte 0, then the
4-byte big-endian schema id the registry gave that subject's latest version), decodes them with
AvroDeserializer and compares. Then it deletes the topic and the subject unless --keep.

Exit 0 and a last line "1 passed, 0 failed" on success; exit 1 with the reason otherwise.
A seed for the conformance test between this client and the Rust side: swap either end.
"""

import argparse
import json
import struct
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "RoundTrip",
        "namespace": "etl.conformance",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "n", "type": "long"},
            {"name": "score", "type": "double"},
            {"name": "ok", "type": "boolean"},
            {"name": "tier", "type": ["null", "string"], "default": None},
        ],
    }
)


def fail(msg):
    print(f"confluent_roundtrip: FAIL: {msg}", file=sys.stderr)
    print("0 passed, 1 failed")
    sys.exit(1)


def create_topic(admin, topic):
    # replication_factor=-1: the brokers' default.replication.factor (3 on the cluster profile).
    fut = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=-1)], request_timeout=30)
    try:
        fut[topic].result(timeout=30)
    except KafkaException as e:
        if e.args[0].name() != "TOPIC_ALREADY_EXISTS":
            raise


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bootstrap")
    ap.add_argument("registry", help="Confluent-compatible base URL, e.g. http://127.0.0.1:8081/apis/ccompat/v7")
    ap.add_argument("topic")
    ap.add_argument("--keep", action="store_true", help="keep the topic and the subject")
    args = ap.parse_args()

    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    create_topic(admin, args.topic)
    registry = SchemaRegistryClient({"url": args.registry})
    subject = f"{args.topic}-value"
    ctx = SerializationContext(args.topic, MessageField.VALUE)

    record = {"id": str(uuid.uuid4()), "n": 2**40 + 7, "score": 0.125, "ok": True, "tier": "GOLD"}
    value = AvroSerializer(registry, SCHEMA, conf={"auto.register.schemas": True})(record, ctx)

    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "enable.idempotence": True})
    delivered = []
    producer.produce(args.topic, key=record["id"].encode(), value=value,
                     on_delivery=lambda err, msg: delivered.append((err, msg)))
    if producer.flush(30) != 0 or not delivered:
        fail("the record was not delivered within 30 s")
    err, msg = delivered[0]
    if err is not None:
        fail(f"delivery failed: {err}")
    offset = msg.offset()

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"confluent-roundtrip-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    consumer.subscribe([args.topic])
    got = None
    deadline = time.monotonic() + 30
    try:
        while got is None and time.monotonic() < deadline:
            m = consumer.poll(1.0)
            if m is None:
                continue
            if m.error():
                fail(f"consume error: {m.error()}")
            if m.offset() == offset:
                got = m
    finally:
        consumer.close()
    if got is None:
        fail(f"record at offset {offset} not read back within 30 s")

    raw = got.value()
    latest = registry.get_latest_version(subject)
    magic, schema_id = struct.unpack(">bI", raw[:5])
    if magic != 0:
        fail(f"magic byte {magic}, expected 0")
    if schema_id != latest.schema_id:
        fail(f"framed schema id {schema_id}, registry says {subject} v{latest.version} has id {latest.schema_id}")
    decoded = AvroDeserializer(registry)(raw, ctx)
    if decoded != record:
        fail(f"decoded {decoded!r} != produced {record!r}")

    print(json.dumps({
        "topic": args.topic, "partition": got.partition(), "offset": offset,
        "subject": subject, "subject_version": latest.version, "schema_id": schema_id,
        "frame_head_hex": raw[:5].hex(), "value_bytes": len(raw), "decoded_equals_produced": True,
    }))

    if not args.keep:
        admin.delete_topics([args.topic], request_timeout=30)[args.topic].result(timeout=30)
        registry.delete_subject(subject)
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
