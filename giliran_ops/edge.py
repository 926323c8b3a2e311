"""Edge site mode: nats-server configs for site boxes (leaf nodes) and the kabupaten hub, and the
streams that carry events up (hub sources each site) and calendar changes down (sites source
the hub)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

import nats
from nats.aio.client import Client
from nats.js.api import ExternalStream, StorageType, StreamConfig, StreamSource
from nats.js.client import JetStreamContext

from giliran.bus import put_stream
from giliran.contracts.subjects import (
    CATALOGUE_PREFIX,
    CATALOGUE_STREAM,
    DUPLICATE_WINDOW_SECONDS,
    PREFIX,
    STREAM,
    catalogue_subject,
    inbox_prefix,
)
from giliran.settings import SERVICES

log = logging.getLogger("giliran.edge")

# The hub's JetStream domain; a site box's domain is its site slug (see site_domain).
HUB_DOMAIN = "hub"
LEAF_PORT = 7422
# Calendar changes an admin makes at the hub, one subject per site: giliran.catalogue.<site>
# (three tokens, so never inside GILIRAN's giliran.*.*.*). Sites source only their own.
# Where the site config finds the hub's leaf URL, credentials included (never in the file).
HUB_URL_VARIABLE = "GILIRAN_HUB_LEAF_URL"
# The hub's own processes (its services, its caretaker) sign in as this user; the leaf users
# are client users too, so that each carries permissions (nats-server's leafnode users cannot).
HUB_USER = "hub"
HUB_PASSWORD_VARIABLE = "NATS_PASSWORD_HUB"


def site_domain(site: str) -> str:
    """A site box's JetStream domain: its slug (unique in the kabupaten, a valid subject token)."""
    if site == HUB_DOMAIN:
        raise ValueError(f"a site cannot be called {HUB_DOMAIN!r}: that is the hub's domain")
    return site


def js_api(domain: str) -> str:
    """The JetStream API of another domain, as reached across the leaf connection."""
    return f"$JS.{domain}.API"


def leaf_user(site: str) -> str:
    return f"leaf-{site}"


def leaf_password_variable(site: str) -> str:
    return "NATS_LEAF_PASSWORD_" + site.upper().replace("-", "_")


def deliver_up(site: str) -> str:
    """Where a site box delivers its events to the hub's sourcing (a prefix of its own per site,
    so the hub can allow each leaf user its own deliveries only)."""
    return f"giliran-up.{site}"


def deliver_down(site: str) -> str:
    """Where the hub delivers a site's calendar changes to the site's copy."""
    return f"giliran-down.{site}"


def hub_inboxes() -> tuple[str, ...]:
    """The reply inboxes of the hub's own processes (`_INBOX.<service>` or `_INBOX.hub`): its
    intake and reporting fetch every site's events into them. No leaf user may read them (a
    stolen box would get the kabupaten's events) nor publish into them (forged answers); the
    caretakers' plain `_INBOX.<nuid>` inboxes, which the leaf link needs, stay allowed."""
    return tuple(f"{inbox_prefix(name)}.>" for name in (*SERVICES, HUB_USER))


def leaf_permissions(site: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a site box's leaf user may send to the hub and receive from it (ADR 0060, issue 14):
    a stolen box can answer the hub's requests for its own domain, deliver its own events,
    and source its own calendar changes. It cannot publish a calendar change or an event (for
    any site), use the hub's JetStream API beyond that (purge, update, delete, read the
    kabupaten's stream), nor receive the hub's requests for another site's domain (so it cannot
    pose as another site's box)."""
    publish = (
        f"{js_api(HUB_DOMAIN)}.INFO",  # the caretaker's "is the hub there" (rearm_catalogue)
        # Its copy of the hub's calendar changes: a consumer filtered to its own subject.
        f"{js_api(HUB_DOMAIN)}.CONSUMER.CREATE.{CATALOGUE_STREAM}.*.{catalogue_subject(site)}",
        f"{js_api(HUB_DOMAIN)}.CONSUMER.DELETE.{CATALOGUE_STREAM}.*",
        f"{deliver_up(site)}.>",  # its events, to the hub's source of this site
        "$JS.FC.>",  # flow-control answers of sourcing
        # Replies to the hub's requests to its domain (consumer create/info/delete).
        "$JSC.R.>",
        "_INBOX.>",
    )
    subscribe = (
        f"{js_api(site_domain(site))}.>",  # the hub's requests to this site's JetStream
        f"{deliver_down(site)}.>",
        "$JS.FC.>",
        "$JSC.R.>",
        "_INBOX.>",
    )
    return publish, subscribe


# What the leaf link refuses to carry, both ways (docs/decisions/0060). No Giliran subject
# crosses as a live message: events reach the hub only through its stream's sourcing (so nothing
# at the hub can capture them a second time) and calendar changes reach a site only through its
# copy of the hub's stream; a site's commands, replies and dead letters stay at the site, and
# nothing from the hub lands on a site's subjects. Plain $JS.API stays on each side (each
# reaches the other only under its domain, $JS.<domain>.API), so a site's services never talk
# to the hub's JetStream by mistake. What sourcing itself needs (domain APIs, its own delivery
# and flow-control subjects) is not Giliran's and passes.
SITE_DENY_EXPORTS = (f"{PREFIX}.>", "$JS.API.>")
SITE_DENY_IMPORTS = (f"{PREFIX}.>", "$JS.API.>")


def _strings(items: Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def render_site_config(site: str) -> str:
    """nats-server configuration of a site box: JetStream in the site's own domain, and a leaf
    connection to the hub whose URL (with the site's leaf credentials) comes from the
    environment. Client port and store directory come from the command line."""
    return "\n".join(
        [
            f"# Giliran edge site box {site}. GENERATED by `giliran edge-config site {site}`:",
            "# regenerate rather than edit (tests/unit/test_edge_config.py checks it).",
            f"# The hub's leaf URL with this site's credentials comes from ${HUB_URL_VARIABLE},",
            f"# e.g. nats-leaf://{leaf_user(site)}:<password>@hub.example:{LEAF_PORT}.",
            "jetstream {",
            "  # Local clients' $JS.API stays on this box; the hub reaches it as",
            f"  # {js_api(site_domain(site))}.",
            f"  domain: {json.dumps(site_domain(site))}",
            "}",
            "leafnodes {",
            "  # Retry the hub every few seconds for ever: the site works the same meanwhile.",
            '  reconnect: "2s"',
            "  remotes: [",
            "    {",
            f"      url: ${HUB_URL_VARIABLE}",
            "      # Only the URL given: the hub's own view of its addresses (a LAN address behind",
            "      # the kabupaten's NAT, say) is not a way to reach it from a field.",
            "      ignore_discovered_servers: true",
            f"      deny_exports: {_strings(SITE_DENY_EXPORTS)}",
            f"      deny_imports: {_strings(SITE_DENY_IMPORTS)}",
            "    }",
            "  ]",
            "}",
            "",
        ]
    )


def render_hub_config(sites: Iterable[str], *, leaf_port: int = LEAF_PORT) -> str:
    """nats-server configuration of the kabupaten hub: JetStream in the hub domain, its own
    processes as user `hub`, and a leaf listener where each site box signs in as its own user
    with the permissions of `leaf_permissions` (passwords from the environment)."""
    lines = [
        "# Giliran kabupaten hub. GENERATED by `giliran edge-config hub`: regenerate rather than",
        "# edit (tests/unit/test_edge_config.py checks it). Each site box signs in to the leaf",
        "# port as leaf-<site>; nats-server reads each password from the variable named here.",
        "# Leaf users are listed here, not under leafnodes, because only here can they carry",
        "# permissions (what a stolen site box may still do: ADR 0060, docs/edge.md).",
        "jetstream {",
        f"  domain: {json.dumps(HUB_DOMAIN)}",
        "}",
        "authorization {",
        "  users: [",
        "    # The hub's own services and caretaker.",
        f'    {{ user: "{HUB_USER}", password: ${HUB_PASSWORD_VARIABLE} }}',
    ]
    deny = _strings(hub_inboxes())
    for site in sorted(sites):
        publish, subscribe = leaf_permissions(site)
        lines += [
            "    {",
            f'      user: "{leaf_user(site)}", password: ${leaf_password_variable(site)}',
            "      permissions: {",
            f"        publish: {{ allow: {_strings(publish)}, deny: {deny} }}",
            f"        subscribe: {{ allow: {_strings(subscribe)}, deny: {deny} }}",
            "      }",
            "    }",
        ]
    lines += [
        "  ]",
        "}",
        "leafnodes {",
        f'  listen: "0.0.0.0:{leaf_port}"',
        "}",
        "",
    ]
    return "\n".join(lines)


def hub_stream_config(sites: Iterable[str]) -> StreamConfig:
    """The hub's GILIRAN: no subjects of its own, one source per site across the leaf link, each
    filtered to that site's own events (a site cannot speak for another). Sourced messages keep
    their subjects and Nats-Msg-Id, so the hub's reporting runs unchanged on them."""
    return StreamConfig(
        name=STREAM,
        subjects=[],
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        description="Giliran events of every site, sourced from the site boxes",
        sources=[
            StreamSource(
                name=STREAM,
                filter_subject=f"{PREFIX}.{site}.*.*",
                external=ExternalStream(api=js_api(site_domain(site)), deliver=deliver_up(site)),
            )
            for site in sorted(sites)
        ],
    )


def hub_catalogue_config() -> StreamConfig:
    """Calendar changes made at the hub, kept so a site offline for days still gets them."""
    return StreamConfig(
        name=CATALOGUE_STREAM,
        subjects=[f"{CATALOGUE_PREFIX}.*"],
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        description="Calendar changes made at the hub, for the site boxes",
    )


def site_catalogue_config(site: str) -> StreamConfig:
    """A site's copy of its own calendar changes, sourced from the hub when the link is up."""
    return StreamConfig(
        name=CATALOGUE_STREAM,
        subjects=[],
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        description=f"Calendar changes for {site} made at the hub",
        sources=[
            StreamSource(
                name=CATALOGUE_STREAM,
                filter_subject=catalogue_subject(site),
                external=ExternalStream(api=js_api(HUB_DOMAIN), deliver=deliver_down(site)),
            )
        ],
    )


async def ensure_hub_streams(js: JetStreamContext, sites: Iterable[str]) -> None:
    await put_stream(js, hub_stream_config(sites))
    await put_stream(js, hub_catalogue_config())


async def ensure_site_streams(js: JetStreamContext, site: str) -> None:
    await put_stream(js, site_catalogue_config(site))


async def _answers(client: Client, domain: str) -> bool:
    """Whether a domain's JetStream answers across the leaf link right now."""
    try:
        await client.request(f"{js_api(domain)}.INFO", b"", timeout=1.0)
    except Exception:
        return False
    return True


async def source_activity(client: Client, stream: str) -> dict[str, int | None]:
    """Per source of `stream`, by its filter subject: nanoseconds since the stream last heard
    from it (None: not active). Read raw: nats-py's StreamSourceInfo drops the filter."""
    reply = await client.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=2.0)
    found: dict[str, int | None] = {}
    for source in json.loads(reply.data).get("sources") or []:
        active = source.get("active")
        found[str(source.get("filter_subject", ""))] = (
            active if isinstance(active, int) and active >= 0 else None
        )
    return found


IDLE_NS = 5_000_000_000  # a source heard from within 5 s is flowing (idle heartbeats count)


async def rearm_sources(client: Client, sites: Sequence[str]) -> list[str]:
    """At the hub: restart the sourcing of each site whose box answers again while its source
    is idle.

    nats-server retries a failed source with a growing backoff (measured: ~40 s after a hub
    restart before it asked a reconnected site again); the hub knows better when a site is
    back. Removing a source and adding it again makes the server resume it at once from the
    last sequence the hub's stream holds from that site (no gap, no copy): docs/decisions/0061."""
    activity = await source_activity(client, STREAM)
    idle = []
    for site in sites:
        key = f"{PREFIX}.{site}.*.*"
        if key not in activity or (activity[key] or IDLE_NS) < IDLE_NS:
            continue
        if await _answers(client, site_domain(site)):
            idle.append(site)
    if idle:
        js = client.jetstream()
        await js.update_stream(hub_stream_config([s for s in sites if s not in idle]))
        await js.update_stream(hub_stream_config(sites))
        log.info("edge: re-armed the sourcing of %s", ", ".join(idle))
    return idle


async def rearm_catalogue(client: Client, site: str) -> bool:
    """At a site box: the same for its copy of the hub's calendar changes (measured without it:
    ~37 s after a 20 s link drop before a change made meanwhile arrived)."""
    activity = await source_activity(client, CATALOGUE_STREAM)
    key = catalogue_subject(site)
    if key not in activity or (activity[key] or IDLE_NS) < IDLE_NS:
        return False
    if not await _answers(client, HUB_DOMAIN):
        return False
    config = site_catalogue_config(site)
    js = client.jetstream()
    await js.update_stream(dataclasses.replace(config, sources=[]))
    await js.update_stream(config)
    log.info("edge: re-armed %s's copy of the hub's calendar changes", site)
    return True


async def _caretaker(
    url: str,
    ensure: Callable[[Client], Awaitable[None]],
    round_: Callable[[Client], Awaitable[object]],
    every: float,
) -> None:
    async def quiet(exc: Exception) -> None:  # the server restarting is what this waits out
        log.debug("edge: caretaker connection: %s", exc)

    client = await nats.connect(
        url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=quiet
    )
    try:
        ensured = False
        while True:
            try:
                if not ensured:
                    await ensure(client)
                    ensured = True
                await round_(client)
            except Exception as exc:  # the nats-server restarting: try again shortly
                log.debug("edge: caretaker: %s", exc)
            await asyncio.sleep(every)
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def keep_hub(url: str, sites: Sequence[str], *, every: float = 2.0) -> None:
    """The hub's caretaker (run by `giliran hub`): make sure its streams exist, then keep
    re-arming the sourcing of sites whose link has come back. Runs until cancelled."""

    async def ensure(client: Client) -> None:
        await ensure_hub_streams(client.jetstream(), sites)

    async def round_(client: Client) -> object:
        return await rearm_sources(client, sites)

    await _caretaker(url, ensure, round_, every)


async def keep_site(url: str, site: str, *, every: float = 2.0) -> None:
    """A site box's caretaker (run by `giliran up --site`): its copy of the hub's calendar
    changes exists, and is re-armed as soon as the hub answers again. Runs until cancelled."""

    async def ensure(client: Client) -> None:
        await ensure_site_streams(client.jetstream(), site)

    async def round_(client: Client) -> object:
        return await rearm_catalogue(client, site)

    await _caretaker(url, ensure, round_, every)
