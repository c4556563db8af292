#!/usr/bin/env python3
"""Reads an HL7 v2 acknowledgement with python-hl7 (the `hl7` package), an
independent parser: none of Baton's code. Baton's end-to-end tests pass it
the ACK Baton sent over MLLP, to show that a receiver that has never heard
of Baton's ZBT segment still reads the ACK.

    .tools/venv/bin/python tests/python/baton_hl7_ack.py < ack.hl7

Prints one JSON object: the segment names, MSH-9, MSA-1, MSA-2, and ZBT-1
when present. Exits non-zero when the message does not parse as HL7.
"""

from __future__ import annotations

import json
import sys

import hl7


def main() -> int:
    text = sys.stdin.read()
    if not hl7.ishl7(text):
        print("error: not an HL7 v2 message", file=sys.stderr)
        return 1
    try:
        message = hl7.parse(text)
    except hl7.ParseException as err:
        print(f"error: python-hl7 cannot parse it: {err}", file=sys.stderr)
        return 1
    names = [str(segment[0]) for segment in message]
    msa = message.segment("MSA")
    answer = {
        "segments": names,
        "message_type": str(message.segment("MSH")[9]),
        "ack_code": str(msa[1]),
        "control_id": str(msa[2]),
    }
    zbt = [segment for segment in message if str(segment[0]) == "ZBT"]
    if zbt:
        answer["consistency_token"] = str(zbt[0][1])
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
