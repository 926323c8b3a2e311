"""The generated edge configs: checked-in copies current, nats-server accepts them, the hub's
stream gathers each site from that site only, and the leaf link refuses Giliran subjects."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from giliran.catalogue import load_catalogue
from giliran.contracts.subjects import STREAM
from giliran.settings import REPO_ROOT, Settings
from giliran_ops import edge
from giliran_ops.embedded import nats_server_binary

NATS_DIR = REPO_ROOT / "deploy" / "nats"
SITES = sorted(load_catalogue(Settings().catalogue_dir).sites)


def test_checked_in_configs_are_what_the_code_generates() -> None:
    assert (NATS_DIR / "hub.conf").read_text() == edge.render_hub_config(SITES)
    example = NATS_DIR / "site-botram-babelan.conf"
    assert example.read_text() == edge.render_site_config("botram-babelan")


def test_hub_has_a_leaf_user_per_site_and_no_password_in_the_file() -> None:
    text = edge.render_hub_config(SITES)
    assert len(SITES) == 24  # Cikarang Utara's MSC and 23 BOTRAM venues
    for site in SITES:
        grant = f'user: "{edge.leaf_user(site)}", password: ${edge.leaf_password_variable(site)}'
        assert grant in text
    # ...and the hub's own user, for its services and caretaker.
    assert text.count("user:") == len(SITES) + 1
    assert f'user: "{edge.HUB_USER}", password: ${edge.HUB_PASSWORD_VARIABLE}' in text


def _accepted(config: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "test.conf"
    path.write_text(config)
    return subprocess.run(
        [nats_server_binary(), "-t", "-c", str(path)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_nats_server_accepts_the_generated_configs(tmp_path: Path) -> None:
    passwords = {edge.leaf_password_variable(s): json.dumps(f"p{i}") for i, s in enumerate(SITES)}
    passwords[edge.HUB_PASSWORD_VARIABLE] = json.dumps("hub-password")
    hub = _accepted(edge.render_hub_config(SITES), tmp_path, passwords)
    assert hub.returncode == 0, hub.stderr
    # A hub missing a site's password refuses to start rather than let that site in unchecked.
    short = {k: v for k, v in passwords.items() if "BABELAN" not in k}
    assert _accepted(edge.render_hub_config(SITES), tmp_path, short).returncode != 0
    url = {edge.HUB_URL_VARIABLE: "nats-leaf://leaf-setu:secret@127.0.0.1:7422"}
    site = _accepted(edge.render_site_config("botram-setu"), tmp_path, url)
    assert site.returncode == 0, site.stderr


def test_leaf_link_refuses_giliran_subjects_both_ways() -> None:
    text = edge.render_site_config("cikarang-utara")
    assert 'domain: "cikarang-utara"' in text
    for rule in ("deny_exports", "deny_imports"):
        line = next(x for x in text.splitlines() if rule in x)
        assert '"giliran.>"' in line and '"$JS.API.>"' in line


def test_hub_stream_sources_each_site_filtered_to_its_own_events() -> None:
    config = edge.hub_stream_config(["botram-setu", "cikarang-utara"])
    assert config.name == STREAM and not config.subjects
    sources = config.sources or []
    assert [
        (s.name, s.filter_subject, s.external.api if s.external else None) for s in sources
    ] == [
        (STREAM, "giliran.botram-setu.*.*", "$JS.botram-setu.API"),
        (STREAM, "giliran.cikarang-utara.*.*", "$JS.cikarang-utara.API"),
    ]


def test_a_site_copies_only_its_own_calendar_changes_from_the_hub() -> None:
    config = edge.site_catalogue_config("botram-setu")
    assert not config.subjects
    (source,) = config.sources or []
    assert source.filter_subject == "giliran.catalogue.botram-setu"
    assert source.external is not None and source.external.api == "$JS.hub.API"
    # Calendar subjects have three tokens: never inside the event stream's giliran.*.*.*.
    assert len(edge.catalogue_subject("botram-setu").split(".")) == 3


def test_no_site_may_take_the_hubs_domain() -> None:
    with pytest.raises(ValueError):
        edge.site_domain(edge.HUB_DOMAIN)


def test_the_command_prints_what_the_code_generates(capsys: pytest.CaptureFixture[str]) -> None:
    from giliran_ops.cli import main

    assert main(["edge-config", "site", "botram-setu"]) == 0
    assert capsys.readouterr().out == edge.render_site_config("botram-setu")
    assert main(["edge-config", "hub", "--sites", "botram-setu,cikarang-utara"]) == 0
    assert capsys.readouterr().out == edge.render_hub_config(["botram-setu", "cikarang-utara"])
    with pytest.raises(SystemExit):
        main(["edge-config", "hub", "--sites", "atlantis"])  # not in the catalogue
