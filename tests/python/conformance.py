"""The Confluent Python client as the other end of etl-pipe's Confluent-framed Avro
(driven by tests/conformance.rs; usable by hand against the local stack).

    PY="$(bash deploy/local/pyvenv.sh)"
    "$PY" tests/python/conformance.py read BOOTSTRAP REGISTRY_URL --count N [--exact-times] TOPIC [TOPIC ...]
    "$PY" tests/python/conformance.py produce BOOTSTRAP REGISTRY_URL TOPIC SCHEMA.avsc RECORDS.jsonl [--key-field F]

read: consumes TOPIC(s) from the beginning (read_committed) until N messages in all, decodes
each value with AvroDeserializer + SchemaRegistryClient (the writer schema looked up by the id
in the frame) and prints one JSON object per message on stdout:
{"topic", "partition", "offset", "key", "schema_id", "value"}. Values as JSON (see `plain`),
recursively through records, arrays and maps: float/double as {"f64_bits": N} (the exact bits;
decimal text would leave the comparison to a JSON parser's rounding), decimal as
{"decimal": "exact fixed-point text"}, uuid as its string, bytes and fixed as
{"bytes_hex": "..."}, date as days since the epoch, time-millis/micros as {"time_us": N}
(microseconds after midnight), timestamp-millis and the other datetimes as integer epoch
milliseconds -- or, with --exact-times, every datetime (timestamp-*, local-timestamp-*) as
{"ts_us": N}, the exact microseconds since 1970-01-01T00:00 (local ones as if UTC).

produce: serializes each JSON record of RECORDS.jsonl (one object per line) with
AvroSerializer (registers SCHEMA under TOPIC-value) and produces it to TOPIC, keyed by its
--key-field field (default "summoner_id") when it has one; prints
{"produced": n, "schema_id": id}. Logical types as fastavro accepts them from JSON: date,
time-* and timestamp-* as integers in the type's unit; what JSON cannot carry as a one-key
object (see `typed`), anywhere in the record: {"$decimal": "-123.47"} (decimal.Decimal),
{"$bytes_hex": "00ff"} (bytes, for bytes and fixed), {"$uuid": "..."} (uuid.UUID),
{"$f64_bits": N} (the float with those IEEE-754 double bits: infinities, -0.0, exact values).

Exit 1 with the reason on stderr on any failure (a message not decodable, a timeout).
"""

import argparse
import datetime
import decimal
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


EPOCH_UTC = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
EPOCH_NAIVE = datetime.datetime(1970, 1, 1)
EPOCH_DAY = datetime.date(1970, 1, 1)
ONE_US = datetime.timedelta(microseconds=1)


def plain(v, exact_times=False):
    """A decoded Avro value as JSON, recursively (records and maps are dicts, arrays lists):
    floats and doubles as {"f64_bits": the IEEE-754 bits of the value as a double}, so that the
    comparison is exact whatever the reader's decimal parsing does; decimal.Decimal as
    {"decimal": fixed-point text with the schema's scale}; uuid.UUID as its string; bytes
    (bytes and fixed) as {"bytes_hex": ...}; date as days since the epoch; time as
    {"time_us": microseconds after midnight}; datetimes (fastavro gives aware ones for
    timestamp-*, naive ones for local-timestamp-*) as integer epoch milliseconds, or with
    `exact_times` as {"ts_us": exact epoch microseconds} (naive ones as if UTC)."""
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return {"f64_bits": struct.unpack("<Q", struct.pack("<d", v))[0]}
    if isinstance(v, dict):
        return {k: plain(x, exact_times) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x, exact_times) for x in v]
    if isinstance(v, decimal.Decimal):
        # Fixed point, never exponent notation: "-0.05", "0.0000", "99999999999999.9999".
        return {"decimal": format(v, "f")}
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return {"bytes_hex": bytes(v).hex()}
    # datetime.datetime is a datetime.date: test it first.
    if isinstance(v, datetime.datetime):
        us = (v - (EPOCH_NAIVE if v.tzinfo is None else EPOCH_UTC)) // ONE_US
        if exact_times:
            return {"ts_us": us}
        return (us + 500) // 1000  # integers: exact at any magnitude
    if isinstance(v, datetime.date):
        return (v - EPOCH_DAY).days
    if isinstance(v, datetime.time):
        us = ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond
        return {"time_us": us}
    fail(f"no JSON for a decoded {type(v).__name__}: {v!r}")


TYPED = {
    "$decimal": decimal.Decimal,
    "$bytes_hex": bytes.fromhex,
    "$uuid": uuid.UUID,
    "$f64_bits": lambda bits: struct.unpack("<d", struct.pack("<Q", bits))[0],
}


def typed(v):
    """A JSON value of RECORDS.jsonl as the serializer takes it: one-key objects
    {"$decimal": ...}, {"$bytes_hex": ...}, {"$uuid": ...}, {"$f64_bits": ...} converted to the
    Python value (anywhere: in records, arrays, maps), everything else as parsed."""
    if isinstance(v, dict):
        if len(v) == 1:
            (k, x), = v.items()
            if k in TYPED:
                return TYPED[k](x)
        return {k: typed(x) for k, x in v.items()}
    if isinstance(v, list):
        return [typed(x) for x in v]
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
                "value": plain(value, args.exact_times),
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
            record = typed(json.loads(line))
            value = serializer(record, ctx)
            schema_id = struct.unpack(">I", value[1:5])[0]
            key = record.get(args.key_field)
            key = str(key).encode() if key is not None else None
            producer.produce(args.topic, key=key, value=value,
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
    r.add_argument("--exact-times", action="store_true",
                   help='every datetime as {"ts_us": exact epoch microseconds}')
    r.add_argument("topics", nargs="+")
    p = sub.add_parser("produce")
    p.add_argument("bootstrap")
    p.add_argument("registry")
    p.add_argument("topic")
    p.add_argument("schema")
    p.add_argument("records")
    p.add_argument("--key-field", default="summoner_id",
                   help="the record field whose value (as a string) keys the message")
    args = ap.parse_args()
    read(args) if args.cmd == "read" else produce(args)


if __name__ == "__main__":
    main()
