#!/usr/bin/env python3
"""An independent Kafka client for Baton's topics: none of Baton's own code.

Baton's end-to-end tests run it as a subprocess (with .tools/venv/bin/python,
which scripts/setup.sh installs) to publish care events the way any other
producer would and to read back what Baton wrote, so a bug shared by Baton's
writer and reader cannot hide. It is as handy by hand, against the broker of
scripts/broker.sh:

    .tools/venv/bin/python tests/python/baton_kafka_client.py produce \\
        --bootstrap 127.0.0.1:9092 --topic baton.care-events.v1 \\
        --jsonl docs/examples/events.jsonl
    .tools/venv/bin/python tests/python/baton_kafka_client.py read-states \\
        --bootstrap 127.0.0.1:9092 --topic baton.care-state.v1

Messages are classes generated from the repository's proto/ with grpcio-tools
at run time (cached under .tools/pb2/), so they always match the contract in
the working tree. Output is JSON lines on stdout; errors go to stderr, and the
exit status is non-zero when anything failed.

Uses the standard library, confluent-kafka and protobuf (grpcio-tools only to
generate the message classes).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baton_protos import DEFAULT_PROTO_DIR, ClientError, generate, load  # noqa: E402
CARE_EVENT = "baton.events.v1.CareEvent"
CARE_STATE = "baton.state.v1.PatientCareState"
CONTENT_TYPE_PREFIX = "application/x-protobuf; messageType="
DEFAULT_TIMEOUT_S = 30.0


class Messages:
    """The generated classes this client needs."""

    def __init__(self, args: argparse.Namespace) -> None:
        events, state = load(
            Path(args.proto_dir),
            args.pb2_dir and Path(args.pb2_dir),
            "baton.events.v1.events_pb2",
            "baton.state.v1.state_pb2",
        )
        from google.protobuf import json_format

        self.json_format = json_format
        self.CareEvent = events.CareEvent
        self.PatientCareState = state.PatientCareState


# --- Kafka plumbing ----------------------------------------------------------


def kafka():
    try:
        import confluent_kafka
    except ImportError:
        raise ClientError(
            "confluent-kafka is not installed: run scripts/setup.sh and use .tools/venv/bin/python"
        ) from None
    return confluent_kafka


def error_reporter(label: str) -> Callable[[Any], None]:
    """An error_cb printing each distinct client-level error once."""
    seen: set[str] = set()

    def report(err: Any) -> None:
        text = str(err)
        if text not in seen:
            seen.add(text)
            print(f"{label}: kafka: {text}", file=sys.stderr)

    return report


def common_config(args: argparse.Namespace, label: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": args.bootstrap,
        # Never create a topic by asking for it: a missing topic is an error.
        "allow.auto.create.topics": False,
        "client.id": f"baton-kafka-client-{label}",
        "error_cb": error_reporter(label),
        # librdkafka's own log lines are noise here; error_cb reports errors.
        "log_level": 0,
    }


def topic_partitions(client: Any, args: argparse.Namespace) -> list[int]:
    """The partitions of args.topic, or a clear error when it does not exist."""
    ck = kafka()
    try:
        metadata = client.list_topics(topic=args.topic, timeout=min(args.timeout_s, 15.0))
    except ck.KafkaException as err:
        raise ClientError(f"cannot get metadata from {args.bootstrap}: {err.args[0]}") from None
    topic = metadata.topics.get(args.topic)
    if topic is None or (topic.error is not None and topic.error.code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART):
        raise ClientError(
            f"topic {args.topic} does not exist on {args.bootstrap} "
            "(this client never creates topics: create it first)"
        )
    if topic.error is not None:
        raise ClientError(f"topic {args.topic}: {topic.error}")
    if not topic.partitions:
        raise ClientError(f"topic {args.topic} has no partitions")
    return sorted(topic.partitions)


def header_text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", errors="replace")


def message_type(headers: Iterable[tuple[str, bytes | None]] | None) -> str | None:
    """The messageType named by the last content-type header, if any."""
    found = None
    for name, value in headers or ():
        if name.lower() == "content-type" and value is not None:
            found = value.decode("utf-8", errors="replace")
    if found is None:
        return None
    for param in found.split(";")[1:]:
        key, _, val = param.strip().partition("=")
        if key.strip().lower() == "messagetype":
            return val.strip().strip('"')
    return None


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")


# --- producing ---------------------------------------------------------------


def patient_key(event: Any) -> str | None:
    """Baton's patient key: the NHS number when set, else authority:value of
    the first local identifier. Not validated: tests may send bad events."""
    patient = event.patient
    if patient.nhs_number:
        return patient.nhs_number
    if patient.local_ids:
        first = patient.local_ids[0]
        return f"{first.authority}:{first.value}"
    return None


def parse_header_args(items: list[str] | None) -> list[tuple[str, bytes]]:
    headers = []
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ClientError(f"--header {item!r}: expected name=value")
        headers.append((name, value.encode()))
    return headers


def make_producer(args: argparse.Namespace) -> Any:
    config = common_config(args, "producer")
    config.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            # Java's default partitioner: murmur2 of the key (random when null).
            "partitioner": "murmur2_random",
            "message.timeout.ms": int(args.timeout_s * 1000),
            "linger.ms": 5,
        }
    )
    return kafka().Producer(config)


def deliver(producer: Any, records: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Produces records (dicts of Producer.produce arguments), waits for every
    delivery, and returns their reports in input order; raises on any failure."""
    reports: list[dict[str, Any] | None] = [None] * len(records)

    def on_delivery(index: int) -> Callable[[Any, Any], None]:
        def callback(err: Any, msg: Any) -> None:
            if err is not None:
                reports[index] = {"error": str(err)}
            else:
                reports[index] = {"partition": msg.partition(), "offset": msg.offset()}

        return callback

    for index, record in enumerate(records):
        while True:
            try:
                producer.produce(args.topic, on_delivery=on_delivery(index), **record)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
    deadline = time.monotonic() + args.timeout_s + 5
    while producer.flush(1.0) > 0:
        if time.monotonic() > deadline:
            raise ClientError(f"deliveries still pending after {args.timeout_s:g}s")
    failed = [(i, r) for i, r in enumerate(reports) if r is None or "error" in r]
    if failed:
        first_index, first = failed[0]
        reason = "no delivery report" if first is None else first["error"]
        raise ClientError(
            f"{len(failed)} of {len(records)} records were not delivered to {args.topic}; "
            f"record {first_index + 1}: {reason}"
        )
    return [r for r in reports if r is not None]


def cmd_produce(args: argparse.Namespace) -> int:
    msgs = Messages(args)
    try:
        text = sys.stdin.read() if args.jsonl == "-" else Path(args.jsonl).read_text(encoding="utf-8")
    except OSError as err:
        raise ClientError(f"cannot read {args.jsonl}: {err.strerror}") from None
    lines = text.splitlines()
    extra_headers = parse_header_args(args.header)
    events = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        event = msgs.CareEvent()
        try:
            msgs.json_format.Parse(line, event)
        except msgs.json_format.ParseError as err:
            raise ClientError(f"{args.jsonl}:{number}: not a {CARE_EVENT} in the protobuf JSON mapping: {err}") from None
        key = patient_key(event)
        if key is None:
            raise ClientError(f"{args.jsonl}:{number}: no patient key (patient has neither nhsNumber nor localIds)")
        events.append((event, key))
    if not events:
        raise ClientError(f"{args.jsonl}: no events")
    producer = make_producer(args)
    topic_partitions(producer, args)
    records = [
        {
            "key": key.encode(),
            "value": event.SerializeToString(),
            "headers": [
                ("content-type", (CONTENT_TYPE_PREFIX + CARE_EVENT).encode()),
                ("event-id", event.event_id.encode()),
                *extra_headers,
            ],
        }
        for event, key in events
    ]
    reports = deliver(producer, records, args)
    for (event, key), report in zip(events, reports):
        emit({"eventId": event.event_id, "key": key, **report})
    return 0


def cmd_produce_raw(args: argparse.Namespace) -> int:
    try:
        value = None if args.null_value else bytes.fromhex(args.value_hex)
    except ValueError:
        raise ClientError(f"--value-hex {args.value_hex!r} is not hexadecimal") from None
    record: dict[str, Any] = {
        "key": None if args.key is None else args.key.encode(),
        "value": value,
        "headers": parse_header_args(args.header),
    }
    producer = make_producer(args)
    partitions = topic_partitions(producer, args)
    if args.partition is not None:
        if args.partition not in partitions:
            raise ClientError(f"topic {args.topic} has no partition {args.partition} (it has {len(partitions)})")
        record["partition"] = args.partition
    [report] = deliver(producer, [record], args)
    emit({"key": args.key, **report})
    return 0


# --- reading -----------------------------------------------------------------


def read_topic(
    args: argparse.Namespace,
    on_record: Callable[[Any], None],
    done: Callable[[], bool] = lambda: True,
    pending: Callable[[], str] = lambda: "",
) -> None:
    """Reads every partition of args.topic from the beginning, calling
    on_record for each record, until every partition is at its end and done()
    holds. Assigned manually: no group is joined, no offset committed."""
    ck = kafka()
    config = common_config(args, "reader")
    config.update(
        {
            "group.id": f"baton-kafka-client-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_uncommitted" if args.read_uncommitted else "read_committed",
        }
    )
    consumer = ck.Consumer(config)
    try:
        partitions = topic_partitions(consumer, args)
        consumer.assign([ck.TopicPartition(args.topic, p, ck.OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        deadline = time.monotonic() + args.timeout_s
        while not (len(at_end) == len(partitions) and done()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                behind = sorted(set(partitions) - at_end)
                if behind:
                    raise ClientError(
                        f"timed out after {args.timeout_s:g}s before reaching the end of "
                        f"{args.topic} partitions {behind}"
                    )
                raise ClientError(f"timed out after {args.timeout_s:g}s: {pending()}")
            msg = consumer.poll(min(remaining, 0.5))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == ck.KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                if err.fatal() or err.code() in (
                    ck.KafkaError.UNKNOWN_TOPIC_OR_PART,
                    ck.KafkaError._UNKNOWN_PARTITION,
                    ck.KafkaError.TOPIC_AUTHORIZATION_FAILED,
                    ck.KafkaError.OFFSET_OUT_OF_RANGE,
                ):
                    raise ClientError(f"reading {args.topic} partition {msg.partition()}: {err}")
                print(f"reader: kafka: {err}", file=sys.stderr)
                continue
            at_end.discard(msg.partition())
            on_record(msg)
    finally:
        consumer.close()


def record_key(msg: Any) -> str | None:
    key = msg.key()
    return None if key is None else key.decode("utf-8", errors="replace")


def cmd_read_states(args: argparse.Namespace) -> int:
    msgs = Messages(args)
    expected = {k for k in (args.expect_keys or "").split(",") if k}
    latest: dict[str, dict[str, Any]] = {}
    counts = {"records": 0, "states": 0, "other": 0, "tombstones": 0, "undecodable": 0}

    def on_record(msg: Any) -> None:
        counts["records"] += 1
        if message_type(msg.headers()) != CARE_STATE:
            counts["other"] += 1
            return
        if msg.value() is None:
            counts["tombstones"] += 1
            return
        state = msgs.PatientCareState()
        try:
            state.ParseFromString(msg.value())
        except Exception as err:  # DecodeError, but be sure to report it
            counts["undecodable"] += 1
            print(
                f"read-states: partition {msg.partition()} offset {msg.offset()}: "
                f"not a {CARE_STATE}: {err}",
                file=sys.stderr,
            )
            return
        counts["states"] += 1
        key = record_key(msg) or state.patient_key
        held = latest.get(key)
        if held is None or state.version >= held["version"]:
            latest[key] = {
                "key": key,
                "version": state.version,
                "partition": msg.partition(),
                "offset": msg.offset(),
                "state": msgs.json_format.MessageToDict(state),
            }

    def missing() -> list[str]:
        return sorted(expected - latest.keys())

    try:
        read_topic(
            args,
            on_record,
            done=lambda: not missing(),
            pending=lambda: f"expected keys never seen: {','.join(missing())}",
        )
    finally:
        for key in sorted(latest):
            emit(latest[key])
        sys.stdout.flush()
        print("read-states: " + json.dumps(counts, separators=(",", ":")), file=sys.stderr)
    if counts["undecodable"]:
        raise ClientError(f"{counts['undecodable']} records named {CARE_STATE} but did not decode")
    return 0


def cmd_read_records(args: argparse.Namespace) -> int:
    records: list[dict[str, Any]] = []

    def on_record(msg: Any) -> None:
        headers = msg.headers() or []
        value = msg.value()
        kind, timestamp = msg.timestamp()
        records.append(
            {
                "partition": msg.partition(),
                "offset": msg.offset(),
                "key": record_key(msg),
                "value_hex": None if value is None else value.hex(),
                # The last value of a repeated name wins, as in Baton's log.
                "headers": {name: header_text(v) for name, v in headers},
                # Every header in order, byte-exact.
                "header_list": [[name, None if v is None else v.hex()] for name, v in headers],
                "timestamp_ms": timestamp if kind != kafka().TIMESTAMP_NOT_AVAILABLE else None,
            }
        )

    try:
        read_topic(args, on_record)
    finally:
        for record in sorted(records, key=lambda r: (r["partition"], r["offset"])):
            emit(record)
    return 0


def cmd_group_offsets(args: argparse.Namespace) -> int:
    """What a lag tool sees of a consumer group: its committed offset and the
    partition's high watermark, per partition. Reads committed offsets
    (OffsetFetch) without joining the group or committing anything."""
    ck = kafka()
    config = common_config(args, "group-offsets")
    config.update({"group.id": args.group, "enable.auto.commit": False})
    consumer = ck.Consumer(config)
    try:
        partitions = topic_partitions(consumer, args)
        wanted = [ck.TopicPartition(args.topic, p) for p in partitions]
        committed = consumer.committed(wanted, timeout=args.timeout_s)
        for tp in sorted(committed, key=lambda tp: tp.partition):
            if tp.error is not None:
                raise ClientError(f"committed offset of {args.topic} partition {tp.partition}: {tp.error}")
            low, high = consumer.get_watermark_offsets(
                ck.TopicPartition(args.topic, tp.partition), timeout=args.timeout_s
            )
            emit(
                {
                    "partition": tp.partition,
                    # OFFSET_INVALID (-1001): the group committed nothing there.
                    "committed": tp.offset if tp.offset >= 0 else None,
                    "high_watermark": high,
                }
            )
    finally:
        consumer.close()
    return 0


def cmd_gen(args: argparse.Namespace) -> int:
    proto_dir = Path(args.proto_dir)
    if not proto_dir.is_dir():
        raise ClientError(f"proto directory not found: {proto_dir}")
    out = Path(args.out)
    modules = generate(proto_dir, out)
    sys.path.insert(0, str(out))
    for name in modules:  # prove the generated imports resolve
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ClientError(f"generated module {name} does not import: {err}") from None
    for name in modules:
        print(name)
    return 0


# --- command line ------------------------------------------------------------


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baton_kafka_client.py",
        description="An independent Kafka client for Baton's topics (confluent-kafka, "
        "protobuf classes generated from proto/). JSON lines on stdout, errors on stderr.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=description)

    def protos(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--proto-dir",
            default=os.environ.get("BATON_PROTO_DIR", str(DEFAULT_PROTO_DIR)),
            help="the .proto files to generate message classes from (default: %(default)s)",
        )
        p.add_argument(
            "--pb2-dir",
            help="use modules generated before with `gen --out DIR` instead of "
            "generating them (cached under .tools/pb2/ by the proto files' digest)",
        )

    def kafka_args(p: argparse.ArgumentParser, timeout_help: str) -> None:
        p.add_argument("--bootstrap", required=True, metavar="HOST:PORT", help="the broker, e.g. 127.0.0.1:9092")
        p.add_argument("--topic", required=True, help="an existing topic (never created by this client)")
        p.add_argument(
            "--timeout-s",
            type=positive_float,
            default=DEFAULT_TIMEOUT_S,
            metavar="N",
            help=f"{timeout_help} (default: {DEFAULT_TIMEOUT_S:g})",
        )

    def reader_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--read-uncommitted",
            action="store_true",
            help="also read records of open or aborted transactions (default: read_committed)",
        )

    gen = add(
        "gen",
        "generate the *_pb2.py modules from proto/",
        "Generates the Python modules (*_pb2.py) of every .proto file under --proto-dir into "
        "--out and checks that they import. Prints the module names. The other commands do "
        "this themselves into a cache, so this is only needed to look at or reuse the modules.",
    )
    gen.add_argument("--proto-dir", default=str(DEFAULT_PROTO_DIR), help="default: %(default)s")
    gen.add_argument("--out", required=True, help="directory to write the modules into")
    gen.set_defaults(run=cmd_gen)

    produce = add(
        "produce",
        "publish CareEvents from a JSON-lines file",
        f"Publishes each line of --jsonl, a {CARE_EVENT} in the protobuf JSON mapping (as "
        "docs/examples/events.jsonl), serialized as protobuf, keyed by the patient key (the "
        "NHS number when patient.nhsNumber is set, else authority:value of the first local "
        "id), partitioned by murmur2 of the key like Kafka's Java client, with the headers "
        f"content-type: {CONTENT_TYPE_PREFIX}{CARE_EVENT} and event-id. Idempotent producer, "
        "acks=all. Every line is parsed before anything is sent. Prints one line per event: "
        '{"eventId","key","partition","offset"}. Exits 1 if any delivery failed.',
    )
    kafka_args(produce, "how long a delivery may take")
    produce.add_argument("--jsonl", required=True, metavar="FILE", help="events, one per line ('-' for stdin)")
    produce.add_argument(
        "--header", action="append", metavar="NAME=VALUE", help="an extra header on every record (repeatable)"
    )
    protos(produce)
    produce.set_defaults(run=cmd_produce)

    raw = add(
        "produce-raw",
        "publish one arbitrary record (e.g. a poison record)",
        "Publishes one record with the given key, value bytes and headers, partitioned by "
        'murmur2 of the key unless --partition says. Prints {"key","partition","offset"}.',
    )
    kafka_args(raw, "how long the delivery may take")
    raw.add_argument("--key", help="the record key, as text (omit for a null key)")
    value = raw.add_mutually_exclusive_group(required=True)
    value.add_argument("--value-hex", metavar="HEX", help="the value bytes in hex ('' for empty)")
    value.add_argument("--null-value", action="store_true", help="a null value (a tombstone)")
    raw.add_argument("--header", action="append", metavar="NAME=VALUE", help="a header (repeatable, in order)")
    raw.add_argument("--partition", type=int, metavar="N", help="this partition instead of the key's")
    raw.set_defaults(run=cmd_produce_raw)

    states = add(
        "read-states",
        "read the latest PatientCareState of each key",
        "Reads every partition of --topic from the beginning to its end (no consumer group, "
        f"nothing committed). Records whose content-type names {CARE_STATE} are decoded and "
        "the one with the highest version of each key kept; other records are counted and "
        'skipped. Prints one line per key, sorted: {"key","version","partition","offset",'
        '"state"} with state in the protobuf JSON mapping; a summary of counts goes to stderr. '
        "With --expect-keys it keeps reading until every key named was seen. Exits 1 when "
        "the end is not reached, or an expected key not seen, within --timeout-s, naming "
        "them, or when a state record does not decode.",
    )
    kafka_args(states, "give up after this long")
    states.add_argument("--expect-keys", metavar="K1,K2,...", help="patient keys that must be present")
    reader_args(states)
    protos(states)
    states.set_defaults(run=cmd_read_states)

    records = add(
        "read-records",
        "dump every record of a topic",
        "Reads every partition of --topic from the beginning to its end (no consumer group, "
        "nothing committed) and prints every record, sorted by partition and offset: "
        '{"partition","offset","key","value_hex","headers":{name: value as text},'
        '"header_list":[[name, value hex], ...],"timestamp_ms"}. Where a header name repeats, '
        "headers holds the last value and header_list all of them.",
    )
    kafka_args(records, "give up after this long")
    reader_args(records)
    records.set_defaults(run=cmd_read_records)

    group = add(
        "group-offsets",
        "a consumer group's committed offsets, as lag tools see them",
        "Reads the offsets consumer group --group has committed in --topic (OffsetFetch, as "
        "kafka-consumer-groups --describe does), without joining the group or committing "
        'anything, and each partition\'s high watermark. Prints one line per partition: '
        '{"partition","committed","high_watermark"}, committed null where the group has none.',
    )
    kafka_args(group, "how long each request may take")
    group.add_argument("--group", required=True, help="the consumer group, e.g. baton-projector")
    group.set_defaults(run=cmd_group_offsets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ClientError as err:
        print(f"{args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
