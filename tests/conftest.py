"""Pytest fixtures: real stacks (tests/fixtures/stacks.py) shared by a session, and the
grouping that keeps each module's (or shared group's) fixtures in one xdist process."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.fixtures.stacks import (
    LEASE_SECONDS,
    POSTGRES_ADMIN_URL,
    REDIS_TEST_URL,
    REPO,
    TEST_KINDS,
    Stack,
    base_env,
    make_stack,
    postgres_database,
)

__all__ = [
    "LEASE_SECONDS",
    "POSTGRES_ADMIN_URL",
    "REDIS_TEST_URL",
    "REPO",
    "Stack",
    "base_env",
    "make_stack",
    "postgres_database",
]
os.environ["ATELIER_EXTRA_KINDS"] = TEST_KINDS  # the client in this process validates them too


# Test modules that share session fixtures (trained models) run in one xdist process.
SHARED_FIXTURE_GROUPS = {
    "test_sampling": "trained-images",
    "test_vae": "trained-images",
    "test_cgan": "trained-images",
    "test_denoising_ae": "trained-images",
    "test_text_lm": "trained-text",
    "test_text_generate": "trained-text",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With pytest-xdist's `--dist loadgroup` (pyproject.toml), each group runs in one
    process: a test module, or the modules of a shared group, so their module and
    session fixtures are built once."""
    for item in items:
        module = item.nodeid.partition("::")[0].rpartition("/")[2].removesuffix(".py")
        item.add_marker(pytest.mark.xdist_group(SHARED_FIXTURE_GROUPS.get(module, module)))


@pytest.fixture(scope="session", params=["embedded", "services"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A running two-worker stack per backend, shared by the tests of a session."""
    running, cleanup = make_stack(request.param, tmp_path_factory.mktemp(request.param))
    running.start()
    yield running
    running.stop()
    cleanup()


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running, cleanup = make_stack("embedded", tmp_path_factory.mktemp("embedded-dcgan"))
    running.start()
    yield running
    running.stop()
    cleanup()
