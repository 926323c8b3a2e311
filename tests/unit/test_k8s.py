"""deploy/k8s/ checked offline: every manifest against Kubernetes' own JSON schemas (bundled by
kubernetes-validate, strict: an unknown field fails), and the cross-references no schema sees:
selectors, ports, probes, settings, secrets, the NATS cluster routes, KEDA's consumers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from giliran.contracts.subjects import STREAM
from giliran.settings import REPO_ROOT, SERVICES, ServiceName, Settings

K8S = REPO_ROOT / "deploy" / "k8s"
BASE = K8S / "base"
KEDA = K8S / "components" / "keda"
SECRETS = K8S / "secrets.example.yaml"
# The oldest release still maintained in 2026 and the newest the package knows.
VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
# Measured resident memory of a service under load (docs/performance.md): 70–85 MB.
MEASURED_RSS_MIB = 85


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _kustomization(folder: Path) -> dict[str, Any]:
    found = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    assert isinstance(found, dict)
    return found


def _resources(folder: Path) -> list[dict[str, Any]]:
    return [
        doc for name in _kustomization(folder)["resources"] for doc in _documents(folder / name)
    ]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return _resources(BASE)


def _one(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _config_env(resources: list[dict[str, Any]]) -> dict[str, str]:
    return {k: str(v) for k, v in _one(resources, "ConfigMap", "giliran-config")["data"].items()}


def _all_manifests() -> list[Path]:
    return [
        *sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml"),
        SECRETS,
    ]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", _all_manifests(), ids=lambda p: p.name)
def test_every_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    for doc in _documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_catches_a_mistake(base: list[dict[str, Any]]) -> None:
    """Strict validation is live: a misspelt field and a wrong type both fail."""
    deployment = _one(base, "Deployment", "queue")
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, VERSIONS[0], strict=True)
    wrong_type = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest_and_its_files_exist() -> None:
    kustomization = _kustomization(BASE)
    listed = set(kustomization["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    for generator in kustomization["configMapGenerator"]:
        for entry in generator["files"]:
            assert (BASE / entry.split("=", 1)[-1]).resolve().is_file(), entry
    component = _kustomization(KEDA)
    assert component["kind"] == "Component"
    assert {p.name for p in KEDA.glob("*.yaml")} - {"kustomization.yaml"} == set(
        component["resources"]
    )


def test_every_service_selects_the_pods_of_one_workload(base: list[dict[str, Any]]) -> None:
    workloads = _kind(base, "Deployment") + _kind(base, "StatefulSet")
    for service in _kind(base, "Service"):
        selector = service["spec"]["selector"]
        matching = [
            w
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matching) == 1, f"Service {service['metadata']['name']} selects {matching}"
        ports = {p["name"] for c in matching[0]["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}  # fmt: skip
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)
    for workload in workloads:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_disruption_budgets_and_autoscalers_name_real_workloads(
    base: list[dict[str, Any]],
) -> None:
    workloads = _kind(base, "Deployment") + _kind(base, "StatefulSet")
    for budget in _kind(base, "PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"]
        assert any(
            selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
            for w in workloads
        ), budget["metadata"]["name"]
    for scaler in _kind(base, "HorizontalPodAutoscaler"):
        target = scaler["spec"]["scaleTargetRef"]
        deployment = _one(base, target["kind"], target["name"])
        assert scaler["spec"]["minReplicas"] <= deployment["spec"]["replicas"]
    budgeted = {b["metadata"]["name"] for b in _kind(base, "PodDisruptionBudget")}
    assert {*SERVICES, "nats", "proxy"} <= budgeted


@pytest.mark.parametrize("name", SERVICES)
def test_service_deployment_agrees_with_the_code(
    base: list[dict[str, Any]], name: ServiceName, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = _one(base, "Deployment", name)
    container = _container(deployment)
    assert container["command"] == ["giliran", "service", name]
    env: dict[str, str] = dict(_config_env(base))
    for entry in container["env"]:
        env[entry["name"]] = entry.get("value", "from-secret")
    unknown = [
        key
        for key in env
        if not key.startswith("GILIRAN_")
        or key.removeprefix("GILIRAN_").lower() not in Settings.model_fields
    ]
    assert not unknown, f"not fields of giliran.settings.Settings: {unknown}"
    for key in list(os.environ):
        if key.startswith("GILIRAN_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    port = container["ports"][0]
    assert port["containerPort"] == settings.port_of(name)
    assert settings.host == "0.0.0.0" and settings.nats_user == name
    assert _one(base, "Service", name)["spec"]["ports"][0]["port"] == settings.port_of(name)
    # Every secret comes from a Secret, never a literal.
    for entry in container["env"]:
        if re.search(r"PASSWORD|KEY|MONGO_URL", entry["name"]):
            assert "secretKeyRef" in entry.get("valueFrom", {}), entry["name"]


@pytest.mark.parametrize("name", SERVICES)
def test_probes_ask_paths_the_service_serves(base: list[dict[str, Any]], name: ServiceName) -> None:
    from giliran_ops.cli import build_service

    app, _ = build_service(
        name, Settings(nik_hash_key=SecretStr("k"), session_key=SecretStr("s"), demo=True)
    )
    served = set(app.openapi()["paths"])
    container = _container(_one(base, "Deployment", name))
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in served
        assert container[probe]["httpGet"]["port"] == container["ports"][0]["name"]


@pytest.mark.parametrize("name", SERVICES)
def test_resources_are_sized_from_the_measurements(
    base: list[dict[str, Any]], name: ServiceName
) -> None:
    resources = _container(_one(base, "Deployment", name))["resources"]
    request = _mebibytes(resources["requests"]["memory"])
    assert MEASURED_RSS_MIB < request <= _mebibytes(resources["limits"]["memory"])
    assert resources["requests"]["cpu"].endswith("m")


def _mebibytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


def test_secrets_read_by_the_workloads_exist_in_the_templates(base: list[dict[str, Any]]) -> None:
    templates = {doc["metadata"]["name"]: doc["stringData"] for doc in _documents(SECRETS)}
    for workload in _kind(base, "Deployment") + _kind(base, "StatefulSet"):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in templates[ref["name"]], (ref, workload["metadata"])
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in templates
    # Each service's MongoDB user is named for the database it owns (deploy/mongo/init-users.js).
    defaults = Settings()
    for name in SERVICES:
        url = urlsplit(templates["giliran-mongo"][name].replace("<password>", "p"))
        assert url.username == defaults.database_name(name)


def test_nats_is_a_three_node_jetstream_cluster(base: list[dict[str, Any]]) -> None:
    nats = _one(base, "StatefulSet", "nats")
    headless = _one(base, "Service", nats["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    replicas = nats["spec"]["replicas"]
    assert replicas == 3
    config = _one(base, "ConfigMap", "nats-config")["data"]["nats.conf"]
    routes = re.findall(r"nats://([a-z0-9.-]+):(\d+)", config.split("cluster {", 1)[1])
    expected = [f"nats-{i}.{headless['metadata']['name']}" for i in range(replicas)]
    assert [host for host, _ in routes] == expected
    cluster_port = next(p for p in headless["spec"]["ports"] if p["name"] == "cluster")["port"]
    assert {int(port) for _, port in routes} == {cluster_port}
    assert "store_dir: /data" in config
    mounts = {m["name"]: m["mountPath"] for m in _container(nats)["volumeMounts"]}
    assert mounts["data"] == "/data"
    assert nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    # The streams keep a copy on every node.
    assert int(_config_env(base)["GILIRAN_STREAM_REPLICAS"]) == replicas


def test_the_nats_cluster_config_is_accepted_by_nats_server(
    base: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The ConfigMap's nats.conf with the checked-in users included the way the pod mounts
    them (/etc/nats and /etc/nats-auth), parsed by the real nats-server (`-t`)."""
    from giliran.catalogue import load_catalogue
    from giliran_ops.natsauth import all_users, server_environment

    nats = _one(base, "StatefulSet", "nats")
    mounts = {m["name"]: m["mountPath"] for m in _container(nats)["volumeMounts"]}
    volumes = {v["name"]: v for v in nats["spec"]["template"]["spec"]["volumes"]}
    assert volumes["auth"]["configMap"]["name"] == "nats-auth"
    config_dir = tmp_path / mounts["config"].lstrip("/")
    auth_dir = tmp_path / mounts["auth"].lstrip("/")
    config_dir.mkdir(parents=True)
    auth_dir.mkdir(parents=True)
    (config_dir / "nats.conf").write_text(
        _one(base, "ConfigMap", "nats-config")["data"]["nats.conf"], encoding="utf-8"
    )
    (auth_dir / "giliran.conf").write_bytes((REPO_ROOT / "deploy/nats/giliran.conf").read_bytes())
    users = all_users(SERVICES, load_catalogue(Settings().catalogue_dir).sites)
    env = {**os.environ, **server_environment(dict.fromkeys(users, "x")), "POD_NAME": "nats-0"}
    server = Path(sys.executable).parent / "nats-server"
    checked = subprocess.run(
        [str(server), "-c", str(config_dir / "nats.conf"), "-t"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Every password variable the server needs is a key the Secret is made from.
    assert set(server_environment(dict.fromkeys(users, "x"))) >= {
        f"NATS_PASSWORD_{name.upper()}" for name in SERVICES
    }


def test_keda_scales_each_service_by_its_own_durable_consumer(base: list[dict[str, Any]]) -> None:
    """KEDA's ScaledObject is a CRD the bundled schemas do not know: checked here against
    KEDA's documented required fields and against the code and the base it patches."""
    from giliran_ops.cli import build_service

    headless = _one(base, "Service", _one(base, "StatefulSet", "nats")["spec"]["serviceName"])
    monitor = next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "monitor")
    component = _kustomization(KEDA)
    deleted = {patch["target"]["name"] for patch in component["patches"]}
    objects = _resources(KEDA)
    assert objects and all(o["apiVersion"] == "keda.sh/v1alpha1" for o in objects)
    for scaled in objects:
        assert scaled["kind"] == "ScaledObject"
        name = scaled["spec"]["scaleTargetRef"]["name"]
        assert name in SERVICES
        _one(base, "Deployment", name)
        autoscaler = _one(base, "HorizontalPodAutoscaler", name)
        assert name in deleted  # KEDA makes its own autoscaler: the CPU one must go
        assert scaled["spec"]["minReplicaCount"] == autoscaler["spec"]["minReplicas"]
        assert scaled["spec"]["maxReplicaCount"] == autoscaler["spec"]["maxReplicas"]
        _, runtime = build_service(
            name, Settings(nik_hash_key=SecretStr("k"), session_key=SecretStr("s"), demo=True)
        )
        durables = {consumer.durable for consumer in runtime.consumers}
        triggers = [t for t in scaled["spec"]["triggers"] if t["type"] == "nats-jetstream"]
        assert len(triggers) == 1
        meta = triggers[0]["metadata"]
        assert {"natsServerMonitoringEndpoint", "account", "stream", "consumer"} <= set(meta)
        assert meta["stream"] == STREAM and meta["consumer"] in durables
        host = f"{headless['metadata']['name']}.{_kustomization(BASE)['namespace']}"
        assert meta["natsServerMonitoringEndpoint"] == f"{host}.svc.cluster.local:{monitor}"
        assert int(meta["lagThreshold"]) > 0
    assert len(deleted) == len(objects)


def test_ingress_sends_everything_to_the_proxy_which_runs_the_tested_caddyfile(
    base: list[dict[str, Any]],
) -> None:
    ingress = _one(base, "Ingress", "giliran")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert [(p["path"], p["backend"]["service"]["name"]) for p in paths] == [("/", "proxy")]
    proxy = _one(base, "Deployment", "proxy")
    container = _container(proxy)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PROXY_ADDRESS"] == f":{container['ports'][0]['containerPort']}"
    volume = next(v for v in proxy["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    generated = {g["name"]: g["files"] for g in _kustomization(BASE)["configMapGenerator"]}
    assert generated[volume["configMap"]["name"]] == ["Caddyfile=../../caddy/Caddyfile"]
    # The Caddyfile's upstream defaults are the Services' names and ports.
    caddyfile = (REPO_ROOT / "deploy/caddy/Caddyfile").read_text(encoding="utf-8")
    for name in SERVICES:
        port = _one(base, "Service", name)["spec"]["ports"][0]["port"]
        assert f"{{${name.upper()}_UPSTREAM:{name}:{port}}}" in caddyfile


def test_every_pod_meets_the_restricted_pod_security_standard(base: list[dict[str, Any]]) -> None:
    """The namespace enforces `restricted`: a pod that misses one of these is refused."""
    namespace = _one(base, "Namespace", "giliran")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload in _kind(base, "Deployment") + _kind(base, "StatefulSet"):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["readOnlyRootFilesystem"] is True
            assert container["resources"]["requests"]["memory"]
            assert container["resources"]["limits"]["memory"]
