"""`giliran accounts ...`, `giliran audit verify`, and the demo accounts of `up --demo`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import secrets
import sys
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import nats

from giliran.auth.accounts import ALL_SITES, AccountExists, AuthStore, Role
from giliran.auth.audit import AuditKeys, AuditLog
from giliran.auth.credentials import CREDENTIALS_CHANGED, REMEMBER_SECONDS
from giliran.settings import Settings
from giliran.store import connect

ROLES = [r.value for r in Role]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    accounts = commands.add_parser("accounts", help="people, roles and API tokens")
    actions = accounts.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a person (the password is asked for)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--site", default=ALL_SITES, help="a site slug, or * for every site")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(func=_run(_add))
    password = actions.add_parser("password", help="set a new password (ends their sessions)")
    password.add_argument("name")
    password.add_argument("--password-stdin", action="store_true")
    password.set_defaults(func=_run(_password))
    unlock = actions.add_parser("unlock", help="lift a sign-in lock after failed tries")
    unlock.add_argument("name")
    unlock.set_defaults(func=_run(_unlock))
    token = actions.add_parser("token", help="issue an API token (shown once)")
    token.add_argument("label", help="what holds it, e.g. board-hall-1")
    token.add_argument("--role", choices=ROLES, required=True)
    token.add_argument("--site", required=True, help="a site slug, or * for every site")
    token.set_defaults(func=_run(_token))
    revoke = actions.add_parser("revoke", help="revoke an API token by its id")
    revoke.add_argument("token_id")
    revoke.set_defaults(func=_run(_revoke))
    listing = actions.add_parser("tokens", help="list API tokens (never their values)")
    listing.set_defaults(func=_run(_tokens))

    audit = commands.add_parser("audit", help="the audit trail")
    audit_actions = audit.add_subparsers(dest="action", required=True)
    verify = audit_actions.add_parser("verify", help="check the hash chain of the audit trail")
    verify.set_defaults(func=_run(_verify))


Command = Callable[[argparse.Namespace, AuthStore, AuditLog], Awaitable[int]]


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def main() -> int:
            settings = Settings()
            client = connect(settings.mongo_url)
            try:
                database = client[settings.auth_database]
                store = AuthStore(database)
                store.on_change = lambda: _announce(settings)
                await store.ensure_indexes()
                key = settings.audit_key.get_secret_value() if settings.audit_key else None
                return await command(args, store, AuditLog(database, "cli", AuditKeys.parse(key)))
            finally:
                await client.close()

        return asyncio.run(main())

    return run


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Kata sandi / Password: ")
    if first != getpass.getpass("Ulangi / Repeat: "):
        raise SystemExit("Kata sandi tidak sama / The passwords differ.")
    return first


def _check_password(password: str) -> None:
    if len(password) < 10:
        raise SystemExit("Kata sandi minimal 10 karakter / A password needs 10 characters or more.")


async def _add(args: argparse.Namespace, store: AuthStore, _: AuditLog) -> int:
    password = _read_password(args)
    _check_password(password)
    try:
        await store.add_user(args.name, password, Role(args.role), args.site)
    except AccountExists:
        print(f"'{args.name}' sudah ada / already exists", file=sys.stderr)
        return 1
    print(f"added {args.name} ({args.role} at {args.site})")
    return 0


async def _password(args: argparse.Namespace, store: AuthStore, _: AuditLog) -> int:
    password = _read_password(args)
    _check_password(password)
    if not await store.set_password(args.name, password):
        print(f"'{args.name}' tidak dikenal / unknown", file=sys.stderr)
        return 1
    print(f"password of {args.name} changed; their sessions ended")
    return 0


async def _unlock(args: argparse.Namespace, store: AuthStore, _: AuditLog) -> int:
    await store.clear_failed_sign_ins(args.name)
    print(f"{args.name} may sign in again / boleh masuk lagi")
    return 0


async def _token(args: argparse.Namespace, store: AuthStore, _: AuditLog) -> int:
    token_id, token = await store.issue_token(args.label, Role(args.role), args.site)
    print(f"token id {token_id} ({args.role} at {args.site}); shown once, keep it secret:")
    print(token)
    return 0


async def _revoke(args: argparse.Namespace, store: AuthStore, _: AuditLog) -> int:
    if not await store.revoke_token(args.token_id):
        print(f"token id '{args.token_id}' tidak dikenal / unknown", file=sys.stderr)
        return 1
    print(f"revoked {args.token_id}")
    return 0


async def _tokens(_: argparse.Namespace, store: AuthStore, __: AuditLog) -> int:
    for doc in await store.list_tokens():
        state = "revoked" if doc.get("revoked") else "active"
        print(f"{doc['_id']}  {doc['role']:<10} {doc['site']:<20} {state:<8} {doc['label']}")
    return 0


async def _verify(_: argparse.Namespace, __: AuthStore, audit: AuditLog) -> int:
    found = await audit.verify()
    keyed = ", ".join(f"{n} by key {k}" for k, n in sorted(found.by_key.items()))
    if found.broken is not None:
        print(
            f"BROKEN at record {found.broken.seq}: {found.broken.reason} "
            f"({found.checked} record(s) before it are intact: {keyed or 'none'})"
        )
        return 1
    print(f"ok: {found.checked} record(s), chain head {found.head} ({keyed or 'empty'})")
    if "demo" in found.by_key:
        print(
            "note: records keyed with the public demo key show accidents, not tampering: anyone "
            "with store access could have rewritten them (set GILIRAN_AUDIT_KEY)"
        )
    return 0


DEMO_PEOPLE = (
    ("admin", Role.ADMIN, ALL_SITES),
    ("supervisor", Role.SUPERVISOR, "{site}"),
    ("petugas", Role.OFFICER, "{site}"),
    ("auditor", Role.AUDITOR, ALL_SITES),
    # The kiosk pages need a kiosk's sign-in (ADR 0102): sign the kiosk's browser in as this.
    ("kios", Role.KIOSK, "{site}"),
)


async def _announce(settings: Settings) -> None:
    """Tell the running services that a credential changed, so a revoked token or an ended
    session stops working at once; without NATS they notice within REMEMBER_SECONDS."""
    password = settings.nats_password.get_secret_value() if settings.nats_password else None
    try:
        # nats-py keeps trying an unreachable server past its connect_timeout: bound it all.
        async with asyncio.timeout(3):
            connection = await nats.connect(
                settings.nats_url,
                user=settings.nats_user,
                password=password,
                connect_timeout=2,
                allow_reconnect=False,
            )
            try:
                await connection.publish(CREDENTIALS_CHANGED, b"")
                await connection.flush(timeout=2)
            finally:
                await connection.close()
    except Exception:  # any failure means the same to the operator: when it takes effect
        print(
            f"NATS tidak terjangkau: berlaku di layanan lain dalam {REMEMBER_SECONDS:.0f} detik / "
            f"NATS unreachable: takes effect in the other services within "
            f"{REMEMBER_SECONDS:.0f} s",
            file=sys.stderr,
        )


# Labels of the tokens `giliran up --demo` makes (reserved: revoked at every demo start).
DEMO_TOKENS = ("demo-board", "demo-api")


async def demo_accounts(settings: Settings, site: str, queue_url: str) -> list[str]:
    """Demo people with fresh random passwords at every start, a board token and an API token,
    as lines for `giliran up --demo` to print. Never called outside demo mode."""
    client = connect(settings.mongo_url)
    lines = ["  demo accounts (new passwords at every start; sign in at any service's /login):"]
    try:
        store = AuthStore(client[settings.auth_database])
        await store.ensure_indexes()
        for name, role, where in DEMO_PEOPLE:
            password = secrets.token_urlsafe(9)
            scope = where.format(site=site)
            try:
                await store.add_user(name, password, role, scope)
            except AccountExists:
                await store.set_password(name, password)
            lines.append(f"    {role.value:<10} {name} / {password}  ({scope})")
        # The tokens printed at earlier starts end now: a demo box's old board link or API
        # token, copied somewhere, must not keep working for ever.
        await store.revoke_labelled(DEMO_TOKENS)
        # The services are running: an old demo token or session they remember ends at once.
        # One notice for every password and token replaced above, not one connection each.
        await _announce(settings)
        _, board = await store.issue_token("demo-board", Role.DISPLAY, site)
        _, api = await store.issue_token("demo-api", Role.SUPERVISOR, site)
        next_url = quote(f"/board?site={site}", safe="")
        lines.append(f"    board      {queue_url}/device?token={board}&next={next_url}")
        lines.append(f"    api token  {api}  (supervisor at {site}; Authorization: Bearer)")
    finally:
        await client.close()
    return lines
