"""Pytest fixtures: real stacks (tests/fixtures/stacks.py) and the kind cases' reference
runs (tests/fixtures/kind_cases.py) shared by a session, and the grouping that keeps
each module's (or shared group's) fixtures in one xdist process."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.fixtures.jobs import Stacks
from tests.fixtures.kind_cases import KindCase, KindRuns
from tests.fixtures.stacks import TEST_KINDS, Stack

os.environ["ATELIER_EXTRA_KINDS"] = TEST_KINDS  # the client in this process validates them too
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow in this process: no info lines


def pytest_configure(config: pytest.Config) -> None:
    # Keras 3.15 calls np.array(tensor) in get_weights/save, which numpy 2.4 flags.
    config.addinivalue_line("filterwarnings", "ignore:__array__ implementation:DeprecationWarning")


# Test modules that share session fixtures (trained models) run in one xdist process.
SHARED_FIXTURE_GROUPS = {
    "test_sampling": "trained-images",
    "test_vae": "trained-images",
    "test_cgan": "trained-images",
    "test_denoising_ae": "trained-images",
    "test_text_lm": "trained-text",
    "test_text_generate": "trained-text",
    "test_dcgan_e2e": "stacks",  # both use the session's `stack` of each backend
    "test_kill_resume": "stacks",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With pytest-xdist's `--dist loadgroup` (pyproject.toml), each group runs in one
    process: a test module, or the modules of a shared group, so their module and
    session fixtures are built once. A contract test of a kind case runs with the kind's
    own module (they share the case's reference run)."""
    for item in items:
        module = item.nodeid.partition("::")[0].rpartition("/")[2].removesuffix(".py")
        params = getattr(item, "callspec", None)
        case = params.params.get("case") if params is not None else None
        if module == "test_kind_contract" and isinstance(case, KindCase):
            module = case.tests
        item.add_marker(pytest.mark.xdist_group(SHARED_FIXTURE_GROUPS.get(module, module)))


@pytest.fixture(scope="session")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    tmp_path_factory.getbasetemp()  # created here: pytest's first call is not thread-safe
    running = Stacks(tmp_path_factory)
    yield running
    running.stop()


@pytest.fixture(scope="session", params=["embedded", "services"])
def stack(request: pytest.FixtureRequest, stacks: Stacks) -> Stack:
    """A running two-worker stack per backend, shared by the tests of a session."""
    return stacks.get(request.param)


@pytest.fixture(scope="session")
def embedded_stack(stacks: Stacks) -> Stack:
    return stacks.get("embedded", name="embedded-dcgan")


@pytest.fixture(scope="session")
def kind_runs(tmp_path_factory: pytest.TempPathFactory) -> KindRuns:
    """The kind cases' input files and reference runs, made on first use."""
    return KindRuns(tmp_path_factory.mktemp("kinds"))
