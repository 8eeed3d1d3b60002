"""`atelier worker --gpus`: one real Celery worker process per GPU, pinned by its environment.

This machine has no GPU: the processes are real, `nvidia-smi` is a stand-in script where
detection is tested, and pinning is checked in /proc/<pid>/environ.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.broker import redis_client
from core.presence import WorkerSlots, live_workers
from core.settings import Settings, load_settings
from db.migrate import upgrade
from scheduler.client import Client
from scheduler.stack import start_embedded_redis
from tests.fixtures.stacks import base_env
from worker import gpus
from worker.gpus import Gpu, GpuClaims, detect_gpus, parse_gpus_option

HOST = socket.gethostname()
SMI_LISTING = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-0a1b2c3d-0000-0000-0000-000000000000)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-0a1b2c3d-1111-1111-1111-111111111111)
  MIG 1g.5gb      Device  0: (UUID: MIG-9f8e7d6c-0000-0000-0000-000000000000)
"""


class Redis:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = base_env(home)
        self.settings: Settings = load_settings(self.env)
        self.client = Client(self.settings)


@pytest.fixture(scope="module")
def redis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """The embedded Redis, a migrated SQLite database and the scheduler: a stack whose
    workers each test starts itself."""
    home = Redis(tmp_path_factory.mktemp("gpus"))
    upgrade(home.settings.database_url)
    redis_process = start_embedded_redis(home.settings)
    with open(home.home / "scheduler.log", "ab") as log:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "scheduler"],
            env=home.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=home.home,
        )
    yield home
    for process in (scheduler, redis_process):
        process.terminate()
        process.wait(timeout=10)


def fake_nvidia_smi(folder: Path, listing: str = SMI_LISTING, code: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{listing}EOF\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_worker(home: Redis, *args: str, **env: str) -> subprocess.Popen[bytes]:
    log = open(home.home / "workers.log", "ab")  # noqa: SIM115 - kept for the process' life
    return subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "worker", *args],
        env={**home.env, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=home.home,
    )


def wait_for_workers(home: Redis, names: set[str], timeout: float = 40) -> list[WorkerSlots]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = live_workers(redis_client(home.settings))
        if {w.name for w in workers} == names:
            return workers
        time.sleep(0.1)
    log = (home.home / "workers.log").read_text(errors="replace")
    raise AssertionError(f"workers {sorted(names)} did not announce themselves\n{log[-3000:]}")


def stop(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            assert process.wait(timeout=30) == 0
        except subprocess.TimeoutExpired:
            process.kill()
            raise


# --- option, detection, environment ------------------------------------------------------


def test_gpus_option() -> None:
    assert parse_gpus_option("0,1,2,3") == (0, 1, 2, 3)
    assert parse_gpus_option("all") == "all"
    assert parse_gpus_option("ANY") == "any"
    for bad in ("", "0,0", "-1", "gpu0", "0,,1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_gpus_option(bad)


def test_bad_gpus_option_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "worker", "--gpus", "0,0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "--gpus" in result.stderr


def test_detection_reads_nvidia_smi_then_proc(tmp_path: Path) -> None:
    bin_dir = fake_nvidia_smi(tmp_path / "bin")
    proc = tmp_path / "proc-gpus"
    env = {"PATH": str(bin_dir)}
    a, b = "GPU-0a1b2c3d-0000-0000-0000-000000000000", "GPU-0a1b2c3d-1111-1111-1111-111111111111"
    assert detect_gpus(env, proc) == [Gpu(0, a), Gpu(1, b)]
    assert detect_gpus({**env, "CUDA_VISIBLE_DEVICES": "1"}, proc) == [Gpu(1, b)]
    assert detect_gpus({**env, "CUDA_VISIBLE_DEVICES": a}, proc) == [Gpu(0, a)]
    assert detect_gpus({**env, "CUDA_VISIBLE_DEVICES": ""}, proc) == []

    # nvidia-smi that cannot talk to the driver: the /proc entries decide.
    fake_nvidia_smi(bin_dir, "NVIDIA-SMI has failed because it couldn't communicate\n", code=9)
    for bus, uuid in (("0000:3b:00.0", "GPU-aaaa"), ("0000:18:00.0", "GPU-bbbb")):
        (proc / bus).mkdir(parents=True)
        (proc / bus / "information").write_text(f"Model: \t\t Tesla T4\nGPU UUID: \t {uuid}\n")
    assert detect_gpus(env, proc) == [Gpu(0, "GPU-bbbb"), Gpu(1, "GPU-aaaa")]  # PCI order

    # Neither: no GPU.
    assert detect_gpus({"PATH": str(tmp_path / "empty")}, tmp_path / "absent") == []


def test_gpus_module_and_cli_parent_do_not_import_tensorflow() -> None:
    code = (
        "import sys, worker.gpus, scheduler.cli; "
        "worker.gpus.detect_gpus(); "
        "print(sorted(m for m in ('tensorflow', 'keras', 'celery') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_gpu_environment_pins_one_gpu_with_memory_growth() -> None:
    env = gpus.gpu_environment(Gpu(3, "GPU-x"), {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert env == {
        "PATH": "/bin",
        "CUDA_VISIBLE_DEVICES": "3",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",
    }


def test_gpu_claims_give_each_holder_its_own_gpu(
    redis_home: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis_client(redis_home.settings)
    machine = [Gpu(0, "GPU-claims-0"), Gpu(1, "GPU-claims-1")]
    first, second, third = (GpuClaims(client, holder) for holder in ("a", "b", "c"))
    assert first.claim(machine) == machine[0]
    assert second.claim(machine) == machine[1]
    assert third.claim(machine) is None
    assert first.renew(machine[0]) and not third.renew(machine[0])
    first.release(machine[0])
    assert third.claim(machine) == machine[0]
    second.release(machine[0])  # not its claim: nothing happens
    assert client.get(GpuClaims.key(machine[0])) == b"c"

    # A holder that stops renewing (killed) loses its claim after CLAIM_SECONDS.
    monkeypatch.setattr(gpus, "CLAIM_SECONDS", 0.2)
    assert third.renew(machine[0])
    time.sleep(0.4)
    assert first.claim(machine) == machine[0]
    for holder, gpu in ((first, machine[0]), (second, machine[1])):
        holder.release(gpu)


# --- real worker processes ---------------------------------------------------------------


def test_worker_gpus_0_1_runs_one_pinned_process_per_gpu(redis_home: Redis) -> None:
    supervisor = start_worker(redis_home, "--gpus", "0,1", "--queues", "gpu")
    try:
        workers = wait_for_workers(redis_home, {f"gpu0@{HOST}", f"gpu1@{HOST}"})
        assert {(w.queues, w.concurrency) for w in workers} == {(("gpu",), 1)}
        children = children_of(supervisor.pid)
        pinned = {}
        for pid in children:
            env = environ_of(pid)
            pinned[env["CUDA_VISIBLE_DEVICES"]] = pid
            assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
            assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
            assert "tensorflow" not in Path(f"/proc/{pid}/maps").read_text()
        assert sorted(pinned) == ["0", "1"] and len(children) == 2
        assert "CUDA_VISIBLE_DEVICES" not in environ_of(supervisor.pid)

        # A job running on a GPU worker when the supervisor gets SIGTERM checkpoints and
        # goes back to the queue (warm shutdown), without using up an attempt.
        job_id = redis_home.client.submit("counter", {"steps": 60, "step_seconds": 0.05})
        deadline = time.monotonic() + 30
        while (view := redis_home.client.get(job_id)).status != "running" or (view.step or 0) < 3:
            assert time.monotonic() < deadline, f"job {job_id} did not start: {view.status}"
            time.sleep(0.05)
        assert view.worker in (f"gpu0@{HOST}", f"gpu1@{HOST}")
    finally:
        stop(supervisor)
    assert not any(alive(pid) for pid in children)
    assert live_workers(redis_client(redis_home.settings)) == []
    view = redis_home.client.get(job_id)
    assert (view.status, view.attempts) == ("pending", 0)
    [released] = [e for e in redis_home.client.events(job_id) if e["type"] == "released"]
    assert "shutdown" in json.dumps(released)

    # `--gpus all` with no GPU: one CPU worker, which resumes the job from its checkpoint.
    # (CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on machines that have some.)
    worker = start_worker(redis_home, "--gpus", "all", CUDA_VISIBLE_DEVICES="")
    try:
        [slots] = wait_for_workers(redis_home, {f"worker@{HOST}"})
        assert slots.concurrency == 1
        view = redis_home.client.wait(job_id, timeout=60, poll=0.1)
        assert (view.status, view.step, view.attempts) == ("succeeded", 60, 1)
        started = [e for e in redis_home.client.events(job_id) if e["type"] == "started"]
        assert started[-1]["owner"] == f"worker@{HOST}", started
        assert view.resumed_from_step is not None and view.resumed_from_step >= 3
    finally:
        stop(worker)


def test_scaled_any_workers_take_different_gpus(redis_home: Redis, tmp_path: Path) -> None:
    """What `docker compose up --scale worker=3` does on a two-GPU machine (handing a
    released GPU over is test_gpu_claims_give_each_holder_its_own_gpu)."""
    path = f"{fake_nvidia_smi(tmp_path / 'bin')}:/usr/bin:/bin"
    first = start_worker(redis_home, "--gpus", "any", PATH=path)
    second = start_worker(redis_home, "--gpus", "any", PATH=path)
    third = None
    try:
        wait_for_workers(redis_home, {f"gpu0@{HOST}", f"gpu1@{HOST}"})
        devices = sorted(
            environ_of(child)["CUDA_VISIBLE_DEVICES"]
            for process in (first, second)
            for child in children_of(process.pid)
        )
        assert devices == ["0", "1"]
        log = redis_home.home / "workers.log"
        waiting = "GPUs are held by other workers; waiting for one"
        before = log.read_text(errors="replace").count(waiting)
        third = start_worker(redis_home, "--gpus", "any", PATH=path)
        deadline = time.monotonic() + 30
        while log.read_text(errors="replace").count(waiting) == before:
            assert time.monotonic() < deadline and third.poll() is None, "third did not wait"
            time.sleep(0.1)
        time.sleep(0.5)
        assert third.poll() is None and children_of(third.pid) == []  # no worker meanwhile
    finally:
        stop(*filter(None, (first, second, third)))
    assert live_workers(redis_client(redis_home.settings)) == []
    claims = redis_client(redis_home.settings).keys("atelier:gpu:*")
    assert claims == []  # released on the way out
