"""`giliran up --lan` in a network namespace of its own, reached from a second namespace over a veth
pair (addresses 10.231.x.0/30 that exist only inside the two namespaces this test makes):
HTTPS trusting only Caddy's local CA root, a counter tablet, the board TV and the kiosk paired
by their QR codes (decoded by a real decoder) and used, and a revocation that ends a device."""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import io
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import ARTIFACTS
from tests.terminal_qr import decode_terminal_qr

pytestmark = pytest.mark.e2e

SITE = "cikarang-utara"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Net:
    server_ns: str
    client_ns: str
    server: str  # the box's LAN address
    client: str


@pytest.fixture
def net() -> Iterator[Net]:
    """Two namespaces joined by a veth pair; nothing else is routed anywhere."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` (iproute2) on this machine")
    tag = f"{os.getpid() % 100000}"
    subnet = f"10.231.{os.getpid() % 250}"
    names = Net(f"giliran-box-{tag}", f"giliran-lan-{tag}", f"{subnet}.1", f"{subnet}.2")
    try:
        _ip("netns", "add", names.server_ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.decode().strip()}")
    try:
        _ip("netns", "add", names.client_ns)
        _ip(
            "link", "add", f"gb{tag}", "netns", names.server_ns,
            "type", "veth", "peer", "name", f"gl{tag}", "netns", names.client_ns,
        )  # fmt: skip
        _ip("-n", names.server_ns, "addr", "add", f"{names.server}/30", "dev", f"gb{tag}")
        _ip("-n", names.client_ns, "addr", "add", f"{names.client}/30", "dev", f"gl{tag}")
        for ns, dev in ((names.server_ns, f"gb{tag}"), (names.client_ns, f"gl{tag}")):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", dev, "up")
        yield names
    finally:
        for ns in (names.server_ns, names.client_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class InNamespace:
    """An event loop on a thread that has entered a network namespace: every socket made by
    coroutines run here belongs to that namespace (setns moves only the calling thread)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        entered: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            try:
                libc = ctypes.CDLL("libc.so.6", use_errno=True)
                with open(f"/var/run/netns/{name}") as ns:
                    if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
            except OSError as exc:
                entered.set_exception(exc)
                return
            entered.set_result(None)
            asyncio.set_event_loop(self.loop)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        entered.result(timeout=10)

    async def run(self, factory: Callable[[], Awaitable[T]]) -> T:
        async def call() -> T:
            return await factory()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@dataclass
class Box:
    process: subprocess.Popen[str]
    data: Path
    output: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.output)


@pytest.fixture
def box(net: Net, tmp_path: Path) -> Iterator[Box]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GILIRAN_")}
    process = subprocess.Popen(
        ["ip", "netns", "exec", net.server_ns, sys.executable, "-m", "giliran_ops.cli", "up",
         "--lan", "--demo", "--data", str(tmp_path / "data")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    running = Box(process, tmp_path / "data")
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.output.append(line)
            if line.startswith("Press Ctrl-C"):
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(timeout=120), running.text()[-4000:]
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "e2e-office-lan.log").write_text(running.text())


def terminal_qrs(printed: str) -> dict[str, tuple[str, str]]:
    """Each printed pairing: label -> (the link printed beside it, the QR drawing under it)."""
    found: dict[str, tuple[str, str]] = {}
    lines = printed.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^  \[([a-z0-9-]+)\]  (https://\S+)$", line)
        if match:
            drawing = []
            for row in lines[i + 1 :]:
                if not row or set(row) - set("█▀▄ "):
                    break
                drawing.append(row)
            found[match.group(1)] = (match.group(2), "\n".join(drawing))
    return found


def decode_one(drawing: str) -> str:
    found = decode_terminal_qr(drawing)
    assert len(found) == 1, f"no QR code read from:\n{drawing}"
    return found[0]


def decode_png_qr(data_uri: str) -> str:
    import base64

    import zxingcpp
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1])))
    found = zxingcpp.read_barcodes(image.convert("L"))
    assert len(found) == 1
    return str(found[0].text)


def decode_svg_qr(page: str) -> str:
    """The first inline SVG QR code of a page (segno draws modules as runs of a path: "M x y"
    and "m dx dy" move, "h n" draws n modules), rasterised and read with zxing-cpp."""
    import zxingcpp
    from PIL import Image

    path = re.search(r'<svg[^>]*class="segno"[^>]*>.*?\sd="([^"]+)"', page, re.S)
    assert path, "no QR code on the page"
    x = y = 0.0
    runs: list[tuple[int, int, int]] = []
    for op, a, b in re.findall(r"([MmHh])\s*(-?[\d.]+)(?:\s+(-?[\d.]+))?", path.group(1)):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:
            runs.append((int(x), int(y), int(float(a))))
            x += float(a)
    size = max(rx + n for rx, _, n in runs) + 4
    scale = 6
    image = Image.new("L", (size * scale, size * scale), 255)
    for rx, ry, n in runs:
        image.paste(0, (rx * scale, ry * scale, (rx + n) * scale, (ry + 1) * scale))
    found = zxingcpp.read_barcodes(image)
    assert len(found) == 1, "the QR code could not be read"
    return str(found[0].text)


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page) or re.search(
        r'"csrf":\s*"([^"]+)"', page
    )
    assert match, page[:1500]
    return match.group(1)


async def test_an_office_box_on_its_lan_pairs_and_serves_its_devices(net: Net, box: Box) -> None:
    printed = box.text()
    office = f"https://{net.server}"
    # The box names its LAN address (found by itself: the test gave none) and the CA's root.
    assert f"office    {office}" in printed, printed
    assert f"http://{net.server}/giliran-ca.crt" in printed
    assert f"board      {office}/device?token=" in printed  # the demo board link, on the LAN
    password = re.search(r"supervisor\s+supervisor / (\S+)", printed)
    assert password, printed
    codes = terminal_qrs(printed)
    # One pairing code per device of the demo site at start-up: each counter, board, kiosk.
    assert {"board", "kiosk", "counter-1"} <= set(codes), codes.keys()
    for label, (link, drawing) in codes.items():
        assert decode_one(drawing) == link, label
        assert link.startswith(f"{office}/device/pair/")

    # On the box, the proxy listens on the LAN address only, and nothing else listens beyond
    # the box's loopback (the services, NATS, the store).
    ss = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", net.server_ns, "ss", "-Hltn", stdout=asyncio.subprocess.PIPE
    )
    listening, _ = await asyncio.wait_for(ss.communicate(), timeout=30)
    local = [line.split()[3] for line in listening.decode().splitlines() if line.strip()]
    assert {f"{net.server}:443", f"{net.server}:80"} <= set(local), local
    beyond_loopback = {a for a in local if not a.startswith(("127.", "[::1]"))}
    assert beyond_loopback == {f"{net.server}:443", f"{net.server}:80"}, local

    lan = InNamespace(net.client_ns)
    try:
        await lan.run(lambda: _use_the_office(net, box, codes, password.group(1)))
    finally:
        lan.close()


async def _use_the_office(
    net: Net, box: Box, codes: dict[str, tuple[str, str]], password: str
) -> None:
    office = f"https://{net.server}"
    # The root certificate over plain HTTP (a tablet cannot trust HTTPS before it has it);
    # any other plain-HTTP address is sent to HTTPS.
    async with httpx.AsyncClient(timeout=20) as plain:
        root = await plain.get(f"http://{net.server}/giliran-ca.crt")
        assert root.status_code == 200 and root.text.startswith("-----BEGIN CERTIFICATE-----")
        assert (
            root.content == (box.data / "proxy/caddy/pki/authorities/local/root.crt").read_bytes()
        )
        moved = await plain.get(f"http://{net.server}/daftar?site={SITE}")
        assert moved.status_code in (301, 302, 308)
        assert moved.headers["location"] == f"{office}/daftar?site={SITE}"
        # The services themselves are not on the LAN: only the proxy is.
        for port in (8101, 8102, 8103, 8104, 4222, 27017):
            with pytest.raises(httpx.ConnectError):
                await plain.get(f"http://{net.server}:{port}/healthz")
        # Without the office's root, HTTPS is refused: the certificate is the local CA's.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await plain.get(f"{office}/")
    trust = ssl.create_default_context(cadata=root.text)

    def device() -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=office, verify=trust, timeout=20)

    async with device() as supervisor, device() as tablet, device() as tv, device() as kiosk:
        assert (await supervisor.get(f"/daftar?site={SITE}")).status_code == 200

        # The TV scans the board's start-up code: it lands on the board, paired.
        board_page = await tv.get(urlsplit(codes["board"][0]).path, follow_redirects=True)
        assert (
            board_page.status_code == 200 and str(board_page.url) == f"{office}/board?site={SITE}"
        )
        assert tv.cookies.get("giliran_device")

        # A supervisor signs in and pairs counter 2's tablet from the devices page.
        login = await supervisor.get("/login", params={"next": f"/devices?site={SITE}"})
        signed = await supervisor.post(
            "/login",
            data={
                "username": "supervisor",
                "password": password,
                "csrf": csrf_of(login.text),
                "next": f"/devices?site={SITE}",
            },
            headers={"Origin": office},
            follow_redirects=True,
        )
        assert signed.status_code == 200 and "pair-form" in signed.text, signed.text[:500]
        made = await supervisor.post(
            "/devices",
            data={"site": SITE, "kind": "counter", "counter": "2", "csrf": csrf_of(signed.text)},
            headers={"Origin": office},
        )
        assert made.status_code == 201, made.text[:500]
        qr = re.search(r'<img src="(data:image/png;base64,[^"]+)"[^>]*id="pairing-qr"', made.text)
        assert qr
        link = decode_png_qr(qr.group(1))
        assert link.startswith(f"{office}/device/pair/")
        console = await tablet.get(urlsplit(link).path, follow_redirects=True)
        assert console.status_code == 200
        assert str(console.url) == f"{office}/console?site={SITE}&counter=2"
        tablet_csrf = {"X-CSRF-Token": csrf_of(console.text), "Origin": office}

        # The kiosk scans its start-up code and prints a ticket; the ticket's status link is
        # on the office's address, which a citizen's phone on the LAN reaches.
        page = await kiosk.get(urlsplit(codes["kiosk"][0]).path, follow_redirects=True)
        assert page.status_code == 200 and str(page.url) == f"{office}/kiosk/{SITE}"
        taken = await kiosk.post(
            f"/kiosk/{SITE}",
            data={"service": "KTP-CETAK", "csrf": csrf_of(page.text)},
            headers={"Origin": office},
        )
        assert taken.status_code == 303, taken.text[:500]
        ticket = await kiosk.get(taken.headers["location"])
        number = re.search(r"\b([A-Z]-\d{3})\b", ticket.text)
        assert number, ticket.text[:1500]
        token = taken.headers["location"].split("/kiosk/ticket/")[1].split("?")[0]
        status_link = decode_svg_qr(ticket.text)
        assert status_link == f"{office}/s/{token}"
        async with device() as phone:
            assert (await phone.get(status_link)).status_code == 200

        # The counter tablet calls the kiosk's citizen; the board hears of it by server push.
        async with tv.stream("GET", f"/api/v1/sites/{SITE}/board/stream") as stream:
            lines = stream.aiter_lines()
            await _board_event(lines)
            called = await tablet.post(
                f"/api/v1/sites/{SITE}/counters/2/call-next", headers=tablet_csrf
            )
            assert called.status_code == 200, called.text
            assert called.json()["ticket"]["number"] == number.group(1)
            seen = await _board_event(lines, until=number.group(1))
            assert seen["calls"][0]["number"] == number.group(1), seen
        # Bound to counter 2: counter 1 is not its to serve.
        other = await tablet.post(f"/api/v1/sites/{SITE}/counters/1/call-next", headers=tablet_csrf)
        assert other.status_code == 403

        # The supervisor revokes the tablet: its next action is refused.
        listing = await supervisor.get(f"/devices?site={SITE}")
        row = re.search(r'id="device-([0-9a-f]+)"[^>]*>\s*<td>counter-2<', listing.text)
        assert row, listing.text[:3000]
        revoked = await supervisor.post(
            f"/devices/{row.group(1)}/revoke",
            data={"csrf": csrf_of(listing.text)},
            headers={"Origin": office},
        )
        assert revoked.status_code == 303
        after = await tablet.post(f"/api/v1/sites/{SITE}/counters/2/call-next", headers=tablet_csrf)
        assert after.status_code == 401
        # The board and the kiosk are untouched by it.
        assert (await tv.get(f"/board?site={SITE}")).status_code == 200
        assert (await kiosk.get(f"/kiosk/{SITE}")).status_code == 200
        listing = await supervisor.get(f"/devices?site={SITE}")
        kiosk_row = re.search(
            r"<td>kiosk</td><td>[^<]*</td><td>[^<]*</td><td>(\w+)</td>", listing.text
        )
        assert kiosk_row and kiosk_row.group(1) == "kiosk", "the kiosk's credential is Role.KIOSK"


async def _board_event(lines: Any, until: str | None = None) -> dict[str, Any]:
    async with asyncio.timeout(30):
        event = None
        async for line in lines:
            if line.startswith("event: board"):
                event = "board"
            elif event and line.startswith("data: "):
                view: dict[str, Any] = json.loads(line[6:])
                # Wait for the call itself: since the board's lines are exact at every render
                # (ADR 0160), the number shows in a line's "next" before it is called.
                calls = [c.get("number") for c in view.get("calls", [])]
                if until is None or until in calls:
                    return view
                event = None
    raise AssertionError("the board stream ended")
