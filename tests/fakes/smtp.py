"""A fake SMTP server (aiosmtpd in a thread) on 127.0.0.1 that records every message it accepts."""

from __future__ import annotations

import asyncio
import threading
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from types import TracebackType
from typing import Any, NamedTuple, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from giliran_ops.embedded import free_port

HOST = "127.0.0.1"


class ReceivedMail(NamedTuple):
    """One accepted message: unpacks as (mail_from, rcpt_tos, message)."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class _Recorder:
    """aiosmtpd handler: parses and stores each message; runs on the controller's thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[ReceivedMail] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        parsed = BytesParser(policy=default).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        mail = ReceivedMail(envelope.mail_from or "", list(envelope.rcpt_tos), parsed)
        with self.lock:
            self.messages.append(mail)
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """Any credentials are accepted (plain AUTH without TLS); the login name is recorded."""
        if isinstance(auth_data, LoginPassword):
            with self.lock:
                self.logins.append(auth_data.login.decode("utf-8", "replace"))
        return AuthResult(success=True)


class FakeSmtp:
    """`async with FakeSmtp() as smtp:` then send to `smtp.host`:`smtp.port` and read
    `smtp.messages`. AUTH (any credentials, no TLS needed) is offered but not required."""

    def __init__(self) -> None:
        self._recorder = _Recorder()
        self._controller: Controller | None = None
        self._port: int | None = None

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeSmtp is not started")
        return self._port

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._recorder.lock:
            return list(self._recorder.messages)

    @property
    def logins(self) -> list[str]:
        """Login names of clients that authenticated, in order."""
        with self._recorder.lock:
            return list(self._recorder.logins)

    def clear(self) -> None:
        with self._recorder.lock:
            self._recorder.messages.clear()
            self._recorder.logins.clear()

    async def start(self, attempts: int = 5) -> None:
        if self._controller is not None:
            raise RuntimeError("FakeSmtp already started")
        last: Exception | None = None
        for _ in range(attempts):
            port = free_port(HOST)
            controller = Controller(
                self._recorder,
                hostname=HOST,
                port=port,
                authenticator=self._recorder.authenticate,
                auth_require_tls=False,
            )
            try:
                await asyncio.to_thread(controller.start)
            except Exception as exc:  # port taken meanwhile, or the server failed to come up
                last = exc
                await asyncio.to_thread(controller.stop, no_assert=True)
                continue
            self._controller, self._port = controller, port
            return
        raise RuntimeError(f"fake SMTP server could not start on {HOST}") from last

    async def stop(self) -> None:
        if self._controller is None:
            return
        controller, self._controller = self._controller, None
        await asyncio.to_thread(controller.stop)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_for(self, n: int, within: float = 10.0) -> list[ReceivedMail]:
        """Poll until at least `n` messages were received; return them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            got = self.messages
            if len(got) >= n:
                return got
            if loop.time() >= deadline:
                seen = "; ".join(
                    f"{m.mail_from} -> {', '.join(m.rcpt_tos)}: {m.message['subject']!r}"
                    for m in got
                )
                raise AssertionError(
                    f"expected at least {n} message(s) at smtp://{HOST}:{self.port} within "
                    f"{within}s; got {len(got)}" + (f" ({seen})" if seen else "")
                )
            await asyncio.sleep(0.02)
