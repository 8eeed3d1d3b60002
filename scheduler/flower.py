"""`atelier flower`: Flower against Atelier's broker, with authentication required.

Credentials come from the environment, never from the command line (which `ps` shows to
every user of the machine): `FLOWER_BASIC_AUTH=user:password` (several pairs separated by
commas), which Flower reads itself, or Flower's OAuth settings (`FLOWER_AUTH` with
`FLOWER_AUTH_PROVIDER`, `FLOWER_OAUTH2_KEY`…). Without them Flower refuses to start, unless
`--local-only` says this is a private instance: then it listens on 127.0.0.1 only and its
API answers without credentials.

What Flower shows of a job: the task `atelier.<kind>` whose only argument is the job id,
its worker, and, while it runs, state PROGRESS with the latest progress report (step,
total steps, fraction, epoch, metrics) as its result: the workers send it as a
`task-progress` event (see worker/tasks.py). `/metrics` is Flower's Prometheus endpoint;
Flower serves it, like `/healthcheck`, without authentication.

Flower runs read-only unless FLOWER_READ_ONLY=false: jobs stop through the database
(`atelier cancel/pause`), at a step boundary with a checkpoint, and Flower's revoke,
terminate and worker shutdown would go around that.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, MutableMapping

from core.errors import UserError

LOCAL_ADDRESS = "127.0.0.1"
TASK_COLUMNS = "name,uuid,state,args,result,received,started,runtime,worker"
"""Tasks page columns: `args` is the job id, `result` the live progress."""
PURGE_OFFLINE_WORKERS_SECONDS = 3600
"""Workers scaled away leave Flower's worker list (and /metrics) after this long."""


class FlowerConfigError(UserError):
    """Flower cannot start safely with these settings."""


def basic_auth_problem(value: str) -> str | None:
    """Why FLOWER_BASIC_AUTH is unusable, or None when every entry is user:password."""
    entries = value.split(",")
    for entry in entries:
        user, colon, password = entry.partition(":")
        if not (user.strip() and colon and password):
            return "FLOWER_BASIC_AUTH must be user:password[,user:password…] with no empty part"
    return None


def check_access(env: Mapping[str, str], local_only: bool, address: str | None) -> bool:
    """Whether Flower will ask for credentials; raises if this setup must not start."""
    basic_auth = env.get("FLOWER_BASIC_AUTH", "")
    if basic_auth:
        problem = basic_auth_problem(basic_auth)
        if problem:
            raise FlowerConfigError(problem)
    authenticated = bool(basic_auth or (env.get("FLOWER_AUTH") and env.get("FLOWER_AUTH_PROVIDER")))
    if local_only and not _is_loopback(address or ""):
        raise FlowerConfigError(f"--local-only listens on {LOCAL_ADDRESS}, not on {address}")
    if not authenticated and not local_only:
        raise FlowerConfigError(
            "Flower needs credentials: set FLOWER_BASIC_AUTH=user:password (or Flower's OAuth "
            "settings), or pass --local-only for a private instance on 127.0.0.1"
        )
    return authenticated


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def flower_argv(
    port: int, address: str | None, url_prefix: str | None, env: Mapping[str, str]
) -> list[str]:
    argv = ["flower", f"--port={port}"]
    if address:
        argv.append(f"--address={address}")
    if url_prefix:
        argv.append(f"--url_prefix={url_prefix}")
    # Defaults that FLOWER_* variables can still change (the command line would win).
    if "FLOWER_TASKS_COLUMNS" not in env:
        argv.append(f"--tasks_columns={TASK_COLUMNS}")
    if "FLOWER_PURGE_OFFLINE_WORKERS" not in env:
        argv.append(f"--purge_offline_workers={PURGE_OFFLINE_WORKERS_SECONDS}")
    if "FLOWER_READ_ONLY" not in env:
        argv.append("--read_only=True")
    return argv


def run_flower(
    port: int,
    address: str | None,
    local_only: bool,
    url_prefix: str | None = None,
    env: MutableMapping[str, str] | None = None,
) -> int:
    """Start Flower in this process (every interface unless an address is given)."""
    env = os.environ if env is None else env
    if local_only:
        address = address or LOCAL_ADDRESS
    if not check_access(env, local_only, address):
        # A private instance: its API answers without credentials, like its pages.
        env["FLOWER_UNAUTHENTICATED_API"] = "true"
    from core.celery_app import make_app
    from core.settings import load_settings

    code = make_app(load_settings()).start(flower_argv(port, address, url_prefix, env))
    return int(code or 0)
