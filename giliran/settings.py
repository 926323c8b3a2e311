"""One settings class for every process, read from GILIRAN_* environment variables."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A secret shorter than this, with fewer distinct characters, or that looks like a template's
# placeholder ("<random>", "changeme") is refused at start (ADR 0113); `giliran up` makes
# 43-character ones, deploy/env.example says how to make them by hand.
SECRET_MIN_LENGTH = 32
SECRET_MIN_DISTINCT = 10
PLACEHOLDER_MARKS = ("<", ">", "changeme", "change-me", "change_me", "replace", "example", "random")
# In GILIRAN_NIK_ENCRYPTION_KEY's list: the key derived from the NIK hash key (old installs).
DERIVED_KEY = "derived"

ServiceName = Literal["intake", "queue", "notify", "reporting"]
SERVICES: tuple[ServiceName, ...] = ("intake", "queue", "notify", "reporting")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORTS: dict[ServiceName, int] = {
    "intake": 8101,
    "queue": 8102,
    "reporting": 8103,
    "notify": 8104,
}


class KioskPrinter(BaseModel):
    """A kiosk's ticket printer (GILIRAN_KIOSK_PRINTERS, by kiosk name): the paper width, and
    where intake sends ESC/POS — a network printer's raw port or a USB printer's device file.
    Neither: the kiosk prints from its browser, at this paper width."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    site: str
    paper: Literal[58, 80] = 80
    host: str | None = None  # e.g. the printer's LAN address; raw ESC/POS on `port`
    port: int = Field(default=9100, ge=1, le=65535)
    device: Path | None = None  # Linux usblp: /dev/usb/lp0
    profile: str | None = None  # python-escpos printer profile; default by paper width
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)

    @model_validator(mode="after")
    def _one_way(self) -> KioskPrinter:
        if self.host is not None and self.device is not None:
            raise ValueError("a kiosk printer has a host or a device, not both")
        return self

    @property
    def escpos(self) -> bool:
        return self.host is not None or self.device is not None


class Settings(BaseSettings):
    """Everything a service process needs to know about its surroundings."""

    # An empty variable (compose's `.env` lists every name, `GILIRAN_NATS_PASSWORD=`) is unset:
    # no setting has to tell "" from None by itself.
    model_config = SettingsConfigDict(env_prefix="GILIRAN_", extra="ignore", env_ignore_empty=True)

    nats_url: str = "nats://127.0.0.1:4222"
    mongo_url: str = "mongodb://127.0.0.1:27017"
    # NATS credentials of this service (deploy/nats/giliran.conf: one user per service, allowed
    # only its own events); unset: an open server, as in development without --secure.
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    # Each service owns the database "<db_prefix>_<service>"; tests use a unique prefix per test.
    db_prefix: str = "giliran"
    host: str = "127.0.0.1"
    # Addresses whose X-Forwarded-For/-Proto uvicorn believes (its default: only 127.0.0.1).
    # Behind the reverse proxy of compose.yaml or a Kubernetes ingress, the proxy's address (or
    # "*" where only the proxy can reach the service): otherwise every citizen shares the
    # proxy's address and its registration rate limit.
    forwarded_allow_ips: str = "127.0.0.1"
    intake_port: int = DEFAULT_PORTS["intake"]
    queue_port: int = DEFAULT_PORTS["queue"]
    reporting_port: int = DEFAULT_PORTS["reporting"]
    notify_port: int = DEFAULT_PORTS["notify"]
    # Public base URL of intake, used in status links sent to citizens and in the printed
    # ticket's QR code: an address their phones reach (office mode sets it; start-up warns
    # when it is unset or loopback).
    public_url: str = ""
    # Kiosk printers by kiosk name (the kiosk page's ?kiosk=): JSON, e.g.
    # {"lobby": {"site": "cikarang-utara", "paper": 58, "host": "printer.lan"}}.
    kiosk_printers: dict[str, KioskPrinter] = Field(default_factory=dict)
    catalogue_dir: Path = REPO_ROOT / "deploy" / "sites"
    timezone: str = "Asia/Jakarta"
    # --demo: an ad-hoc session at the demo site, open from start-up for 12 hours.
    demo: bool = False
    demo_site: str = "cikarang-utara"
    # Key of the keyed NIK hash (HMAC-SHA256), required by intake; `giliran up` makes one.
    nik_hash_key: SecretStr | None = None
    # Intake: Fernet key for NIKs at rest (unset: derived from nik_hash_key with HKDF).
    nik_encryption_key: SecretStr | None = None
    # Signs session cookies and CSRF tokens (every service, the same key). Required outside
    # demo mode: start-up refuses without it. `giliran up` keeps one per data directory.
    session_key: SecretStr | None = None
    # Keys the audit trail's hash chain (HMAC-SHA256; every service, the same value): kept out
    # of the store, so store access alone cannot rewrite history unseen. Comma-separated, newest
    # first (rotation: docs/security.md). Required outside demo mode; `giliran up` makes one.
    audit_key: SecretStr | None = None
    # Deprecated: the admin token of intake from before accounts; still accepted as an admin
    # API token (logged) until it is replaced by `giliran accounts token --role admin`.
    admin_token: SecretStr | None = None
    # Password checks (argon2id, 64 MiB each) running at once per process; a sign-in beyond
    # them is answered 503 with Retry-After at once (ADR 0112). Memory: about 64 MiB each.
    login_concurrency: int = Field(default=2, ge=1, le=16)
    # Server-push streams (boards, dashboards, status pages) open at once per process: per client
    # address (a fair's wifi shares one: raise it there) and per credential or status link.
    sse_per_address: int = Field(default=50, ge=1)
    sse_per_credential: int = Field(default=10, ge=1)
    # Requests with a larger body are refused with 413 (forms and JSON here are small).
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # Intake purges a session's personal data this many days after it (UU 27/2022).
    purge_after_days: int = Field(default=30, ge=0)
    purge_interval_seconds: float = 3600.0
    # How long anything that reaches a citizen (phone, e-mail, status-link token) is kept on the
    # bus and by notify after the request, then forgotten (ADR 0115). Every service applies it
    # to the personal stream's max age at start: set the same value everywhere.
    contact_retention_hours: float = Field(default=48.0, gt=0)
    # How often intake lapses registrations not checked in within their grace (ADR 0120).
    lapse_interval_seconds: float = Field(default=30.0, gt=0)
    # Intake's limits against bots: registrations per client address a minute and per phone
    # an hour; the exempt addresses are kiosks and the box itself (all share one address).
    rate_ip_per_minute: int = Field(default=30, ge=1)
    rate_phone_per_hour: int = Field(default=5, ge=1)
    rate_limit_exempt: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Check-in codes are short: attempts per client address a minute (exempt addresses too are
    # bounded by the next one), and failed code attempts per site an hour, for every address
    # together; a QR (status link) check-in is never held back by the latter (ADR 0101).
    rate_checkin_ip_per_minute: int = Field(default=10, ge=1)
    rate_checkin_failures_per_site_per_hour: int = Field(default=60, ge=1)
    # "Resend my status link": asks per client address an hour and per NIK and contact an hour
    # (ADR 0100).
    rate_resend_ip_per_hour: int = Field(default=10, ge=1)
    rate_resend_nik_per_hour: int = Field(default=3, ge=1)
    # How long intake's status page waits for the queue's position/ETA answer.
    status_query_timeout_seconds: float = 0.5
    # How long POST /requests waits for the queue to issue tickets before answering 202.
    ticket_wait_seconds: float = 2.0
    # Copies of the event and dead-letter streams in a JetStream cluster (1 on a single server;
    # 3 on the 3-node cluster of deploy/k8s/). Applied at every start.
    stream_replicas: int = Field(default=1, ge=1, le=5)
    # Consumer retry policy: deliveries before a message is dead-lettered, and backoff between them.
    max_deliver: int = 5
    retry_backoff_seconds: list[float] = Field(default_factory=lambda: [0.5, 2.0, 5.0, 15.0])
    outbox_poll_seconds: float = 0.5
    # Reports: the share of tickets called within this wait is "served within target".
    target_wait_minutes: float = 30.0
    # Queue call rules (README "Call rules"): one priority call per N normal calls; aging bound;
    # appointment grace; recalls before a no-show; re-check-in window and its penalty.
    queue_normal_per_priority: int = Field(default=3, ge=1)
    queue_max_wait_minutes: float = Field(default=45.0, gt=0)
    queue_appointment_grace_minutes: float = Field(default=10.0, ge=0)
    queue_no_show_after_recalls: int = Field(default=2, ge=0)
    queue_recheck_grace_minutes: float = Field(default=30.0, ge=0)
    queue_recheck_penalty_minutes: float = Field(default=15.0, ge=0)
    # ETA before a service has any completions of its own this session.
    queue_default_service_minutes: float = Field(default=8.0, gt=0)
    # Edge site mode (docs/edge.md): the site this box serves as a leaf node of the kabupaten
    # hub (intake applies the hub's calendar changes for it), or this is the hub (intake sends
    # its admins' calendar changes down to the sites).
    edge_site: str | None = None
    edge_hub: bool = False
    # The board's spoken calls (ADR 0146): eSpeak NG's program, by name on PATH or a path.
    voice_command: str = "espeak-ng"
    # Notification channels (YAML, see deploy/notify/); unset: the console channel only.
    notify_config: Path | None = None
    # uvloop + httptools under uvicorn (ADR 0083): "asyncio" runs the standard loop and h11,
    # for comparing (bench/sustained.py --env GILIRAN_EVENT_LOOP=asyncio) or for a platform
    # without uvloop.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    log_level: str = "INFO"
    # "json": one JSON object per line (compose, k8s, log shippers); "text": a plain line for a
    # terminal. Both carry the correlation id (docs/observability.md).
    log_format: Literal["json", "text"] = "text"
    # One INFO line per event a consumer handled (consumer, type, id, duration, correlation id):
    # follows a citizen through every service's log, at ~30 µs per event and consumer.
    log_events: bool = False
    # How often gauges read from NATS and the store (consumer lag, outbox backlog, waiting lines)
    # are refreshed: about Prometheus's scrape interval; never per message.
    metrics_refresh_seconds: float = Field(default=15.0, gt=0)

    def weak_secrets(self) -> list[str]:
        """Why each secret setting that is set cannot be used (names, never values): too
        short, too few distinct characters, or a placeholder copied from an example."""
        problems = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if not isinstance(value, SecretStr):
                continue
            variable = f"GILIRAN_{name.upper()}"
            parts = (
                value.get_secret_value().split(",")
                if name in ("nik_encryption_key", "audit_key")  # lists: each key must hold
                else [value.get_secret_value()]
            )
            for part in (p.strip() for p in parts):
                if name == "nik_encryption_key" and part == DERIVED_KEY:
                    continue
                why = _weakness(part)
                if why:
                    problems.append(f"{variable}: {why}")
        return problems

    def port_of(self, service: ServiceName) -> int:
        port: int = getattr(self, f"{service}_port")
        return port

    def url_of(self, service: ServiceName) -> str:
        """Where this machine reaches a service (a wildcard listen address is not a URL)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port_of(service)}"

    def database_name(self, service: ServiceName) -> str:
        return f"{self.db_prefix}_{service}"

    @property
    def auth_database(self) -> str:
        """Accounts, tokens, sessions and the audit trail: the one database all services read
        (docs/decisions/0040-accounts-in-a-shared-auth-database.md)."""
        return f"{self.db_prefix}_auth"


def _weakness(secret: str) -> str | None:
    lowered = secret.lower()
    if any(mark in lowered for mark in PLACEHOLDER_MARKS):
        return "masih berisi contoh/placeholder / still a placeholder from an example"
    if len(secret) < SECRET_MIN_LENGTH:
        n = SECRET_MIN_LENGTH
        return f"kurang dari {n} karakter / shorter than {n} characters"
    if len(set(secret)) < SECRET_MIN_DISTINCT:
        return "terlalu sedikit karakter berbeda / too few distinct characters"
    return None


def is_loopback_url(url: str) -> bool:
    """Whether links to `url` reach only this machine (no citizen's phone can open them)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified  # 0.0.0.0 is nobody's address either
