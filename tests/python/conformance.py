"""The Confluent Python client as the other end of etl-pipe's Confluent-framed Avro
(driven by tests/conformance.rs; usable by hand against the local stack).

    PY="$(bash deploy/local/pyvenv.sh)"
    "$PY" tests/python/conformance.py read BOOTSTRAP REGISTRY_URL --count N TOPIC [TOPIC ...]
    "$PY" tests/python/conformance.py produce BOOTSTRAP REGISTRY_URL TOPIC SCHEMA.avsc RECORDS.jsonl

read: consumes TOPIC(s) from the beginning (read_committed) until N messages in all, decodes
each value with AvroDeserializer + SchemaRegistryClient (the writer schema looked up by the id
in the frame) and prints one JSON object per message on stdout:
{"topic", "partition", "offset", "key", "schema_id", "value"}; timestamp-millis fields as
integer milliseconds since the epoch (fastavro gives datetimes), float/double fields as
{"f64_bits": N} (the exact bits; decimal text would leave the comparison to a JSON parser's
rounding).

produce: serializes each JSON record of RECORDS.jsonl (one object per line, timestamp-millis
fields as integer milliseconds) with AvroSerializer (registers SCHEMA under TOPIC-value) and
produces it to TOPIC, keyed by its "summoner_id" field when it has one; prints
{"produced": n, "schema_id": id}.

Exit 1 with the reason on stderr on any failure (a message not decodable, a timeout).
"""

import argparse
import datetime
import json
import struct
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

# Seconds a registry request may take; the client retries a timed-out one on a new
# connection (once a request was left unanswered and the client, without one, waited for ever).
REGISTRY_TIMEOUT_S = 20


def fail(msg):
    print(f"conformance.py: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def plain(v):
    """A decoded Avro value as JSON: datetimes (timestamp-millis) as epoch milliseconds,
    floats and doubles as {"f64_bits": the IEEE-754 bits of the value as a double}, so that
    the comparison is exact whatever the reader's decimal parsing does."""
    if isinstance(v, float):
        return {"f64_bits": struct.unpack("<Q", struct.pack("<d", v))[0]}
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return round(v.timestamp() * 1000)
    return v


def read(args):
    registry = SchemaRegistryClient({"url": args.registry, "timeout": REGISTRY_TIMEOUT_S})
    deserializer = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"conformance-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    consumer.subscribe(args.topics)
    seen = 0
    deadline = time.monotonic() + args.timeout
    try:
        while seen < args.count:
            if time.monotonic() > deadline:
                fail(f"read {seen} of {args.count} messages within {args.timeout} s")
            m = consumer.poll(1.0)
            if m is None:
                continue
            if m.error():
                fail(f"consume error: {m.error()}")
            raw = m.value()
            if raw is None or len(raw) < 5 or raw[0] != 0:
                fail(f"{m.topic()}[{m.partition()}]@{m.offset()}: not Confluent framing: {raw[:5]!r}")
            schema_id = struct.unpack(">I", raw[1:5])[0]
            ctx = SerializationContext(m.topic(), MessageField.VALUE)
            try:
                value = deserializer(raw, ctx)
            except Exception as e:  # the reason is the test's output
                fail(f"{m.topic()}[{m.partition()}]@{m.offset()}: AvroDeserializer: {e}")
            print(json.dumps({
                "topic": m.topic(),
                "partition": m.partition(),
                "offset": m.offset(),
                "key": m.key().decode() if m.key() is not None else None,
                "schema_id": schema_id,
                "value": {k: plain(v) for k, v in value.items()},
            }), flush=True)
            seen += 1
    finally:
        consumer.close()


def produce(args):
    registry = SchemaRegistryClient({"url": args.registry, "timeout": REGISTRY_TIMEOUT_S})
    with open(args.schema) as f:
        schema = f.read()
    serializer = AvroSerializer(registry, schema, conf={"auto.register.schemas": True})
    ctx = SerializationContext(args.topic, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "enable.idempotence": True})
    errors = []
    n = 0
    schema_id = None
    with open(args.records) as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            value = serializer(record, ctx)
            schema_id = struct.unpack(">I", value[1:5])[0]
            key = record.get("summoner_id")
            producer.produce(args.topic, key=key.encode() if key else None, value=value,
                             on_delivery=lambda err, msg: err and errors.append(err))
            producer.poll(0)
            n += 1
    if producer.flush(60) != 0:
        fail("not every record was delivered within 60 s")
    if errors:
        fail(f"delivery failed: {errors[0]}")
    print(json.dumps({"produced": n, "schema_id": schema_id}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("read")
    r.add_argument("bootstrap")
    r.add_argument("registry")
    r.add_argument("--count", type=int, required=True)
    r.add_argument("--timeout", type=float, default=120)
    r.add_argument("topics", nargs="+")
    p = sub.add_parser("produce")
    p.add_argument("bootstrap")
    p.add_argument("registry")
    p.add_argument("topic")
    p.add_argument("schema")
    p.add_argument("records")
    args = ap.parse_args()
    read(args) if args.cmd == "read" else produce(args)


if __name__ == "__main__":
    main()
