"""Pure gateway rules: phone numbers masked in any writing, each gateway's documented answers
and delivery reports read right, report keys and signatures."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from giliran.privacy import scrub
from services.notify.gateways import (
    Answer,
    Outcome,
    fonnte_receipts,
    hub_signature,
    infobip_receipts,
    judge_fonnte,
    judge_infobip,
    judge_whatsapp_cloud,
    judge_zenziva,
    receipt_key,
    signature_valid,
    whatsapp_cloud_receipts,
)
from tests.fakes.gateway import receipt_body
from tests.fakes.whatsapp_cloud import FakeWhatsAppCloud


@pytest.mark.parametrize(
    "written",
    ["081234567890", "+6281234567890", "6281234567890", "0812-3456-7890", "0812 3456 7890",
     "+62 812 3456 7890", "+62-812-3456-7890", "(+62) 812 3456 7890", "62 812-3456-7890",
     "0812.3456.7890", "%2B6281234567890"],
)  # fmt: skip
def test_a_number_is_masked_in_every_writing(written: str) -> None:
    assert scrub(f"nomor {written} ditolak") == "nomor +6281******890 ditolak"


def test_other_numbers_and_addresses() -> None:
    # A message id, an amount, a long digit run are not phone numbers.
    assert scrub("id 1234567890123, Rp 30000, ref 628123456789012345") == (
        "id 1234567890123, Rp 30000, ref 628123456789012345"
    )
    assert scrub("recipient budi.santoso@example.go.id refused") == (
        "recipient b***@example.go.id refused"
    )


def test_a_status_link_quoted_back_loses_its_token() -> None:
    # The token is the citizen's bearer link (status page, survey, check-in by QR).
    token = "Zq3_x-9a8B7c6D5e4F3g2H1i"
    said = f"pesan ditolak: Cek status https://giliran.example/s/{token} (id 42)"
    assert scrub(said) == "pesan ditolak: Cek status https://giliran.example/s/… (id 42)"
    encoded = f"text=Cek+https%3A%2F%2Fgiliran.example%2Fs%2F{token}"
    assert token not in scrub(encoded) and scrub(encoded).endswith("%2Fs%2F…")


@given(
    st.text(alphabet="0123456789 -+()", max_size=40), st.from_regex(r"8[0-9]{9,10}", fullmatch=True)
)
def test_no_full_number_survives_whatever_surrounds_it(noise: str, subscriber: str) -> None:
    for written in (f"0{subscriber}", f"+62{subscriber}", f"62 {subscriber}"):
        masked = scrub(f"x {noise} :{written}: {noise} x")
        assert subscriber not in masked.replace(" ", "").replace("-", "")


def test_fonnte_answers() -> None:
    taken = json.dumps(
        {
            "detail": "success! message in queue",
            "id": ["80367170"],
            "process": "pending",
            "status": True,
            "target": ["6281234567890"],
        }
    )
    assert judge_fonnte(200, taken).answer is Answer.ACCEPTED
    assert judge_fonnte(200, taken).gateway_id == "80367170"
    refused = judge_fonnte(
        200, json.dumps({"reason": "target 081234567890 invalid", "status": False})
    )
    assert refused.answer is Answer.REFUSED
    assert refused.reason == "refused: target +6281******890 invalid"
    assert judge_fonnte(200, "<html>oops</html>").answer is Answer.REFUSED  # never "sent"
    assert judge_fonnte(502, "bad gateway").answer is Answer.RETRY


def test_zenziva_answers() -> None:
    ok = {"messageId": 3057239, "to": "+628999878046", "status": "1", "text": "Success"}
    assert judge_zenziva(200, json.dumps(ok)).gateway_id == "3057239"
    no = {"messageId": 0, "to": "081234567890", "status": "0", "text": "Saldo tidak cukup"}
    verdict = judge_zenziva(200, json.dumps(no))
    assert (verdict.answer, verdict.reason) == (Answer.REFUSED, "refused: Saldo tidak cukup")


def test_infobip_answers_and_reports() -> None:
    def answer(group: str, name: str) -> str:
        status = {"groupName": group, "name": name}
        return json.dumps({"messages": [{"messageId": "m1", "to": "628123", "status": status}]})

    assert judge_infobip(200, answer("PENDING", "PENDING_ACCEPTED")).gateway_id == "m1"
    rejected = judge_infobip(200, answer("REJECTED", "REJECTED_DESTINATION"))
    assert (rejected.answer, rejected.reason) == (Answer.REFUSED, "refused: REJECTED_DESTINATION")
    outcomes = {
        kind: [r.outcome for r in infobip_receipts(receipt_body("infobip", "m1", kind))]
        for kind in ("delivered", "undelivered", "operator", "pending")
    }
    assert outcomes == {
        "delivered": [Outcome.DELIVERED],
        "undelivered": [Outcome.UNDELIVERED],
        "operator": [None],  # DELIVERED_TO_OPERATOR is not yet the handset
        "pending": [None],
    }


def test_fonnte_reports() -> None:
    read = [r.outcome for r in fonnte_receipts(receipt_body("fonnte", "80367170", "delivered"))]
    invalid = list(fonnte_receipts(receipt_body("fonnte", "80367170", "undelivered")))
    assert read == [Outcome.DELIVERED]
    assert (invalid[0].outcome, invalid[0].reason) == (Outcome.UNDELIVERED, "invalid")
    assert list(fonnte_receipts({"device": "x"})) == []  # names no message


def test_whatsapp_cloud_answers_reports_and_signatures() -> None:
    wa = FakeWhatsAppCloud()
    assert (
        judge_whatsapp_cloud(
            200, json.dumps({"messages": [{"id": "wamid.X", "message_status": "accepted"}]})
        ).gateway_id
        == "wamid.X"
    )
    throttled = {"error": {"code": 130429, "message": "Rate limit hit"}}
    assert judge_whatsapp_cloud(400, json.dumps(throttled)).answer is Answer.RETRY
    unknown = {"error": {"code": 132001, "message": "Template name does not exist"}}
    assert judge_whatsapp_cloud(404, json.dumps(unknown)).answer is Answer.REFUSED
    failed = list(whatsapp_cloud_receipts(wa.status_body("wamid.X", "failed")))
    assert failed[0].outcome is Outcome.UNDELIVERED
    assert failed[0].reason == "131026: Message undeliverable to +6281******890"
    assert failed[0].sender == wa.phone_number_id
    raw = json.dumps(wa.status_body("wamid.X", "read")).encode()
    assert hub_signature(wa.app_secret, raw) == wa.sign(raw)
    assert signature_valid(wa.app_secret, raw, wa.sign(raw))
    assert not signature_valid(wa.app_secret, raw + b" ", wa.sign(raw))
    assert not signature_valid(wa.app_secret, raw, "sha256=ünïcode")
    assert not signature_valid(wa.app_secret, raw, None)


def test_report_keys_differ_per_channel_and_site() -> None:
    keys = {receipt_key("s" * 16, c, s) for c in ("wa", "sms") for s in ("a", "b")}
    assert len(keys) == 4 and all(len(k) == 32 for k in keys)
