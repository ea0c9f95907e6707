"""A private Ray cluster for tests: `ray start --head --block` on 127.0.0.1, free ports, its own
temp folder and CPU count, stopped and its processes killed whatever happens (the `ray_cluster`
fixture). Jobs run against it as CLI subprocesses with a timeout, so a hang fails a test."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 40


@dataclass
class RayCluster:
    address: str  # HOST:PORT of the head, for --ray-address
    process: subprocess.Popen
    temp_dir: Path
    # What a driver's environment needs: Ray 2.60 turns on token authentication, and the tests use a
    # token of their own, not ~/.ray/auth_token (which any other Ray on the machine may replace).
    env: dict[str, str]

    def processes_titled(self, title: str) -> list[int]:
        """Pids of this cluster's processes whose title (Ray names its workers `ray::...`) has `title`."""
        return [pid for pid in _descendants(self.process.pid) if title in _cmdline(pid)]


def start_cluster(num_cpus: int = 2) -> RayCluster:
    # A short folder: Ray's socket paths inside it must fit in 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    port = _free_port()
    ports = [
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
        "--metrics-export-port",
        "--node-manager-port",
        "--object-manager-port",
    ]
    command = [
        *("ray", "start", "--head", "--block", "--port", str(port)),
        *("--num-cpus", str(num_cpus), "--num-gpus", "0", "--temp-dir", str(temp_dir)),
        *("--include-dashboard", "false", "--disable-usage-stats"),
        *("--object-store-memory", str(300 << 20)),
        *[value for flag in ports for value in (flag, str(_free_port()))],
    ]
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    log = temp_dir / "head.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ | env,
        )
    cluster = RayCluster(f"127.0.0.1:{port}", process, temp_dir, env)
    deadline = time.monotonic() + START_TIMEOUT_S
    while "will now block" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_cluster(cluster)
            pytest.fail(f"`ray start --head` did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return cluster


def stop_cluster(cluster: RayCluster) -> None:
    """Kill the cluster's processes, then `ray start` itself (a graceful stop drains for up to
    30 s), and remove its temp folder once nothing writes there any more."""
    processes = _descendants(cluster.process.pid)
    for pid in processes:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass  # gone already
    cluster.process.kill()
    cluster.process.wait(timeout=STOP_TIMEOUT_S)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(os.path.exists(f"/proc/{pid}/cmdline") and _cmdline(pid) for pid in processes):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """One 2-CPU Ray for a test module (starting one takes seconds)."""
    pytest.importorskip(
        "ray", reason="Ray is not installed (bash scripts/setup.sh --dev installs it)"
    )
    cluster = start_cluster(num_cpus=2)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (Ray's workers start sessions of their own, but keep their parent)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
