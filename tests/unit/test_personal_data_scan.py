"""The log scan of the e2e suites can fail: it finds planted NIKs and phones, not log noise."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.personal_data import personal_data_in


def test_planted_nik_and_phones_are_found(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    log.write_text(
        "2026-11-27 23:49:21,990 INFO [giliran.runtime] bus connected on 127.0.0.1:41234\n"
        "2026-11-27 23:49:22,001 INFO registered 3216094512900001 for KTP\n"
        "2026-11-27 23:49:22,002 INFO sms to 0812-3456-7890\n"
        "2026-11-27 23:49:22,003 INFO wa to +6281234567890\n"
        "2026-11-27 23:49:22,004 INFO sms to 081234567890\n"
    )
    found = personal_data_in([log])
    assert [h.split(": ", 1)[1] for h in found] == [
        "3216094512900001",
        "0812-3456-7890",
        "+6281234567890",
        "081234567890",
    ]


def test_ordinary_log_lines_are_not_flagged(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    log.write_text(
        "2026-08-12 08:12:34,567 WARNING [giliran.bus] queue-requests: seq 1234567 id "
        "01JD3K8Z7W9X0Y1Z2A3B4C5D6E masked +6281*****890 nik ************0001 port 38081\n"
        "[28207] 2026/11/27 23:47:57.589664 [INF] Listening for clients on 0.0.0.0:4222\n"
    )
    assert personal_data_in([log]) == []
