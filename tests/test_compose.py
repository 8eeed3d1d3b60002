"""docker-compose.yml, without a Docker engine and without Compose: the file is resolved as
Compose resolves it (tests/fixtures/compose.py) with .env.example's values, and the tests
check the properties the production stack promises on it, and on the source for what
resolution hides (defaults of secrets). The schema validation by Debian's docker-compose
is a separate step of .ci/run (.ci/compose-check)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import load_settings
from core.storage import DirectoryStore, ObjectStore, open_storage
from scheduler.cli import _parser
from tests.fixtures.compose import MissingVariable, env_file_values, resolve
from worker.cli import parser as worker_parser

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
MINIO = REPO / "docker-compose.minio.yml"
MINIO_SECRETS = {"MINIO_ROOT_USER": "minio-admin", "MINIO_ROOT_PASSWORD": "m1n10-secret"}
ENV_EXAMPLE = REPO / ".env.example"
SECRETS = ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH")
ATELIER_SERVICES = ("migrate", "scheduler", "worker", "worker-cpu", "flower")
VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)")


def example_values() -> dict[str, str]:
    return env_file_values(ENV_EXAMPLE)


FILLED = {"REDIS_PASSWORD": "r3dis", "POSTGRES_PASSWORD": "p0stgres", "FLOWER_BASIC_AUTH": "a:b"}


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The file as Compose reads it with .env.example's values and the secrets filled in,
    every profile on."""
    return resolve(COMPOSE, {**example_values(), **FILLED}, profiles=["cpu"])


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_profiles_decide_the_services(resolved: dict[str, Any]) -> None:
    everything = {"redis", "postgres", *ATELIER_SERVICES}
    assert set(resolved["services"]) == everything
    default = resolve(COMPOSE, {**example_values(), **FILLED})
    assert set(default["services"]) == everything - {"worker-cpu"}


@pytest.mark.parametrize("secret", SECRETS)
def test_every_secret_is_required(secret: str) -> None:
    with pytest.raises(MissingVariable, match=f"set {secret}"):
        resolve(COMPOSE, {**example_values(), **FILLED, secret: ""}, profiles=["cpu"])


def test_env_example_documents_every_variable_and_holds_no_secret(source: Any) -> None:
    used = set(VARIABLE.findall(COMPOSE.read_text() + MINIO.read_text()))
    values = example_values()
    assert used == set(values)
    secrets = (*SECRETS, *MINIO_SECRETS, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    assert all(values[secret] == "" for secret in secrets)
    text = ENV_EXAMPLE.read_text()
    for name in values:  # each variable has a comment right above it
        assert re.search(rf"#[^\n]*\n(?:[A-Z_]+=[^\n]*\n)*{name}=", text), name
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_redis_needs_a_password_persists_and_never_evicts(resolved: dict[str, Any]) -> None:
    redis = resolved["services"]["redis"]
    command = " ".join(redis["command"]).replace("$$", "$")  # 1.29 prints $ escaped
    assert '--requirepass "$REDIS_PASSWORD"' in command
    options = shlex.split(command.split("redis-server", 1)[1])
    pairs = dict(zip(options[::2], options[1::2], strict=True))
    assert pairs["--appendonly"] == "yes"
    assert pairs["--appendfsync"] == "everysec"
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert "ports" not in redis
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])
    assert mounts(redis) == {"/data": "redis-data"}


def test_postgres_has_a_named_volume_and_a_healthcheck(resolved: dict[str, Any]) -> None:
    postgres = resolved["services"]["postgres"]
    assert mounts(postgres) == {"/var/lib/postgresql/data": "postgres-data"}
    assert "postgres-data" in resolved["volumes"]  # named: survives `down`
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "ports" not in postgres


def test_one_image_services_differ_only_by_command(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    common = ("build", "image", "environment", "volumes", "init")
    first = services[ATELIER_SERVICES[0]]
    for name in ATELIER_SERVICES:
        service = services[name]
        for key in common:
            if key == "environment":
                shared = {k: v for k, v in service[key].items() if k != "FLOWER_BASIC_AUTH"}
                assert shared == first[key], name
            else:
                assert service[key] == first[key], (name, key)
        assert "entrypoint" not in service and "container_name" not in service
        # Each command is a valid `atelier` command line (the image's entrypoint), whose
        # `worker` command is the worker program's own.
        command = service["command"]
        if command[0] == "worker":
            worker_parser().parse_args(command[1:])
        else:
            _parser().parse_args(command)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["atelier"]' in dockerfile and dockerfile.count("FROM ") == 1
    assert len({tuple(services[n]["command"]) for n in ATELIER_SERVICES}) == len(ATELIER_SERVICES)


def test_migrate_runs_once_before_scheduler_and_workers(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"] and migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("scheduler", "worker", "worker-cpu"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["postgres"]["condition"] == "service_healthy"
    assert services["scheduler"]["command"] == ["scheduler", "--metrics-port", "9808"]
    assert "deploy" not in services["scheduler"]  # one instance, no replicas
    # The queue metrics have no login: served on the compose network, published nowhere.
    assert "ports" not in services["scheduler"]


def test_workers_scale_and_stop_warm(resolved: dict[str, Any], source: Any) -> None:
    services = resolved["services"]
    worker = services["worker"]
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    # Every replica sees all GPUs and claims one of its own (Docker would give each
    # replica the same GPU for `count: 1`).
    assert device["count"] == "all"
    assert worker["command"][:3] == ["worker", "--gpus", "any"]
    assert "container_name" not in worker and "ports" not in worker
    cpu = services["worker-cpu"]
    assert source["services"]["worker-cpu"]["profiles"] == ["cpu"]
    assert "deploy" not in cpu and "--gpus" not in cpu["command"]
    for service in (worker, cpu):
        assert _seconds(service["stop_grace_period"]) >= 60
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
        assert service["restart"] == "unless-stopped"


def test_workers_share_atelier_home(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name in ("migrate", "scheduler", "worker", "worker-cpu"):
        assert services[name]["environment"]["ATELIER_HOME"] == "/data"
        assert mounts(services[name])["/data"] == "atelier-data"
    assert "atelier-data" in resolved["volumes"]


def test_flower_requires_credentials_from_the_environment(
    resolved: dict[str, Any], source: Any
) -> None:
    flower = resolved["services"]["flower"]
    assert flower["command"][0] == "flower"
    assert not any("auth" in part for part in flower["command"])  # not in `ps`
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == FILLED["FLOWER_BASIC_AUTH"]
    declared = source["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert declared.startswith("${FLOWER_BASIC_AUTH:?")  # no default password
    [port] = flower["ports"]
    assert port["target"] == 5555 and int(port["published"]) == 5555
    assert "/healthcheck" in " ".join(flower["healthcheck"]["test"])


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target -> source of a service's volumes, in short (1.29) or long (v2) syntax."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        found[target] = source
    return found


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(
        float(number) * units[unit] for number, unit in re.findall(r"([\d.]+)(ms|h|m|s)", duration)
    )


def test_the_default_keeps_files_in_the_data_volume(resolved: dict[str, Any]) -> None:
    for name in ATELIER_SERVICES:
        settings = load_settings(resolved["services"][name]["environment"])
        assert settings.storage_url is None, name
        assert isinstance(open_storage(settings), DirectoryStore)
        assert settings.home == Path("/data") and settings.cache_dir == Path("/data/cache")


def test_the_minio_variant_puts_every_file_in_its_bucket() -> None:
    env = {**example_values(), **FILLED, **MINIO_SECRETS}
    both = resolve([COMPOSE, MINIO], env, profiles=["cpu"])
    services = both["services"]
    assert set(services) == {"redis", "postgres", "minio", "bucket", *ATELIER_SERVICES}
    for name in ATELIER_SERVICES:
        environment = services[name]["environment"]
        assert environment["ATELIER_STORAGE_URL"] == "s3://atelier/atelier", name
        assert environment["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert environment["AWS_ACCESS_KEY_ID"] == MINIO_SECRETS["MINIO_ROOT_USER"]
        assert environment["AWS_SECRET_ACCESS_KEY"] == MINIO_SECRETS["MINIO_ROOT_PASSWORD"]
        assert environment["ATELIER_HOME"] == "/data"  # the base file's settings stay
        store = open_storage(load_settings(environment))
        assert isinstance(store, ObjectStore) and store.bucket == "atelier"
    for name in ("scheduler", "worker", "worker-cpu"):
        depends = services[name]["depends_on"]
        assert depends["bucket"]["condition"] == "service_completed_successfully"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    minio, bucket = services["minio"], services["bucket"]
    assert "ports" not in minio and mounts(minio)["/data"] == "minio-data"
    assert minio["healthcheck"]["test"] and minio["environment"] == MINIO_SECRETS
    assert bucket["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing" in " ".join(bucket["entrypoint"])
    assert "minio-data" in both["volumes"]


@pytest.mark.parametrize("secret", sorted(MINIO_SECRETS))
def test_the_minio_variant_requires_its_login(secret: str) -> None:
    env = {**example_values(), **FILLED, **MINIO_SECRETS, secret: ""}
    with pytest.raises(MissingVariable, match=f"set {secret}"):
        resolve([COMPOSE, MINIO], env)
