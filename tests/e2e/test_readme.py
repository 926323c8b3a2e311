"""The README works as written: its "one citizen, start to finish" commands, taken from the README
itself, run in bash against `giliran up --demo` with the api token it printed. Only the ports
(free ones here) and the token's value are put in; every HTTP error fails the run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from giliran.settings import REPO_ROOT
from tests.e2e.test_up import Stack, _demo_token, stack

pytestmark = pytest.mark.e2e

__all__ = ["stack"]  # the `giliran up --demo` fixture of test_up

PORTS = {"8101": "intake", "8102": "queue", "8103": "reporting", "8104": "notify"}


def walkthrough() -> str:
    """The first shell block under the README's "One citizen, start to finish" heading."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("### One citizen, start to finish", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README's walkthrough has no ```sh block"
    return block.group(1)


def test_the_readme_walkthrough_runs_as_written(stack: Stack, tmp_path: Path) -> None:
    # `up` without --lan says its links reach no phone (the office mode is --lan).
    assert "is this machine's loopback" in "".join(stack.output)
    commands = walkthrough()
    assert "ADMIN_TOKEN" not in (REPO_ROOT / "README.md").read_text()
    assert re.search(r"^TOKEN=\S+$", commands, re.M), "the walkthrough sets TOKEN first"
    script = re.sub(r"^TOKEN=\S+$", f"TOKEN={_demo_token(stack)}", commands, count=1, flags=re.M)
    for port, service in PORTS.items():
        script = script.replace(f"localhost:{port}", f"localhost:{stack.ports[service]}")
    # curl as the README writes it, except that an HTTP error (4xx, 5xx) stops the run.
    prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; echo; }\n'
    run = subprocess.run(
        ["bash", "-c", prelude + script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout
    assert run.returncode == 0, f"the README's walkthrough failed:\n{out}\n{run.stderr}"
    lines = [line for line in out.splitlines() if line.strip()]
    # What the README says each step answers.
    assert '"tickets":[{' in lines[0] and '"number":"B-001"' in lines[0], lines[0]
    assert '"ticket":{' in lines[1] and '"number":"B-001"' in lines[1], lines[1]
    assert '"status":"completed"' in lines[2], lines[2]
    assert '"deliveries":' in lines[3], lines[3]
    assert '"site":"cikarang-utara"' in lines[4], lines[4]
    assert '"request_id"' in lines[5], lines[5]
    assert lines[6] == "200", lines[6]  # the citizen's status page
    assert '"responses":0' in lines[7] and '"served":1' in lines[7], lines[7]  # IKM
    assert len(lines) == 8, out
