"""NATS users and permissions, derived from what each service's code publishes and consumes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from giliran.auth.epochs import BUCKET as EPOCH_BUCKET
from giliran.auth.epochs import KEY as EPOCH_KEY
from giliran.contracts.subjects import (
    DLQ_STREAM,
    PERSONAL_STREAM,
    PREFIX,
    STREAM,
    STREAM_OWNER,
    device_user,
    event_pattern,
    inbox_prefix,
)

if TYPE_CHECKING:
    from giliran.runtime import ServiceRuntime

JS_API = "$JS.API"
OPS_USER = "ops"


@dataclass(frozen=True)
class Grants:
    """One NATS user's allow-lists; anything not listed is refused by the server."""

    user: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    # Lets a request-reply responder answer on whatever reply subject a request carried.
    allow_responses: bool = False
    comment: str = ""


def password_variable(user: str) -> str:
    """The environment variable nats-server reads a user's password from (never in the file)."""
    return "NATS_PASSWORD_" + user.upper().replace("-", "_")


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def service_grants(runtime: ServiceRuntime) -> Grants:
    """What a service may do, read from its runtime after its app.py has wired it: the events
    declared with `publishes`, the durables registered with `consume`, the commands it serves
    (FastStream subscribers) or sends, and the plain subjects it watches."""
    service = runtime.service
    publish: list[str] = [event_pattern(model.entity, model.event) for model in runtime.published]
    # Dead letters keep the original site/entity/event under the service's own name only.
    publish.append(f"{PREFIX}.*.dlq.{service}.*.*")
    publish.extend(runtime.commands_sent)
    # Every service may create a missing stream (with nothing in it, there is no history to
    # lose), but only the stream owner may reshape an existing one (ADR 0111): another could
    # otherwise update GILIRAN to max_msgs 1 and wipe the history. None may delete, purge or
    # read them wholesale.
    verbs = ("INFO", "CREATE", "UPDATE") if service == STREAM_OWNER else ("INFO", "CREATE")
    for stream in (STREAM, DLQ_STREAM, PERSONAL_STREAM):
        for verb in verbs:
            publish.append(f"{JS_API}.STREAM.{verb}.{stream}")
    # Operators list a service's dead letters through its own endpoint (message by message).
    publish.append(f"{JS_API}.STREAM.MSG.GET.{DLQ_STREAM}")
    # The credential epoch (ADR 0231): made if missing, read before an action, advanced by a
    # credential change. Advancing it costs another service nothing but store reads.
    epochs = f"KV_{EPOCH_BUCKET}"
    publish += [
        f"{JS_API}.STREAM.INFO.{epochs}",
        f"{JS_API}.STREAM.CREATE.{epochs}",
        f"{JS_API}.DIRECT.GET.{epochs}.>",
        f"{JS_API}.STREAM.MSG.GET.{epochs}",  # a bucket made without direct reads
        f"$KV.{EPOCH_BUCKET}.{EPOCH_KEY}",
    ]
    for consumer in runtime.consumers:
        durable, stream = consumer.durable, consumer.stream
        publish += [
            # nats-py names the filter subject in the create subject (server >= 2.9).
            f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}",
            f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}.>",
            f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
            f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
            f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
            # Acks, NAKs and terms go to the reply subject of each delivered message.
            f"$JS.ACK.{stream}.{durable}.>",
        ]
    # FastStream keeps a subscriber's subject pattern only in a private attribute.
    commands = sorted(
        str(getattr(s, "_resolved_subject_string", "")) for s in runtime.broker.subscribers
    )
    if not all(commands):
        raise RuntimeError("cannot read the subjects of FastStream subscribers")
    subscribe = [f"{inbox_prefix(service)}.>", *commands, *(s for s, _ in runtime.watches)]
    return Grants(
        user=service,
        publish=_unique(publish),
        subscribe=_unique(subscribe),
        allow_responses=bool(commands),
        comment=f"the {service} service",
    )


def device_grants(site: str) -> Grants:
    """A counter device (booth PC, keypad bridge) may only command the queue at its own site."""
    user = device_user(site)
    return Grants(
        user=user,
        publish=(f"{PREFIX}.{site}.cmd.queue.*",),
        subscribe=(f"{inbox_prefix(user)}.>",),
        comment=f"counter devices at {site}",
    )


def render_config(services: Mapping[str, Grants], sites: Iterable[str]) -> str:
    """The `authorization` block of nats-server's configuration (deploy/nats/giliran.conf)."""
    users = [*services.values(), *(device_grants(site) for site in sorted(sites))]
    lines = [
        "# NATS users and permissions of Giliran. GENERATED by `giliran nats-config` from the",
        "# services' code (what each declares it publishes, consumes, serves and sends):",
        "# regenerate rather than edit; tests/integration/test_nats_permissions.py checks it.",
        "# Passwords are never in this file: nats-server reads each from the environment",
        "# variable named here (`giliran up` generates them; compose passes them through).",
        "authorization {",
        "  users = [",
        "    # Operators and tools (stream replay, benchmarks, tests): no restrictions.",
        f'    {{ user: "{OPS_USER}", password: ${password_variable(OPS_USER)} }}',
    ]
    for grants in users:
        lines += [
            f"    # {grants.comment}",
            "    {",
            f'      user: "{grants.user}"',
            f"      password: ${password_variable(grants.user)}",
            "      permissions: {",
            "        publish: {",
            "          allow: [",
            *(f"            {json.dumps(subject)}" for subject in grants.publish),
            "          ]",
            "        }",
            "        subscribe: {",
            "          allow: [",
            *(f"            {json.dumps(subject)}" for subject in grants.subscribe),
            "          ]",
            "        }",
        ]
        if grants.allow_responses:
            lines.append("        allow_responses: true")
        lines += ["      }", "    }"]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def all_users(services: Iterable[str], sites: Iterable[str]) -> list[str]:
    return [OPS_USER, *services, *(device_user(s) for s in sorted(sites))]


def server_environment(passwords: Mapping[str, str]) -> dict[str, str]:
    """The variables nats-server needs for `passwords`. It parses a variable's value as config
    syntax (a password starting with a digit would read as a number), so each is quoted."""
    return {password_variable(user): json.dumps(password) for user, password in passwords.items()}
