"""A call as the board shows it is made once per ticket, recall and counter (ADR 0202), and is
made anew as soon as any of what it shows changes: a recall, a new call, another counter name."""

from __future__ import annotations

from pathlib import Path

from giliran.catalogue import load_catalogue
from giliran.settings import Settings
from services.queue.board import call_shown

SITE = load_catalogue(Settings().catalogue_dir).site("cikarang-utara")


def called(**fields: object) -> dict[str, object]:
    return {
        "_id": "r1-KIA", "site": "cikarang-utara", "session_id": "s1", "service": "KIA",
        "number": "K-007", "status": "called", "counter": "2", "recalls": 0,
        "called_at": "20261207T090000000000Z", "last_call_at": "20261207T090000000000Z",
        **fields,
    }  # fmt: skip


def test_the_same_call_is_shown_from_one_making_and_a_recall_is_a_new_announcement() -> None:
    assert SITE is not None
    first = call_shown(SITE, called())
    assert call_shown(SITE, called()) is first
    assert first.spoken == "Nomor antrean K nol nol tujuh, silakan ke loket dua"
    recalled = call_shown(SITE, called(recalls=1, last_call_at="20261207T090100000000Z"))
    assert (recalled.call_id, recalled.recall) == ("r1-KIA:1", 1)
    assert recalled.called_at > first.called_at and first.call_id == "r1-KIA:0"
    elsewhere = call_shown(SITE, called(counter="3"))
    assert elsewhere.counter == "3" and elsewhere.spoken.endswith("loket tiga")


def test_a_renamed_counter_is_said_by_its_new_name(tmp_path: Path) -> None:
    """Keyed by the names it says, not only by ids: another catalogue (a site renamed its
    counters) is never answered with a call made from the old one."""
    source = Settings().catalogue_dir
    for file in source.iterdir():
        text = file.read_text()
        if file.name == "cikarang-utara.yaml":
            text = text.replace('"Loket 2"', '"Meja 2"')
        (tmp_path / file.name).write_text(text)
    renamed = load_catalogue(tmp_path).site("cikarang-utara")
    assert SITE is not None and renamed is not None
    assert call_shown(SITE, called()).counter_name == "Loket 2"
    assert call_shown(renamed, called()).spoken.endswith("silakan ke meja dua")
