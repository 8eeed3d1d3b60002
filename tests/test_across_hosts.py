"""Jobs that cross a network that fails: hosts made of Linux network namespaces
(tests/fixtures/hosts.py) that share no directory. A control host runs Redis, PostgreSQL,
moto's S3 server and the scheduler; worker hosts B and C run `atelier worker` with their
own ATELIER_HOME and cache; a client host only submits, looks and downloads. Every file
a job reads or writes goes through the bucket.

Each case ends with exactly one final model whose sha256 matches the bytes of an
uninterrupted run (the DCGAN spec is deterministic, so a resumed run must give the same
bytes), the attempts the fault explains, and nothing written by a worker whose lease was
taken over.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from tests.fixtures.hosts import (
    Host,
    Network,
    PostgresService,
    RedisService,
    S3Service,
    network,
    start_postgres,
    start_redis,
    start_s3,
)

BUCKET = "atelier-hosts"
DCGAN = {
    "dataset": "glyphs", "image_size": 28, "batch_size": 8, "latent_dim": 16,
    "dataset_size": 128, "steps_per_epoch": 16, "epochs": 4, "samples": 4,
    "checkpoint_every": 4, "deterministic": True, "seed": 5,
}  # fmt: skip
"""64 steps, a checkpoint every 4: long enough to cut a host off in the middle."""
STEPS = 64


@dataclass
class Cluster:
    net: Network
    redis: RedisService
    postgres: PostgresService
    s3: S3Service
    database_url: str
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def storage_url(self) -> str:
        return f"s3://{BUCKET}/atelier"

    def env(self, host: Host) -> dict[str, str]:
        return host.env(
            ATELIER_DATABASE_URL=self.database_url,
            ATELIER_BROKER_URL=self.redis.url,
            ATELIER_STORAGE_URL=self.storage_url,
            **self.s3.env(),
        )

    def atelier(self, *args: str, host: str = "client", timeout: float = 120) -> str:
        """An `atelier` command on a host (the client by default); its stdout."""
        on = self.net[host]
        result = on.run_check(
            [sys.executable, "-m", "scheduler.cli", *args], env=self.env(on), timeout=timeout
        )
        if result.returncode != 0:
            raise AssertionError(f"atelier {' '.join(args)} on {host}: {result.stderr}")
        return result.stdout

    def start_worker(self, name: str) -> None:
        host = self.net[name]
        self.workers[name] = host.run(
            [sys.executable, "-m", "worker", "--name", name, "--queues", "gpu,cpu"],
            env=self.env(host), log=host.logs / "worker.log",
        )  # fmt: skip

    def stop_worker(self, name: str) -> None:
        process = self.workers.pop(name)
        process.kill()
        process.wait(timeout=30)
        self.net[name].kill_all()

    def submit(self, kind: str, spec: dict[str, Any]) -> str:
        settings = [arg for k, v in spec.items() for arg in ("--set", f"{k}={json.dumps(v)}")]
        return self.atelier("submit", kind, *settings).strip()

    def status(self, job_id: str) -> dict[str, Any]:
        return dict(json.loads(self.atelier("status", job_id, "--json")))

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.atelier("events", job_id).splitlines()]

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.5)
        tails = "\n".join(host.log_tails() for host in self.net.hosts.values())
        raise AssertionError(f"timed out waiting for {what}\n{tails}")

    def running_on(
        self, job_id: str, worker: str, min_step: int = 1, *, resumed: bool = False
    ) -> dict[str, Any]:
        """The job's view once `worker` runs it at `min_step` or later (and, if `resumed`,
        once that run has restored a checkpoint: a claim keeps the step shown so far)."""

        def there() -> bool:
            view = self.status(job_id)
            on = (view.get("worker") or "").startswith(f"{worker}@")
            restored = view["resumed_from_step"] is not None or not resumed
            step = (view["step"] or 0) >= min_step
            return bool(view["status"] == "running" and on and step and restored)

        self.wait_for(f"job {job_id} at step {min_step} on {worker}", there)
        return self.status(job_id)

    def finished(self, job_id: str, timeout: float = 240) -> dict[str, Any]:
        self.wait_for(f"job {job_id} to end", lambda: _final(self.status(job_id)), timeout)
        return self.status(job_id)

    def objects(self, prefix: str) -> dict[str, bytes]:
        """Every object under `prefix` of the bucket, read from the control host."""
        with self.net["ctl"].inside():
            client = self.s3.client()
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=BUCKET, Prefix=f"atelier/{prefix}"
            )
            keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
            return {
                key.removeprefix("atelier/"): client.get_object(Bucket=BUCKET, Key=key)[
                    "Body"
                ].read()
                for key in keys
            }


def _final(view: dict[str, Any]) -> bool:
    return view["status"] in ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with network("ah", ["ctl", "b", "c", "client"]) as net:
        ctl = net["ctl"]
        services = (
            start_redis(ctl, password="hosts-redis-pw"), start_postgres(ctl), start_s3(ctl),
        )  # fmt: skip
        redis_service, postgres, s3 = services
        s3.create_bucket(BUCKET)
        running = Cluster(net, redis_service, postgres, s3, postgres.create_database("atelier"))
        running.atelier("db", "upgrade", host="ctl")
        ctl.run(
            [sys.executable, "-m", "scheduler.cli", "scheduler"],
            env=running.env(ctl), log=ctl.logs / "scheduler.log",
        )  # fmt: skip
        yield running


UNCOMPARED = ("checkpoint", "tensorboard")


def shas(view: dict[str, Any]) -> dict[str, str]:
    """Role/name -> sha256 of the job's final outputs (checkpoints and TensorBoard's
    event files, which hold wall times, aside)."""
    found = [(f"{o['role']}/{o['name']}", o["sha256"]) for o in view["outputs"]]
    finals = [(name, sha) for name, sha in found if name.split("/")[0] not in UNCOMPARED]
    assert len(finals) == len({name for name, _ in finals}), "one final result per output"
    return dict(finals)


def assert_stored_as_recorded(cluster: Cluster, view: dict[str, Any]) -> None:
    """Every recorded output is an object of the bucket with the recorded bytes, and the
    job's folder holds nothing else: no half-written or stale file is current."""
    objects = cluster.objects(f"outputs/{view['id']}/")
    recorded = {o["key"]: o for o in view["outputs"]}
    assert set(objects) == set(recorded), sorted(set(objects) ^ set(recorded))
    for key, output in recorded.items():
        assert hashlib.sha256(objects[key]).hexdigest() == output["sha256"], key
        assert output["location"] == f"{cluster.storage_url}/{key}"


def run_folders(view: dict[str, Any]) -> set[str]:
    return {o["key"].split("/")[2] for o in view["outputs"]}


# --- 1. train on B, download on the client, sample on C -----------------------------------


@dataclass(frozen=True)
class Reference:
    job_id: str
    view: dict[str, Any]
    shas: dict[str, str]
    """Role/name -> sha256 of its final outputs: what every interrupted run ends with."""


@pytest.fixture(scope="module")
def reference(cluster: Cluster) -> Reference:
    """The DCGAN trained on B alone, uninterrupted (whichever case runs first)."""
    cluster.start_worker("b")
    try:
        job_id = cluster.submit("dcgan", DCGAN)
        cluster.running_on(job_id, "b", min_step=1)
        view = cluster.finished(job_id)
    finally:
        cluster.stop_worker("b")
    return Reference(job_id, view, shas(view))


def test_a_model_trained_on_one_host_is_downloaded_and_sampled_on_another(
    cluster: Cluster, reference: Reference
) -> None:
    job_id, view = reference.job_id, reference.view
    assert (view["status"], view["attempts"]) == ("succeeded", 1), view["error_message"]
    assert view["worker"] is None and view["step"] == STEPS
    assert_stored_as_recorded(cluster, view)
    assert "model/generator.keras" in reference.shas

    # The client has no share of any worker's disk: it downloads, checked by sha256.
    folder = cluster.net["client"].root / "downloads"
    listed = cluster.atelier("outputs", job_id, "--download", str(folder), "--role", "model")
    model = folder / "model" / "generator.keras"
    assert listed.split() == [str(model)]
    assert hashlib.sha256(model.read_bytes()).hexdigest() == reference.shas["model/generator.keras"]

    # C reads B's model through the store: B is stopped, so the sampler can only run on C.
    cluster.start_worker("c")
    sample_id = cluster.submit("gan-sample", {"model": job_id, "count": 4})
    sample = cluster.finished(sample_id, timeout=180)
    assert sample["status"] == "succeeded", sample["error_message"]
    [started] = [e for e in cluster.events(sample_id) if e["type"] == "started"]
    assert started["owner"].startswith("c@"), started
    assert {o["role"] for o in sample["outputs"]} >= {"image"}
    assert not list(cluster.net["b"].root.rglob(f"*{sample_id}*")), "nothing of it on B"
    [fetched] = cluster.net["c"].cache.rglob(f"outputs/{job_id}/*/model/generator.keras")
    made_by_b = reference.shas["model/generator.keras"]
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == made_by_b  # through the store
    cluster.stop_worker("c")


# --- what the database says of runs --------------------------------------------------------


def run_events(cluster: Cluster, job_id: str) -> list[tuple[str, str | None, float]]:
    """(type, run token's folder name, seconds since the epoch) of the job's events."""
    with cluster.net["ctl"].inside(), psycopg.connect(cluster.postgres.dsn("atelier")) as db:
        rows = db.execute(
            "SELECT type, run_token, extract(epoch from at) FROM events"
            " WHERE job_id = %s ORDER BY id",
            (job_id,),
        ).fetchall()
    return [(kind, token[:8] if token else None, float(at)) for kind, token, at in rows]


def started_runs(cluster: Cluster, job_id: str) -> list[str]:
    return [run for kind, run, _ in run_events(cluster, job_id) if kind == "started" and run]


def assert_like_the_uninterrupted_run(
    cluster: Cluster, reference: Reference, view: dict[str, Any], attempts: int
) -> None:
    assert (view["status"], view["attempts"]) == ("succeeded", attempts), view["error_message"]
    assert view["step"] == STEPS
    assert shas(view) == reference.shas, "the bytes of an uninterrupted run"
    assert_stored_as_recorded(cluster, view)


# --- 2. B is cut off mid-job: C takes over, B writes nothing and serves the next job ------


def test_a_partitioned_worker_is_taken_over_and_writes_nothing_after(
    cluster: Cluster, reference: Reference
) -> None:
    cluster.start_worker("b")
    job_id = cluster.submit("dcgan", DCGAN)
    before = cluster.running_on(job_id, "b", min_step=10)
    cluster.start_worker("c")
    b = cluster.net["b"]
    b.partition()
    try:
        taken = cluster.running_on(job_id, "c", resumed=True)
        assert taken["resumed_from_step"] is not None
        assert before["step"] - 4 <= taken["resumed_from_step"] <= before["step"] + 4
        [stale_run, new_run] = started_runs(cluster, job_id)
        stale_objects = cluster.objects(f"outputs/{job_id}/{stale_run}/")
    finally:
        b.heal()
    view = cluster.finished(job_id)
    assert_like_the_uninterrupted_run(cluster, reference, view, attempts=2)
    time.sleep(5)  # B, back on the network, finds its lease gone: it must write nothing
    events = run_events(cluster, job_id)
    takeover = next(at for kind, run, at in events if kind == "started" and run == new_run)
    late = [(kind, run) for kind, run, at in events if run == stale_run and at > takeover]
    assert late == [], "the stale run wrote events after the takeover"
    now = cluster.objects(f"outputs/{job_id}/{stale_run}/")
    assert set(now) <= set(stale_objects), "the stale run wrote files after the takeover"
    assert all(now[key] == stale_objects[key] for key in now)

    # B serves the next job: with C gone, only B can run it.
    cluster.stop_worker("c")
    next_id = cluster.submit("counter", {"steps": 6, "step_seconds": 0.05})
    served = cluster.finished(next_id, timeout=120)
    assert served["status"] == "succeeded", served["error_message"]
    [owner] = [e["owner"] for e in cluster.events(next_id) if e["type"] == "started"]
    assert owner.startswith("b@")
    cluster.stop_worker("b")


# --- 3. the store goes away for 20 s mid-job ------------------------------------------------


def test_a_job_outlives_twenty_seconds_without_its_store(
    cluster: Cluster, reference: Reference
) -> None:
    cluster.start_worker("b")
    job_id = cluster.submit("dcgan", DCGAN)
    cluster.running_on(job_id, "b", min_step=8)
    cluster.s3.block()
    try:
        time.sleep(20)
        blocked = cluster.status(job_id)
        assert blocked["status"] == "running" and blocked["attempts"] == 1
    finally:
        cluster.s3.unblock()
    view = cluster.finished(job_id)
    assert_like_the_uninterrupted_run(cluster, reference, view, attempts=1)
    # A store call in flight when the block began may just wait it out (the read timeout
    # is 30 s), so the outage is not always seen; when it is, the recovery is logged too.
    log = (cluster.net["b"].logs / "worker.log").read_text()
    if "unreachable" in log:
        assert "reachable again" in log[log.index("unreachable") :]
    cluster.stop_worker("b")


# --- 4. a worker host is destroyed mid-job ---------------------------------------------------


def test_a_destroyed_host_s_job_resumes_elsewhere_from_the_store(
    cluster: Cluster, reference: Reference
) -> None:
    cluster.start_worker("b")
    cluster.start_worker("c")
    job_id = cluster.submit("dcgan", DCGAN)
    cluster.wait_for(
        f"job {job_id} at step 10", lambda: (cluster.status(job_id)["step"] or 0) >= 10
    )
    where = cluster.status(job_id)["worker"].partition("@")[0]
    other = "c" if where == "b" else "b"
    cluster.workers.pop(where)
    cluster.net[where].destroy()  # its processes killed, its home and cache deleted
    assert not cluster.net[where].root.exists()
    taken = cluster.running_on(job_id, other, resumed=True)
    assert taken["resumed_from_step"] is not None and taken["resumed_from_step"] >= 8
    view = cluster.finished(job_id)
    assert_like_the_uninterrupted_run(cluster, reference, view, attempts=2)
    cluster.stop_worker(other)
