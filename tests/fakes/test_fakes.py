"""Self-tests for the fake gateway and fake SMTP server, over real HTTP and SMTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import aiosmtplib
import httpx
import pytest

from tests.fakes.gateway import FakeGateway
from tests.fakes.smtp import FakeSmtp
from tests.fakes.whatsapp_cloud import FakeWhatsAppCloud


async def test_ok_records_form_and_json() -> None:
    async with FakeGateway() as gw, httpx.AsyncClient(base_url=gw.url) as client:
        assert (await client.get("/healthz")).status_code == 200
        r1 = await client.post(
            "/api/sendsms/", data={"userkey": "u", "nohp": "0812", "pesan": "Nomor A-001"}
        )
        r2 = await client.post(
            "/sms/2/text/advanced",
            json={"messages": [{"destinations": [{"to": "62812"}]}]},
            headers={"Authorization": "App secret"},
        )
        assert (r1.status_code, r2.status_code) == (200, 200)
        assert r1.json()["status"] is True
        assert (await client.get("/elsewhere")).status_code == 405

        first, second = gw.received
        assert first.method == "POST" and first.path == "/api/sendsms/"
        assert first.form == {"userkey": "u", "nohp": "0812", "pesan": "Nomor A-001"}
        assert first.json is None and first.status == 200
        assert first.param("pesan") == "Nomor A-001"
        assert second.json["messages"][0]["destinations"][0]["to"] == "62812"
        assert second.headers["authorization"] == "App secret"
        assert second.at >= first.at and second.wall > 0
        assert gw.count() == 2 and gw.count("/sms/") == 1  # /healthz is not recorded
        assert len(await gw.wait_for(2, within=1)) == 2


async def test_respond_ok_custom_body_and_prefix_scope() -> None:
    async with FakeGateway() as gw, httpx.AsyncClient(base_url=gw.url) as client:
        gw.respond_ok(201, {"detail": "queued"}, path_prefix="/wablas")
        gw.fail_always(503)
        r_wa = await client.post("/wablas/api/send-message", json={"phone": "62812"})
        r_sms = await client.post("/zenziva/api/sendsms", data={"nohp": "0812"})
        assert (r_wa.status_code, r_wa.json()) == (201, {"detail": "queued"})
        assert r_sms.status_code == 503
        gw.respond_ok()
        assert (await client.post("/zenziva/api/sendsms")).status_code == 200


async def test_allow_get_records_query() -> None:
    async with FakeGateway(allow_get=True) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        r = await client.get("/api/sendsms/", params={"nohp": "0812", "ref": "q-1"})
        assert r.status_code == 200
        (msg,) = await gw.wait_for(1, within=1)
        assert (msg.method, msg.param("nohp"), msg.ref) == ("GET", "0812", "q-1")
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert gw.count() == 1


async def test_fail_next_then_ok() -> None:
    async with FakeGateway() as gw, httpx.AsyncClient(base_url=gw.url) as client:
        gw.fail_next(2, status=502)
        codes = [(await client.post("/send", json={"ref": f"r{i}"})).status_code for i in range(3)]
        assert codes == [502, 502, 200]
        assert [r.status for r in gw.received] == [502, 502, 200]
        assert gw.accepted_refs() == {"r2"}


async def test_reject_is_permanent() -> None:
    async with FakeGateway() as gw, httpx.AsyncClient(base_url=gw.url) as client:
        gw.reject(422)
        codes = [(await client.post("/send")).status_code for _ in range(3)]
        assert codes == [422, 422, 422]
        assert gw.messages() == []
        with pytest.raises(AssertionError, match=r"got 0 accepted of 3 received"):
            await gw.wait_for(1, within=0.1)


async def test_rate_limit_sends_retry_after() -> None:
    async with FakeGateway() as gw, httpx.AsyncClient(base_url=gw.url) as client:
        gw.rate_limit(n=2, retry_after_seconds=3)
        first = await client.post("/send")
        second = await client.post("/send")
        third = await client.post("/send")
        assert (first.status_code, first.headers["retry-after"]) == (429, "3")
        assert second.status_code == 429
        assert third.status_code == 200 and "retry-after" not in third.headers


async def test_hang_times_out_client_and_release_ends_it() -> None:
    async with FakeGateway() as gw, httpx.AsyncClient(base_url=gw.url) as client:
        gw.hang(30)
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/send", json={"ref": "m-1"}, timeout=0.2)
        pending = asyncio.create_task(client.post("/send", json={"ref": "m-2"}, timeout=10))
        await asyncio.sleep(0.2)
        assert not pending.done() and gw.received[-1].status is None
        gw.release()
        assert (await asyncio.wait_for(pending, 5)).status_code == 200
        # The gateway did accept the request the client gave up on, as real ones do.
        assert gw.accepted_refs() == {"m-1", "m-2"}
        assert (await client.post("/send", timeout=1)).status_code == 200  # no longer hangs


async def test_idempotent_refs_and_duplicates() -> None:
    async with FakeGateway() as gw, httpx.AsyncClient(base_url=gw.url) as client:
        a = await client.post("/send", json={"ref": "A", "to": "62812"})
        a_again = await client.post("/send", json={"ref": "A", "to": "62812"})
        await client.post("/send", data={"ref": "B"})
        await client.post("/send", headers={"Idempotency-Key": "C"}, json={"ref": "ignored"})
        gw.fail_next(1)
        await client.post("/send", json={"ref": "D"})  # a 500 is not an acceptance
        await client.post("/send", content=b"no reference")

        assert a_again.json()["id"] == a.json()["id"] and a_again.json()["duplicate"] is True
        assert gw.accepted_refs() == {"A", "B", "C"}
        assert gw.duplicates() == 1
        assert [m.ref for m in gw.messages()] == ["A", "B", "C", None]
        assert gw.messages()[0] is gw.received[0]
        assert len(gw.received) == 6


async def test_max_in_window() -> None:
    async with FakeGateway() as gw, httpx.AsyncClient(base_url=gw.url) as client:
        for _ in range(3):
            await client.post("/burst")
        await asyncio.sleep(0.35)
        for _ in range(2):
            await client.post("/burst")
        assert gw.max_in_window(0.3) == 3
        assert gw.max_in_window(5.0) == 5
        assert gw.max_in_window(1.0, path_prefix="/other") == 0


async def test_smtp_receives_message() -> None:
    async with FakeSmtp() as smtp:
        msg = EmailMessage()
        msg["From"] = "giliran@example.go.id"
        msg["To"] = "warga@example.com"
        msg["Subject"] = "Nomor antrean Anda: A-001"
        msg.set_content("Silakan menuju loket 3.")
        await aiosmtplib.send(
            msg, hostname=smtp.host, port=smtp.port, username="notify", password="x"
        )
        (mail_from, rcpt_tos, received), *_ = await smtp.wait_for(1, within=5)
        assert mail_from == "giliran@example.go.id"
        assert rcpt_tos == ["warga@example.com"]
        assert received["Subject"] == "Nomor antrean Anda: A-001"
        assert received.get_content().strip() == "Silakan menuju loket 3."
        assert smtp.logins == ["notify"]
        with pytest.raises(AssertionError, match="got 1"):
            await smtp.wait_for(2, within=0.1)


async def test_profiles_answer_accept_and_refuse_in_their_documented_shapes() -> None:
    async with FakeGateway() as gw, httpx.AsyncClient(base_url=gw.url) as client:
        gw.respond_as("fonnte", path_prefix="/fonnte")
        gw.respond_as("zenziva", path_prefix="/zenziva")
        ok = (await client.post("/fonnte/send", data={"target": "6281234567890"})).json()
        assert ok["status"] is True and ok["id"] == [gw.received[-1].message_id]
        zen = (await client.post("/zenziva/sms", data={"to": "081234567890"})).json()
        assert (zen["status"], zen["text"], zen["to"]) == ("1", "Success", "081234567890")
        gw.refuse_in_body("nomor {to} tidak valid", path_prefix="/fonnte")
        no = await client.post("/fonnte/send", data={"target": "6281234567890"})
        assert no.status_code == 200
        assert no.json() == {"reason": "nomor 6281234567890 tidak valid", "status": False}
        assert len(gw.messages("/fonnte")) == 1  # a refusal is not an accepted message


async def test_infobip_keeps_the_client_message_id_and_reports_to_notify_url() -> None:
    async with FakeGateway() as gw, FakeGateway() as sink, httpx.AsyncClient() as client:
        gw.respond_as("infobip")
        body = {
            "messages": [
                {
                    "destinations": [{"to": "6281234567890", "messageId": "d-1"}],
                    "text": "hi",
                    "notifyUrl": f"{sink.url}/dlr",
                }
            ]
        }
        answer = (await client.post(f"{gw.url}/sms/2/text/advanced", json=body)).json()
        assert answer["messages"][0]["messageId"] == "d-1"
        assert answer["messages"][0]["status"]["groupName"] == "PENDING"
        (message,) = gw.messages()
        assert (await gw.report(message, "delivered")).status_code == 200
        (report,) = await sink.wait_for(1)
        result = report.json["results"][0]
        assert (result["messageId"], result["status"]["name"]) == ("d-1", "DELIVERED_TO_HANDSET")


async def test_the_whatsapp_cloud_fake_takes_templates_and_signs_statuses() -> None:
    async with FakeWhatsAppCloud(templates={"t": 1}) as wa, httpx.AsyncClient() as client:
        url = f"{wa.api_url}/{wa.phone_number_id}/messages"
        auth = {"Authorization": f"Bearer {wa.access_token}"}
        template = {"name": "t", "language": {"code": "id"}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "A-001"}]}]}  # fmt: skip
        body = {"messaging_product": "whatsapp", "to": "6281234567890", "type": "template",
                "template": template}  # fmt: skip
        ok = await client.post(url, json=body, headers=auth)
        assert ok.json()["messages"][0]["message_status"] == "accepted"
        assert (await client.post(url, json=body)).json()["error"]["code"] == 190
        text = {**body, "type": "text", "text": {"body": "hi"}}
        assert (await client.post(url, json=text, headers=auth)).json()["error"]["code"] == 131047
        wrong = {**body, "template": {**template, "components": []}}
        assert (await client.post(url, json=wrong, headers=auth)).json()["error"]["code"] == 132000
        async with FakeGateway() as sink:
            await wa.send_status(f"{sink.url}/hook", "wamid.1", "delivered")
            (hook,) = await sink.wait_for(1)
            assert hook.headers["x-hub-signature-256"] == wa.sign(hook.body)
            assert hook.json["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] == (
                "delivered"
            )
