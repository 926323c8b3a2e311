"""Finds NIK-like and phone-like strings in log files (personal data must never be logged), and
reads every message of every JetStream stream for the retention scans."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import nats
from nats.js.errors import NotFoundError

# A NIK is 16 digits; an Indonesian mobile number starts 08, 628 or +628 and may be written with
# spaces or dashes. Neither may touch other digits (ports, sequence numbers, timestamps).
NIK_LIKE = re.compile(r"(?<!\d)\d{16}(?!\d)")
PHONE_LIKE = re.compile(r"(?<![\d+])(?:\+62|62|0)8\d{1,3}[-\s]?\d{3,4}[-\s]?\d{3,5}(?!\d)")


def personal_data_in(paths: Iterable[Path]) -> list[str]:
    """`file:line: match` for every hit; empty when the logs are clean."""
    hits: list[str] = []
    for path in paths:
        if not path.exists():
            continue
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                for pattern in (NIK_LIKE, PHONE_LIKE):
                    for match in pattern.finditer(line):
                        hits.append(f"{path.name}:{number}: {match.group(0)}")
    return hits


async def stream_messages(client: nats.NATS) -> dict[str, list[bytes]]:
    """Every message (headers, then body) of every stream on the server, by stream name: a
    stream added later is scanned too, whatever it is called."""
    js = client.jetstream()
    found: dict[str, list[bytes]] = {}
    for info in await js.streams_info():
        name = info.config.name or ""
        found[name] = []
        for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
            try:
                msg = await js.get_msg(name, seq)
            except NotFoundError:  # deleted or expired
                continue
            headers = json.dumps(msg.headers or {}).encode()
            found[name].append(headers + b"\n" + (msg.data or b""))
    return found
