#!/usr/bin/env bash
# Creates Baton's Kafka topics, for operators who pre-create topics rather
# than let the services create them on start-up. Idempotent.
#
#   BOOTSTRAP=kafka-1:9092 PARTITIONS=12 REPLICATION_FACTOR=3 deploy/topics.sh
#
# The partition count of baton.care-events.v1 can never change afterwards:
# a patient's partition is murmur2(patient key) mod the count, and per-patient
# order depends on it. Choose it for the largest deployment you expect.
set -euo pipefail

BOOTSTRAP="${BOOTSTRAP:-localhost:9092}"
PARTITIONS="${PARTITIONS:-8}"
REPLICATION_FACTOR="${REPLICATION_FACTOR:-3}"
MIN_INSYNC="${MIN_INSYNC_REPLICAS:-2}"
KAFKA_TOPICS="${KAFKA_TOPICS:-kafka-topics.sh}"

create() {
    local topic="$1"
    shift
    "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$topic" --partitions "$PARTITIONS" --replication-factor "$REPLICATION_FACTOR" \
        --config "min.insync.replicas=$MIN_INSYNC" "$@"
}

# The log is the record: nothing is ever deleted by age or size.
create baton.care-events.v1 --config cleanup.policy=delete --config retention.ms=-1 --config retention.bytes=-1

# The latest PatientCareState per patient key, for query replicas and any consumer.
create baton.care-state.v1 --config cleanup.policy=compact --config min.compaction.lag.ms=60000

# Records the projector could not apply: original bytes, reason and source position in headers.
create baton.dead-letters.v1 --config cleanup.policy=delete --config retention.ms=-1 --config retention.bytes=-1

# The audit log: who read whose record and every refused call, kept forever.
create baton.audit.v1 --config cleanup.policy=delete --config retention.ms=-1 --config retention.bytes=-1
