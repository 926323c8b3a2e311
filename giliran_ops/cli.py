"""The `giliran` command: `up` runs the whole one-box system, `service NAME` runs one service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from giliran.settings import DEFAULT_PORTS, SERVICES, ServiceName, Settings
from giliran_ops import lan
from giliran_ops.embedded import (
    ManagedProcess,
    _die_with_parent,
    mongo_wire_store,
    nats_server,
    port_open,
)

log = logging.getLogger("giliran")

LOG_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "giliran"


def _nik_key(data_dir: Path, name: str = "nik_hash_key") -> str:
    """One secret per data directory, created on first start, readable only by its owner."""
    path = data_dir / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _pick_port(preferred: int) -> int:
    from giliran_ops.embedded import free_port

    return preferred if not port_open("127.0.0.1", preferred) else free_port()


class Stack:
    """Everything `giliran up` started, stopped in reverse order."""

    def __init__(self) -> None:
        self.infrastructure: list[ManagedProcess] = []
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self.env: dict[str, str] = {}
        # --secure: each service's own NATS user and password.
        self.service_env: dict[str, dict[str, str]] = {}
        # Background work of `up` itself (the hub's caretaker).
        self.tasks: list[asyncio.Task[None]] = []

    def start_service(self, name: str) -> None:
        self.services[name] = subprocess.Popen(
            [sys.executable, "-m", "giliran_ops.cli", "service", name],
            env={**self.env, **self.service_env.get(name, {})},
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches `up` only; it stops children in order
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )

    def stop(self) -> None:
        for process in self.services.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in self.services.items():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in 15s; killing it", name)
                process.kill()
                process.wait()
        for infra in reversed(self.infrastructure):
            infra.stop()


async def _wait_ready(urls: dict[str, str], within: float) -> dict[str, bool]:
    ready = dict.fromkeys(urls, False)
    async with httpx.AsyncClient(timeout=2.0) as client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline and not all(ready.values()):
            for name, url in urls.items():
                if ready[name]:
                    continue
                try:
                    ready[name] = (await client.get(f"{url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(0.2)
    return ready


def up(args: argparse.Namespace) -> int:
    if getattr(args, "site", None) and args.secure:
        # The per-service NATS users (deploy/nats/giliran.conf) do not yet grant the edge
        # streams: an edge box guards its leaf link instead (docs/edge.md).
        raise SystemExit("giliran: --site and --secure cannot be combined yet")
    data_dir: Path = (args.data or default_data_dir()).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Read before _nik_key creates it: a data directory from before NIK encryption keys of their
    # own (ADR 0113) still needs the derived key to read the NIKs it holds.
    upgrading = (data_dir / "secrets" / "nik_hash_key").exists()
    nik_key = _nik_key(data_dir)
    _nik_encryption_key(data_dir, upgrading)
    return asyncio.run(_up(args, data_dir, nik_key))


def _nik_encryption_key(data_dir: Path, upgrading: bool) -> str:
    """The NIK encryption key list of a data directory (its own Fernet key, created on first
    start). For a directory made before, `<new>,derived`: new NIKs use the new key, stored ones
    still decrypt; `giliran keys rotate-nik` then moves them and `,derived` can go."""
    path = data_dir / "secrets" / "nik_encryption_key"
    if not path.exists():
        from cryptography.fernet import Fernet

        key = Fernet.generate_key().decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{key},derived" if upgrading else key)
        path.chmod(0o600)
        if upgrading:
            print(f"  new NIK encryption key in {path}: run `giliran keys rotate-nik`, then "
                  "remove ',derived' from that file (docs/security.md)")  # fmt: skip
    return path.read_text().strip()


async def _up(args: argparse.Namespace, data_dir: Path, nik_key: str) -> int:
    settings = Settings()
    if _role(args) == "site":
        settings = settings.model_copy(update={"demo_site": args.site})
    stack = Stack()
    env = dict(os.environ)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        if "GILIRAN_NATS_URL" not in os.environ and args.secure:
            from giliran_ops.natsauth import OPS_USER, server_environment

            passwords = _nats_passwords(data_dir)
            nats_env = {**os.environ, **server_environment(passwords)}
            nats = nats_server(
                data_dir, port=_pick_port(4222), config=NATS_CONFIG, env=nats_env
            ).start()
            stack.infrastructure.append(nats)
            await nats.wait_listening()
            env["GILIRAN_NATS_URL"] = f"nats://127.0.0.1:{nats.port}"
            stack.service_env = {
                name: {"GILIRAN_NATS_USER": name, "GILIRAN_NATS_PASSWORD": passwords[name]}
                for name in SERVICES
            }
            print(f"  NATS users and passwords: {data_dir / 'secrets' / 'nats_passwords.json'}")
            print(f"  (operator user '{OPS_USER}'; counter devices 'device-<site>')")
        elif "GILIRAN_NATS_URL" not in os.environ:
            config, nats_env = _edge_nats(args, data_dir)
            nats = nats_server(data_dir, port=_pick_port(4222), config=config, env=nats_env).start()
            stack.infrastructure.append(nats)
            await nats.wait_listening()
            env["GILIRAN_NATS_URL"] = f"nats://127.0.0.1:{nats.port}"
            if _role(args) == "hub":
                # The hub's clients sign in (its leaf users carry permissions, so it has users).
                from giliran_ops.edge import HUB_USER

                credentials = f"{HUB_USER}:{_hub_password(data_dir)}@"
                env["GILIRAN_NATS_URL"] = f"nats://{credentials}127.0.0.1:{nats.port}"
        await _edge_streams(args, env, stack)
        if "GILIRAN_MONGO_URL" not in os.environ:
            store = mongo_wire_store(data_dir, port=_pick_port(27017)).start()
            stack.infrastructure.append(store)
            await store.wait_listening()
            env["GILIRAN_MONGO_URL"] = f"mongodb://127.0.0.1:{store.port}/?directConnection=true"
        env.setdefault("GILIRAN_NIK_HASH_KEY", nik_key)
        env.setdefault("GILIRAN_NIK_ENCRYPTION_KEY", _nik_encryption_key(data_dir, False))
        # One session key for all four services: a sign-in at one is valid at the others.
        env.setdefault("GILIRAN_SESSION_KEY", _nik_key(data_dir, "session_key"))
        # One audit key too: the four services append to one chain, keyed with it.
        env.setdefault("GILIRAN_AUDIT_KEY", _nik_key(data_dir, "audit_key"))
        if args.demo:
            env["GILIRAN_DEMO"] = "true"
        office = _office(args)
        if office is not None:
            # Links and QR codes must reach the citizens' phones and the office's devices.
            env["GILIRAN_PUBLIC_URL"] = office.public_url
            caddy = lan.proxy(data_dir, office, settings).start()
            stack.infrastructure.append(caddy)
            await caddy.wait_listening()
        env.setdefault("GILIRAN_PUBLIC_URL", settings.url_of("intake"))
        stack.env = {**env, **_edge_env(args)}
        # The hub runs intake (its admins' calendar changes) and reporting; a site runs all four.
        names = ("intake", "reporting") if _role(args) == "hub" else SERVICES
        for service_name in names:
            stack.start_service(service_name)
        urls: dict[str, str] = {n: settings.url_of(n) for n in names}
        ready = await _wait_ready(urls, within=args.ready_timeout)
        if not all(ready.values()):
            late = ", ".join(n for n, ok in ready.items() if not ok)
            print(f"giliran: not ready after {args.ready_timeout:.0f}s: {late}", file=sys.stderr)
            return 1
        print(f"Giliran is up (data: {data_dir})", flush=True)
        print(f"  NATS      {re.sub(r'//[^@/]*@', '//', env['GILIRAN_NATS_URL'])}")
        print(f"  store     {env['GILIRAN_MONGO_URL']}")
        for label, url in urls.items():
            print(f"  {label:<9} {url}  (/healthz /readyz /metrics /docs)")
        if args.demo:
            from giliran.catalogue import load_catalogue

            demo_site = load_catalogue(settings.catalogue_dir).site(settings.demo_site)
            counters = ", ".join(c.id for c in demo_site.counters) if demo_site else "?"
            print(f"  demo      session open now at '{settings.demo_site}', counters {counters}")
            from giliran.auth.cli import demo_accounts

            demo_settings = Settings(
                mongo_url=env["GILIRAN_MONGO_URL"],
                db_prefix=env.get("GILIRAN_DB_PREFIX", "giliran"),
            )
            # The board link on the address the office's TV reaches (the proxy in office mode).
            board_base = office.public_url if office is not None else urls["queue"]
            for line in await demo_accounts(demo_settings, settings.demo_site, board_base):
                print(line)
        for line in await _next_sessions(urls["intake"], settings.demo_site):
            print(line)
        public = env["GILIRAN_PUBLIC_URL"]
        if office is not None:
            for line in await _office_lines(office, data_dir, env, settings, args.pair):
                print(line)
        elif (warning := lan.loopback_warning(public)) is not None:
            print(warning, flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        while not stopping.is_set():
            for label, process in list(stack.services.items()):
                if process.poll() is not None and not stopping.is_set():
                    log.warning("%s exited with %s; restarting it", label, process.returncode)
                    stack.start_service(label)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stopping.wait()
        return 0
    finally:
        for task in stack.tasks:
            task.cancel()
        print("giliran: stopping...", file=sys.stderr, flush=True)
        # Waiting for processes to exit blocks; nothing else runs in this loop meanwhile.
        await asyncio.to_thread(stack.stop)
        print("giliran: stopped", file=sys.stderr, flush=True)


# --- office mode (docs/devices.md) -------------------------------------------------------------


def _office(args: argparse.Namespace) -> lan.Office | None:
    if not getattr(args, "lan", False):
        return None
    https_port, http_port = lan.default_ports()
    return lan.Office(
        address=args.lan_address or lan.lan_address(),
        https_port=args.lan_port or https_port,
        http_port=http_port if not args.lan_port else (80 if args.lan_port == 443 else 8080),
    )


async def _office_lines(
    office: lan.Office,
    data_dir: Path,
    env: dict[str, str],
    settings: Settings,
    pair: str,
) -> list[str]:
    site = settings.demo_site
    lines = [
        f"  office    {office.public_url}  (the office's address: HTTPS, a local CA)",
        f"  CA root   {office.ca_url}  (install once on each tablet and TV: docs/devices.md)",
        f"            {lan.ca_root(data_dir)}",
        f"  pages     {office.public_url}/daftar?site={site}  (citizens)",
        f"            {office.public_url}/devices?site={site}  (supervisors pair and revoke)",
        f"            {office.public_url}/dashboard?site={site}  (management)",
    ]
    kinds = [k for k in pair.split(",") if k]
    if kinds:
        at = settings.model_copy(
            update={
                "mongo_url": env["GILIRAN_MONGO_URL"],
                "db_prefix": env.get("GILIRAN_DB_PREFIX", "giliran"),
                "public_url": office.public_url,
            }
        )
        lines += await lan.start_up_pairings(at, site, kinds)
    return lines


# --- edge site mode (docs/edge.md) ------------------------------------------------------------


def _role(args: argparse.Namespace) -> str:
    if getattr(args, "hub_mode", False):
        return "hub"
    return "site" if getattr(args, "site", None) else "one-box"


def _hub_sites(args: argparse.Namespace) -> list[str]:
    """The sites the hub gathers: --sites, else every site of the catalogue."""
    from giliran.catalogue import load_catalogue

    known = load_catalogue(Settings().catalogue_dir).sites
    chosen = [s for s in (args.sites or "").split(",") if s] or sorted(known)
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise SystemExit(f"giliran: unknown site(s) {', '.join(unknown)} (deploy/sites/)")
    return chosen


def _edge_nats(args: argparse.Namespace, data_dir: Path) -> tuple[Path | None, dict[str, str]]:
    """The nats-server configuration file (written into the data directory, generated from
    giliran_ops.edge) and environment of a site box or the hub; none for a one-box site."""
    from giliran_ops import edge

    role = _role(args)
    if role == "one-box":
        return None, dict(os.environ)
    path = data_dir / "nats-edge.conf"
    if role == "site":
        from giliran.catalogue import load_catalogue

        if args.site not in load_catalogue(Settings().catalogue_dir).sites:
            raise SystemExit(f"giliran: unknown site {args.site} (deploy/sites/)")
        if not args.hub:
            raise SystemExit("giliran: --site needs --hub nats-leaf://leaf-<site>:<pw>@<hub>:7422")
        path.write_text(edge.render_site_config(args.site))
        return path, {**os.environ, edge.HUB_URL_VARIABLE: args.hub}
    sites = _hub_sites(args)
    path.write_text(edge.render_hub_config(sites, leaf_port=args.leaf_port))
    passwords = _leaf_passwords(data_dir, sites)
    variables = {edge.leaf_password_variable(s): json.dumps(p) for s, p in passwords.items()}
    variables[edge.HUB_PASSWORD_VARIABLE] = json.dumps(_hub_password(data_dir))
    print(f"  leaf users and passwords: {data_dir / 'secrets' / 'leaf_passwords.json'}")
    print(
        f"  a site box joins with: giliran up --site <site> --hub "
        f"nats-leaf://leaf-<site>:<password>@<this host>:{args.leaf_port}"
    )
    return path, {**os.environ, **variables}


def _hub_password(data_dir: Path) -> str:
    """The password of the hub's own user (its services and caretaker sign in with it)."""
    from giliran_ops.edge import HUB_USER

    return _password_file(data_dir / "secrets" / "hub_password.json", [HUB_USER])[HUB_USER]


def _leaf_passwords(data_dir: Path, sites: Sequence[str]) -> dict[str, str]:
    from giliran_ops.edge import leaf_user

    known = _password_file(data_dir / "secrets" / "leaf_passwords.json", map(leaf_user, sites))
    return {site: known[leaf_user(site)] for site in sites}


async def _edge_streams(args: argparse.Namespace, env: dict[str, str], stack: Stack) -> None:
    """Before the services start: a site's copy of the hub's calendar changes, or the hub's
    gathering stream; and the caretaker that re-arms the sourcing when the link returns."""
    import nats

    from giliran_ops import edge

    role = _role(args)
    if role == "site":
        client = await nats.connect(env["GILIRAN_NATS_URL"])
        try:
            await edge.ensure_site_streams(client.jetstream(), args.site)
        finally:
            await client.close()
        stack.tasks.append(asyncio.create_task(edge.keep_site(env["GILIRAN_NATS_URL"], args.site)))
    elif role == "hub":
        sites = _hub_sites(args)
        client = await nats.connect(env["GILIRAN_NATS_URL"])
        try:
            await edge.ensure_hub_streams(client.jetstream(), sites)
        finally:
            await client.close()
        stack.tasks.append(asyncio.create_task(edge.keep_hub(env["GILIRAN_NATS_URL"], sites)))


def _edge_env(args: argparse.Namespace) -> dict[str, str]:
    role = _role(args)
    if role == "site":
        return {"GILIRAN_EDGE_SITE": args.site, "GILIRAN_DEMO_SITE": args.site}
    if role == "hub":
        return {"GILIRAN_EDGE_HUB": "true"}
    return {}


def hub(args: argparse.Namespace) -> int:
    args.hub_mode = True
    args.secure = False
    args.site = None
    return up(args)


def edge_config(args: argparse.Namespace) -> int:
    """Print the generated nats-server configuration of a site box or the hub."""
    from giliran_ops import edge

    if args.role == "site":
        if not args.site:
            raise SystemExit("giliran: edge-config site needs a site slug")
        sys.stdout.write(edge.render_site_config(args.site))
    else:
        sys.stdout.write(edge.render_hub_config(_hub_sites(args), leaf_port=args.leaf_port))
    return 0


def describe_sessions(site_name: str, sessions: list[dict[str, Any]], show: int = 3) -> list[str]:
    """`giliran up`'s lines on the sessions ahead: the next few, and the next one that falls on
    a weekday holiday (the MSC rule's second half) when it is not among them."""
    scheduled = [s for s in sessions if s.get("kind") == "scheduled" and not s.get("cancelled")]
    if not scheduled:
        return []
    chosen = scheduled[:show]
    weekday_holiday = next(
        (s for s in scheduled if date.fromisoformat(s["date"]).weekday() < 5), None
    )
    if weekday_holiday is not None and weekday_holiday not in chosen:
        chosen.append(weekday_holiday)
    lines = [f"  next sessions at {site_name}:"]
    for s in chosen:
        lines.append(
            f"    {s['weekday_id']:<7} {s['date']} {s['opens_local']}-{s['closes_local']} WIB"
            f"  ({s['label']})"
        )
    return lines


async def _next_sessions(intake_url: str, site: str) -> list[str]:
    """Ask intake (over HTTP: the kernel never imports a service) for the site's sessions."""
    try:
        async with httpx.AsyncClient(timeout=3.0) as client:
            found = await client.get(
                f"{intake_url}/api/v1/sites/{site}/sessions", params={"days": 120}
            )
            found.raise_for_status()
    except httpx.HTTPError as exc:
        return [f"  sessions  (intake did not list them: {exc})"]
    return describe_sessions(site, found.json())


def build_service(name: ServiceName, settings: Settings) -> Any:
    """The (app, runtime) pair of a service (imported when asked: a process runs one service)."""
    if name == "intake":
        from services.intake import app as intake

        return intake.build(settings)
    if name == "queue":
        from services.queue import app as queue

        return queue.build(settings)
    if name == "notify":
        from services.notify import app as notify

        return notify.build(settings)
    from services.reporting import app as reporting

    return reporting.build(settings)


def service(args: argparse.Namespace) -> int:
    import uvicorn

    from giliran import telemetry

    settings = Settings()
    telemetry.configure_logging(settings.log_format, settings.log_level, service=args.name)
    # FastStream logs a line per subscriber task callback at INFO: noise for an operator.
    logging.getLogger("faststream").setLevel(logging.WARNING)
    # Before the service is built: its broker takes FastStream's telemetry middleware then.
    if telemetry.configure_tracing(args.name):
        log.info("tracing on: OTEL_TRACES_EXPORTER=%s", os.environ.get("OTEL_TRACES_EXPORTER"))
    app, _ = build_service(args.name, settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port_of(args.name),
        log_level="warning",
        # uvicorn's own lines go through the root handler (JSON when configured), and the
        # access log is giliran.http's (route templates, correlation ids; never raw paths).
        log_config=None,
        access_log=False,
        lifespan="on",
        loop=settings.event_loop,
        http="httptools" if settings.event_loop == "uvloop" else "h11",
        # Server-push streams (dashboards, boards) never end by themselves: bound the wait.
        timeout_graceful_shutdown=5,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    return 0


def reporting(args: argparse.Namespace) -> int:
    """`giliran reporting rebuild`: replay the stream into a fresh database and compare."""
    import asyncio

    settings = Settings()
    from services.reporting import rebuild

    prefix = args.into or f"{settings.db_prefix}_rebuild"
    code: int = asyncio.run(rebuild.main(settings, prefix, args.keep))
    return code


NATS_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "nats" / "giliran.conf"


def nats_config_text(settings: Settings) -> str:
    """deploy/nats/giliran.conf as the code of the four services implies it today."""
    from pydantic import SecretStr

    from giliran.catalogue import load_catalogue
    from giliran_ops.natsauth import Grants, render_config, service_grants

    # Building a service wires it without connecting anywhere; intake insists on a hash key.
    probe = settings.model_copy(
        update={"nik_hash_key": settings.nik_hash_key or SecretStr("probe"), "demo": False}
    )
    grants: dict[str, Grants] = {
        name: service_grants(build_service(name, probe)[1]) for name in SERVICES
    }
    return render_config(grants, load_catalogue(settings.catalogue_dir).sites)


def nats_config(_: argparse.Namespace) -> int:
    sys.stdout.write(nats_config_text(Settings()))
    return 0


def _nats_passwords(data_dir: Path) -> dict[str, str]:
    """One password per NATS user, kept beside the NIK key; the server reads them from its
    environment (NATS_PASSWORD_<USER>), each service gets only its own."""
    from giliran.catalogue import load_catalogue
    from giliran_ops.natsauth import all_users

    users = all_users(SERVICES, load_catalogue(Settings().catalogue_dir).sites)
    return _password_file(data_dir / "secrets" / "nats_passwords.json", users)


def _password_file(path: Path, users: Iterable[str]) -> dict[str, str]:
    """The passwords kept in `path` (mode 600), with a new one for each user who had none."""
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    for user in users:
        # Letters and digits only, starting with a letter: the same value is read by compose's
        # .env parser and by nats-server's config parser (which reads "1e5..." as a number).
        known.setdefault(user, "p" + secrets.token_hex(20))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(known, indent=2))
    path.chmod(0o600)
    return known


def keys(args: argparse.Namespace) -> int:
    """`giliran keys rotate-nik`: stored NIKs re-encrypted with the newest configured key."""
    from services.intake import rotation

    code: int = asyncio.run(rotation.main(Settings(), args.batch))
    return code


def nats_passwords(_: argparse.Namespace) -> int:
    """Fresh NATS_PASSWORD_<USER>=... lines for compose's .env."""
    from giliran.catalogue import load_catalogue
    from giliran_ops.natsauth import all_users, password_variable

    for user in all_users(SERVICES, load_catalogue(Settings().catalogue_dir).sites):
        print(f"{password_variable(user)}=p{secrets.token_hex(20)}")
    return 0


def asyncapi(_: argparse.Namespace) -> int:
    from giliran_ops.docs import asyncapi_yaml

    sys.stdout.write(asyncapi_yaml())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    parser = argparse.ArgumentParser(prog="giliran", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p_up = commands.add_parser("up", help="run NATS, the store and the four services on this box")
    p_up.add_argument("--data", type=Path, help=f"data directory (default {default_data_dir()})")
    p_up.add_argument("--demo", action="store_true", help="open an ad-hoc session now")
    p_up.add_argument("--ready-timeout", type=float, default=60.0)
    p_up.add_argument(
        "--secure",
        action="store_true",
        help="NATS with one user per service (deploy/nats/giliran.conf), passwords generated",
    )
    p_up.add_argument(
        "--lan",
        action="store_true",
        help="office mode: serve the office network on this box's LAN address over HTTPS "
        "(Caddy, a local CA) and print pairing QR codes for its devices (docs/devices.md)",
    )
    p_up.add_argument("--lan-address", help="with --lan: the address to serve (default: found)")
    p_up.add_argument(
        "--lan-port",
        type=int,
        help="with --lan: the HTTPS port (default 443, or 8443 unprivileged)",
    )
    p_up.add_argument(
        "--pair",
        default="counter,board,kiosk",
        help="with --lan: the devices to print pairing QR codes for at start-up (comma-separated "
        "from counter (one per counter), board, kiosk; empty for none)",
    )
    p_up.add_argument("--site", help="run as the edge box of this site (a NATS leaf node)")
    p_up.add_argument(
        "--hub",
        default=os.environ.get("GILIRAN_HUB_LEAF_URL"),
        help="with --site: the hub's leaf URL, nats-leaf://leaf-<site>:<pw>@host:7422 (default "
        "$GILIRAN_HUB_LEAF_URL: keeps the password out of the process list)",
    )
    p_up.set_defaults(func=up)
    p_hub = commands.add_parser(
        "hub", help="run the kabupaten hub: NATS leaf listener, store, intake and reporting"
    )
    p_hub.add_argument("--data", type=Path, help=f"data directory (default {default_data_dir()})")
    p_hub.add_argument("--leaf-port", type=int, default=7422, help="where site boxes connect")
    p_hub.add_argument("--sites", help="comma-separated site slugs (default: the catalogue's)")
    p_hub.add_argument("--ready-timeout", type=float, default=60.0)
    p_hub.set_defaults(func=hub, demo=False)
    p_edge = commands.add_parser(
        "edge-config", help="print the nats-server configuration of a site box or the hub"
    )
    p_edge.add_argument("role", choices=("site", "hub"))
    p_edge.add_argument("site", nargs="?", help="the site slug (site role)")
    p_edge.add_argument("--leaf-port", type=int, default=7422)
    p_edge.add_argument("--sites", help="hub role: comma-separated site slugs (default: all)")
    p_edge.set_defaults(func=edge_config)
    p_service = commands.add_parser("service", help="run one service (what a container runs)")
    p_service.add_argument("name", choices=SERVICES)
    p_service.set_defaults(func=service)
    p_reporting = commands.add_parser("reporting", help="reporting maintenance")
    reporting_commands = p_reporting.add_subparsers(dest="action", required=True)
    p_rebuild = reporting_commands.add_parser(
        "rebuild",
        help="replay the event stream into a fresh database and prove it equals the live one",
    )
    p_rebuild.add_argument("--into", help="database prefix for the rebuilt projections")
    p_rebuild.add_argument("--keep", action="store_true", help="keep the rebuilt database")
    p_rebuild.set_defaults(func=reporting)
    p_keys = commands.add_parser("keys", help="key rotation")
    keys_commands = p_keys.add_subparsers(dest="action", required=True)
    p_rotate = keys_commands.add_parser(
        "rotate-nik",
        help="re-encrypt stored NIKs with the newest GILIRAN_NIK_ENCRYPTION_KEY (resumable)",
    )
    p_rotate.add_argument("--batch", type=int, default=200, help="records per read")
    p_rotate.set_defaults(func=keys)
    from giliran.auth.cli import add_parsers as add_account_parsers

    add_account_parsers(commands)
    p_docs = commands.add_parser("asyncapi", help="print the AsyncAPI document of all services")
    p_docs.set_defaults(func=asyncapi)
    p_nats = commands.add_parser(
        "nats-config", help="print NATS users and permissions derived from the services' code"
    )
    p_nats.set_defaults(func=nats_config)
    p_passwords = commands.add_parser(
        "nats-passwords", help="print fresh NATS_PASSWORD_<USER> lines for compose's .env"
    )
    p_passwords.set_defaults(func=nats_passwords)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["DEFAULT_PORTS", "main"]
