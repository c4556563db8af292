#!/usr/bin/env python3
"""An independent gRPC client for Baton's APIs: none of Baton's own code.

Stubs are generated from the repository's proto/ with grpcio-tools at run time
(see baton_protos.py). Baton's end-to-end tests run it against a running
backbone (`baton up`) to prove that any gRPC client, not only Baton's own,
can publish and read everything the query API offers:

    .tools/venv/bin/python tests/python/baton_grpc_client.py exercise \\
        --ingest 127.0.0.1:50051 --query 127.0.0.1:50052

`exercise` publishes one patient's story and another's referral through
CareEventIngest.Publish, then calls every CareStateQuery RPC — GetCareState
with the consistency token, ListCohort with paging, WatchCohort, GetTimeline,
GetCareStateAsOf on both axes — and the error cases, checking each answer. It
prints one JSON line per call on stdout and exits non-zero, naming the call,
when an answer is not what the contract promises.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baton_protos import DEFAULT_PROTO_DIR, ClientError, load  # noqa: E402

HOUR = 3600
DAY = 86400
# 2026-03-02T00:00:00Z
T0 = 1_772_409_600
ORGANISATION = "RXX"
VIRTUAL_WARD = "VW-PY-RXX"
FRAILTY_SERVICE = "FRAILTY-PY-RXX"


class Contract:
    """The generated modules this client uses."""

    def __init__(self, proto_dir: Path) -> None:
        (
            self.events,
            self.types,
            self.state,
            self.ingest,
            self.ingest_grpc,
            self.query,
            self.query_grpc,
        ) = load(
            proto_dir,
            None,
            "baton.events.v1.events_pb2",
            "baton.events.v1.types_pb2",
            "baton.state.v1.state_pb2",
            "baton.ingest.v1.ingest_pb2",
            "baton.ingest.v1.ingest_pb2_grpc",
            "baton.query.v1.query_pb2",
            "baton.query.v1.query_pb2_grpc",
        )


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def check(condition: bool, rpc: str, what: str) -> None:
    if not condition:
        raise ClientError(f"{rpc}: {what}")


class Story:
    """Builds valid CareEvents the way any producer would."""

    def __init__(self, c: Contract) -> None:
        self.c = c

    def event(self, nhs: str, seconds: int, encounter: str = "", recorded: int | None = None):
        e = self.c.events.CareEvent()
        e.event_id = str(uuid.uuid4())
        e.patient.nhs_number = nhs
        e.occurred_at.FromSeconds(seconds)
        e.recorded_at.FromSeconds(recorded if recorded is not None else seconds)
        e.source.system = "PY-CLIENT"
        e.source.organisation = ORGANISATION
        e.encounter_id = encounter
        return e

    def ward(self, location, name: str) -> None:
        location.point_of_care = name
        location.facility = "MAIN"
        location.organisation = ORGANISATION

    def admitted(self, nhs: str, visit: str, at: int, ward: str):
        e = self.event(nhs, at, visit)
        self.ward(e.admitted.location, ward)
        e.admitted.patient_class = self.c.types.PATIENT_CLASS_INPATIENT
        return e

    def transferred(self, nhs: str, visit: str, at: int, ward: str):
        e = self.event(nhs, at, visit)
        self.ward(e.transferred.to, ward)
        return e

    def frailty(self, nhs: str, at: int, score: int):
        e = self.event(nhs, at)
        e.frailty_assessed.clinical_frailty_scale = score
        return e

    def discharged_to_virtual_ward(self, nhs: str, visit: str, at: int):
        e = self.event(nhs, at, visit)
        e.discharged.method = self.c.types.DISCHARGE_METHOD_CLINICAL_ADVICE
        e.discharged.destination = self.c.types.DISCHARGE_DESTINATION_VIRTUAL_WARD
        return e

    def virtual_ward(self, nhs: str, at: int):
        e = self.event(nhs, at)
        e.episode_started.episode_id = "VW-EP-1"
        e.episode_started.type = self.c.types.EPISODE_TYPE_VIRTUAL_WARD
        e.episode_started.service.code = VIRTUAL_WARD
        e.episode_started.service.organisation = ORGANISATION
        e.episode_started.pathway = self.c.types.PATHWAY_FRAILTY
        return e

    def care_plan(self, nhs: str, at: int, version: int):
        e = self.event(nhs, at)
        e.care_plan_changed.care_plan_id = "CP-PY"
        e.care_plan_changed.version = version
        e.care_plan_changed.status = self.c.types.CARE_PLAN_STATUS_ACTIVE
        return e

    def referral(self, nhs: str, at: int):
        e = self.event(nhs, at)
        e.referral_requested.referral_id = "REF-PY-1"
        e.referral_requested.service.code = FRAILTY_SERVICE
        e.referral_requested.service.organisation = ORGANISATION
        e.referral_requested.respond_by.FromSeconds(at + DAY)
        return e


def grpc():
    try:
        import grpc as module
    except ImportError:
        raise ClientError("grpcio is not installed: run scripts/setup.sh and use .tools/venv/bin/python") from None
    return module


def channel(g: Any, args: argparse.Namespace, target: str) -> Any:
    """A plaintext channel, or with --ca a TLS one (presenting --cert/--key
    when given), sending --token-file's token as a bearer token."""
    if not args.ca:
        if args.token_file:
            raise ClientError("--token-file needs --ca: a bearer token is only sent over TLS")
        return g.insecure_channel(target)
    credentials = g.ssl_channel_credentials(
        root_certificates=Path(args.ca).read_bytes(),
        private_key=Path(args.key).read_bytes() if args.key else None,
        certificate_chain=Path(args.cert).read_bytes() if args.cert else None,
    )
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
        credentials = g.composite_channel_credentials(credentials, g.access_token_call_credentials(token))
    return g.secure_channel(target, credentials)


def cmd_exercise(args: argparse.Namespace) -> int:
    g = grpc()
    c = Contract(Path(args.proto_dir))
    story = Story(c)
    q = c.query
    timeout = args.timeout_s
    ingest = c.ingest_grpc.CareEventIngestStub(channel(g, args, args.ingest))
    query = c.query_grpc.CareStateQueryStub(channel(g, args, args.query))
    patient_a, patient_b = args.patients

    def ref(nhs: str):
        return q.PatientRef(nhs_number=nhs)

    # WatchCohort first, so the board sees the patient join.
    watch_filter = q.CohortFilter(virtual_ward=VIRTUAL_WARD)
    stream = query.WatchCohort(q.WatchCohortRequest(filter=watch_filter), timeout=timeout)
    messages: queue.Queue = queue.Queue()

    def read_stream() -> None:
        try:
            for message in stream:
                messages.put(message)
        except g.RpcError as err:
            messages.put(err)

    threading.Thread(target=read_stream, daemon=True).start()

    def next_message():
        item = messages.get(timeout=timeout)
        if isinstance(item, Exception):
            raise ClientError(f"WatchCohort: the stream failed: {item.code()} {item.details()}")
        return item

    first = next_message()
    check(first.change == q.COHORT_CHANGE_SYNCED, "WatchCohort", f"expected SYNCED of an empty ward first, got {first}")
    emit({"rpc": "WatchCohort", "synced_members": 0})

    events = [
        story.admitted(patient_a, "PYV1", T0, "AMU"),
        story.transferred(patient_a, "PYV1", T0 + 2 * HOUR, "WARD-7"),
        story.frailty(patient_a, T0 + 3 * HOUR, 7),
        story.discharged_to_virtual_ward(patient_a, "PYV1", T0 + DAY),
        story.virtual_ward(patient_a, T0 + DAY + HOUR),
        story.care_plan(patient_a, T0 + DAY + 2 * HOUR, 1),
        story.admitted(patient_b, "PYV2", T0, "WARD-9"),
        story.referral(patient_b, T0 + HOUR),
    ]
    published = ingest.Publish(c.ingest.PublishRequest(events=events), timeout=timeout)
    token = published.consistency_token
    check(len(published.events) == len(events), "Publish", f"answered for {len(published.events)} of {len(events)} events")
    emit({"rpc": "Publish", "events": len(published.events), "token": token})

    state = query.GetCareState(q.GetCareStateRequest(patient=ref(patient_a), consistency_token=token), timeout=timeout).state
    check(state.setting == c.state.CARE_SETTING_VIRTUAL_WARD, "GetCareState", f"setting {state.setting}, expected virtual ward")
    check(state.care_plan.version == 1, "GetCareState", "care plan version 1 expected")
    emit({"rpc": "GetCareState", "patient_key": state.patient_key, "setting": "virtual-ward"})

    on_ward = query.ListCohort(q.ListCohortRequest(filter=watch_filter), timeout=timeout)
    check([s.patient_key for s in on_ward.states] == [patient_a], "ListCohort", f"virtual ward lists {[s.patient_key for s in on_ward.states]}")
    referred = query.ListCohort(
        q.ListCohortRequest(filter=q.CohortFilter(referral=q.ReferralCriterion(service=FRAILTY_SERVICE))),
        timeout=timeout,
    )
    check([s.patient_key for s in referred.states] == [patient_b], "ListCohort", "the open referral lists patient B")
    paged, page_token = [], ""
    while True:
        page = query.ListCohort(
            q.ListCohortRequest(filter=q.CohortFilter(organisation=ORGANISATION), page_size=1, page_token=page_token),
            timeout=timeout,
        )
        paged.extend(s.patient_key for s in page.states)
        page_token = page.next_page_token
        if not page_token:
            break
    check(sorted(paged) == sorted([patient_a, patient_b]), "ListCohort", f"paging one at a time gave {paged}")
    emit({"rpc": "ListCohort", "virtual_ward": [patient_a], "referred": [patient_b], "paged": len(paged)})

    while True:
        change = next_message()
        if change.patient_key == patient_a and change.change in (q.COHORT_CHANGE_JOINED, q.COHORT_CHANGE_CHANGED):
            break
    check(change.state.setting == c.state.CARE_SETTING_VIRTUAL_WARD, "WatchCohort", "the joined state is on the virtual ward")
    emit({"rpc": "WatchCohort", "joined": patient_a})
    stream.cancel()

    timeline = query.GetTimeline(q.GetTimelineRequest(patient=ref(patient_a), consistency_token=token), timeout=timeout)
    kinds = [entry.event.WhichOneof("payload") for entry in timeline.entries]
    check(
        kinds == ["admitted", "transferred", "frailty_assessed", "discharged", "episode_started", "care_plan_changed"],
        "GetTimeline",
        f"events in clinical order expected, got {kinds}",
    )
    emit({"rpc": "GetTimeline", "entries": kinds})

    def as_of(seconds: int, axis: int):
        request = q.GetCareStateAsOfRequest(patient=ref(patient_a), axis=axis)
        request.time.FromSeconds(seconds)
        return query.GetCareStateAsOf(request, timeout=timeout)

    then = as_of(T0 + 4 * HOUR, q.TIME_AXIS_CLINICAL)
    check(then.state.setting == c.state.CARE_SETTING_HOSPITAL, "GetCareStateAsOf", "in hospital at four hours")
    check(then.state.active_encounter.location.point_of_care == "WARD-7", "GetCareStateAsOf", "on WARD-7 at four hours")
    known = as_of(T0 + HOUR, q.TIME_AXIS_RECORDED)
    check(known.events_applied == 1, "GetCareStateAsOf", f"one event recorded by one hour, got {known.events_applied}")
    emit({"rpc": "GetCareStateAsOf", "clinical_ward": "WARD-7", "recorded_events": known.events_applied})

    def refused(call, request, code, field: str | None, rpc: str) -> None:
        try:
            call(request, timeout=timeout)
        except g.RpcError as err:
            check(err.code() == code, rpc, f"expected {code}, got {err.code()}: {err.details()}")
            if field is not None:
                check(field in (err.details() or ""), rpc, f"the message should name {field}: {err.details()}")
            emit({"rpc": rpc, "refused": err.code().name, "message": err.details()})
            return
        raise ClientError(f"{rpc}: expected {code}, but the call succeeded")

    refused(
        query.GetCareState,
        q.GetCareStateRequest(patient=ref("9434765918")),
        g.StatusCode.INVALID_ARGUMENT,
        "patient.nhs_number",
        "GetCareState",
    )
    refused(
        query.GetCareState,
        q.GetCareStateRequest(patient=ref("4010232137" if "4010232137" not in args.patients else "9990000018")),
        g.StatusCode.NOT_FOUND,
        None,
        "GetCareState",
    )
    refused(
        query.ListCohort,
        q.ListCohortRequest(filter=q.CohortFilter(min_frailty_score=12)),
        g.StatusCode.INVALID_ARGUMENT,
        "filter.min_frailty_score",
        "ListCohort",
    )
    refused(
        query.GetCareStateAsOf,
        q.GetCareStateAsOfRequest(patient=ref(patient_a)),
        g.StatusCode.INVALID_ARGUMENT,
        "time",
        "GetCareStateAsOf",
    )
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proto-dir", default=str(DEFAULT_PROTO_DIR), help="where the .proto files are (default: the repository's proto/)")
    commands = parser.add_subparsers(dest="command", required=True)
    exercise = commands.add_parser("exercise", help="publish a story and call every query RPC, checking each answer")
    exercise.add_argument("--ingest", required=True, help="HOST:PORT of the ingest API")
    exercise.add_argument("--query", required=True, help="HOST:PORT of the query API")
    exercise.add_argument(
        "--patients",
        nargs=2,
        default=["9434765919", "9990000026"],
        metavar=("NHS_A", "NHS_B"),
        help="two NHS numbers Baton has no events about yet",
    )
    exercise.add_argument("--timeout-s", type=float, default=30.0, help="deadline of each call (default 30)")
    exercise.add_argument("--ca", help="PEM file of the CA to trust: speak TLS (default: plaintext)")
    exercise.add_argument("--cert", help="PEM file of a client certificate to present (with --key)")
    exercise.add_argument("--key", help="PEM file of the client certificate's private key")
    exercise.add_argument("--token-file", help="file holding a bearer token (a JWT) to send with every call")
    args = parser.parse_args(argv)
    try:
        return cmd_exercise(args)
    except ClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
