"""GPU workers: one Celery worker process per GPU, each seeing only its own GPU.

`atelier worker --gpus 0,1,2,3` runs this supervisor (no TensorFlow, no CUDA, no Celery
here), which starts one `atelier worker` process per GPU, named gpu0@host, gpu1@host…,
with concurrency 1 and this environment:

- `CUDA_VISIBLE_DEVICES=<its GPU>`: the process and its pool child see one GPU; nothing
  CUDA-related is ever forked.
- `CUDA_DEVICE_ORDER=PCI_BUS_ID`: GPU numbers mean what `nvidia-smi` shows (CUDA's own
  default order is "fastest first", which can differ).
- `TF_FORCE_GPU_ALLOW_GROWTH=true`: TensorFlow's memory growth, read when TensorFlow
  creates the GPU device in the job process, before any model exists; TensorFlow takes
  memory as models need it instead of the whole GPU.

`--gpus all` runs one process per GPU that `nvidia-smi -L` lists (else the entries of
/proc/driver/nvidia/gpus), restricted to CUDA_VISIBLE_DEVICES if that is set. `--gpus any`
takes one GPU that no other worker holds: claims live in Redis under the GPU's UUID, so
`docker compose up --scale worker=N`, where every container sees all of the machine's
GPUs, puts N workers on N different GPUs (Docker gives every replica the same GPU when
each asks for `count: 1`). With no GPU found, `all` and `any` run one CPU worker instead.

A worker process that dies is started again. SIGTERM or Ctrl-C is passed on as SIGTERM
(warm shutdown: running jobs checkpoint and are handed back) and the supervisor waits for
its workers; a second signal kills them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from core import redis_keys, supervision
from core.broker import redis_client
from core.settings import Settings
from core.supervision import Child

log = logging.getLogger("atelier.gpus")

NVIDIA_PROC_GPUS = Path("/proc/driver/nvidia/gpus")
SMI_LINE = re.compile(r"^GPU (\d+):.*?(?:\(UUID: ([^)\s]+)\))?\s*$")
PROC_UUID = re.compile(r"^GPU UUID:\s*(\S+)", re.MULTILINE)
CLAIM_SECONDS = 15.0
"""A GPU claim lapses this long after its holder stopped renewing it (killed, lost)."""
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str | None = None

    @property
    def name(self) -> str:
        return f"gpu{self.index}"


def parse_gpus_option(value: str) -> str | tuple[int, ...]:
    """`all`, `any`, or GPU numbers such as `0,1,2,3` (argparse type of `--gpus`)."""
    import argparse

    text = value.strip().lower()
    if text in ("all", "any"):
        return text
    try:
        numbers = tuple(int(part) for part in text.split(","))
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) < 0 or len(set(numbers)) != len(numbers):
        raise argparse.ArgumentTypeError(
            f"expected `all`, `any` or distinct GPU numbers such as 0,1,2,3; got {value!r}"
        )
    return numbers


# --- detection (never imports TensorFlow) ----------------------------------------------


def detect_gpus(
    env: Mapping[str, str] | None = None, proc_gpus: Path = NVIDIA_PROC_GPUS
) -> list[Gpu]:
    """The machine's NVIDIA GPUs in PCI order, as `nvidia-smi` numbers them."""
    env = os.environ if env is None else env
    gpus = _from_nvidia_smi(env) or _from_proc(proc_gpus)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return gpus
    wanted = {part.strip() for part in visible.split(",") if part.strip()}
    return [g for g in gpus if str(g.index) in wanted or (g.uuid and g.uuid in wanted)]


def _from_nvidia_smi(env: Mapping[str, str]) -> list[Gpu]:
    smi = shutil.which("nvidia-smi", path=env.get("PATH"))
    if smi is None:
        return []
    try:
        listing = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("nvidia-smi -L failed (%s); looking in %s", error, NVIDIA_PROC_GPUS)
        return []
    matches = (SMI_LINE.match(line) for line in listing.splitlines())
    return [Gpu(int(m[1]), m[2]) for m in matches if m]


def _from_proc(proc_gpus: Path) -> list[Gpu]:
    if not proc_gpus.is_dir():
        return []
    gpus = []
    for index, bus in enumerate(sorted(p for p in proc_gpus.iterdir() if p.is_dir())):
        try:
            found = PROC_UUID.search((bus / "information").read_text(errors="replace"))
        except OSError:
            found = None
        gpus.append(Gpu(index, found[1] if found else None))
    return gpus


def gpu_environment(gpu: Gpu, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(
        CUDA_VISIBLE_DEVICES=str(gpu.index),
        CUDA_DEVICE_ORDER="PCI_BUS_ID",
        TF_FORCE_GPU_ALLOW_GROWTH="true",
    )
    return env


# --- claims for `--gpus any` -----------------------------------------------------------


class GpuClaims:
    """One GPU per holder, by UUID, in Redis; a claim expires unless renewed."""

    def __init__(self, client: redis.Redis, holder: str | None = None) -> None:
        self.client = client
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    @staticmethod
    def key(gpu: Gpu) -> str:
        # Without a UUID (no nvidia-smi, old driver) only this host can tell its GPUs apart.
        return redis_keys.gpu_claim(gpu.uuid or f"{socket.gethostname()}/{gpu.index}")

    def claim(self, gpus: Sequence[Gpu]) -> Gpu | None:
        ttl = int(CLAIM_SECONDS * 1000)
        for gpu in gpus:
            if self.client.set(self.key(gpu), self.holder, nx=True, px=ttl):
                return gpu
        return None

    def renew(self, gpu: Gpu) -> bool:
        ttl = int(CLAIM_SECONDS * 1000)
        return bool(self.client.eval(_RENEW, 1, self.key(gpu), self.holder, ttl))

    def release(self, gpu: Gpu) -> None:
        self.client.eval(_RELEASE, 1, self.key(gpu), self.holder)


# --- the supervisor --------------------------------------------------------------------


class _Signals:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, _signum: int, _frame: object) -> None:
        self.count += 1


def _worker_child(gpu: Gpu, queues: Sequence[str]) -> Child:
    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable, "-m", "worker",
                "--name", gpu.name, "--queues", ",".join(queues), "--concurrency", "1",
            ],
            env=gpu_environment(gpu),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # signals come from the supervisor only, once
            preexec_fn=_die_with_parent(os.getpid()),
        )  # fmt: skip

    return Child(f"worker {gpu.name}", start)


def _die_with_parent(parent: int) -> Callable[[], None]:
    """In the child before exec: SIGTERM it (warm shutdown) if the supervisor dies."""

    def arrange() -> None:
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return arrange


def run(option: str | tuple[int, ...], queues: Sequence[str], settings: Settings) -> int | None:
    """Run GPU workers for a `--gpus` value; None when no GPU was found (run a CPU worker)."""
    if isinstance(option, tuple):
        return supervise([Gpu(i) for i in option], queues)
    gpus = detect_gpus()
    if not gpus:
        log.info("no GPU found: running one CPU worker")
        return None
    if option == "all":
        return supervise(gpus, queues)
    return _supervise_any(gpus, queues, settings)


def _supervise_any(gpus: list[Gpu], queues: Sequence[str], settings: Settings) -> int:
    claims = GpuClaims(redis_client(settings))
    signals = _install_signal_handlers()
    gpu, attempts = None, 0
    while gpu is None and not signals.count:
        try:
            gpu = claims.claim(gpus)
        except Exception as error:  # Redis down or restarting
            log.warning("could not claim a GPU: %s", error)
        if gpu is None:
            if attempts % 60 == 0:
                log.info("all %d GPUs are held by other workers; waiting for one", len(gpus))
            attempts += 1
            time.sleep(1)
    if gpu is None:
        return 0
    log.info("claimed %s (%s)", gpu.name, gpu.uuid or "no UUID")

    def renew() -> None:
        if not claims.renew(gpu):
            log.error("another worker took the claim on %s", gpu.name)

    try:
        return supervise([gpu], queues, renew=renew, signals=signals)
    finally:
        with contextlib.suppress(Exception):
            claims.release(gpu)


def _install_signal_handlers() -> _Signals:
    signals = _Signals()
    signal.signal(signal.SIGTERM, signals)
    signal.signal(signal.SIGINT, signals)
    return signals


def supervise(
    gpus: Sequence[Gpu],
    queues: Sequence[str],
    *,
    renew: Callable[[], None] | None = None,
    signals: _Signals | None = None,
) -> int:
    """Keep one worker process per GPU running until SIGTERM/SIGINT, then stop them: their
    jobs checkpoint first; a second signal kills them."""
    signals = signals or _install_signal_handlers()
    children = [_worker_child(gpu, queues) for gpu in gpus]
    renewal = _Renewal(renew)
    log.info("GPU workers: %s", ", ".join(f"{g.name}@{socket.gethostname()}" for g in gpus))
    try:
        supervision.keep_running(children, lambda: signals.count > 0, tick=renewal.due)
    finally:
        log.info("stopping the GPU workers: their jobs checkpoint first")
        received = signals.count
        # The GPU stays ours (renewal.due) until its job has checkpointed.
        supervision.stop(
            children, None, kill_now=lambda: signals.count > received, tick=renewal.due
        )
    return 0


class _Renewal:
    """Renews a GPU claim every third of its lifetime, also while workers shut down."""

    def __init__(self, renew: Callable[[], None] | None) -> None:
        self.renew = renew
        self.next = time.monotonic() + CLAIM_SECONDS / 3

    def due(self) -> None:
        if self.renew is None or time.monotonic() < self.next:
            return
        self.next = time.monotonic() + CLAIM_SECONDS / 3
        try:
            self.renew()
        except Exception as error:
            log.warning("could not renew the GPU claim: %s", error)
