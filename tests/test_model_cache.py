"""The worker's per-process model cache: least recently used entries go beyond its limit,
which ATELIER_MODEL_CACHE_ENTRIES sets."""

from __future__ import annotations

import pytest

from core.settings import DEFAULT_MODEL_CACHE_ENTRIES, SettingsError, load_settings
from scheduler.cli import main
from worker.model_cache import ProcessModelCache


def test_least_recently_used_entry_is_dropped_beyond_the_limit() -> None:
    cache = ProcessModelCache(max_entries=2)
    built: list[str] = []

    def get(name: str) -> str:
        def build() -> str:
            built.append(name)
            return f"model {name}"

        return cache.get_or_build((name,), build)

    assert (get("a"), get("b"), get("a")) == ("model a", "model b", "model a")
    get("c")  # "b" is the least recently used
    assert cache.keys() == [("a",), ("c",)] and cache.evictions == 1
    assert get("b") == "model b"  # built again, pushing out "a"
    assert built == ["a", "b", "c", "b"]
    assert cache.keys() == [("c",), ("b",)] and cache.hits[("a",)] == 1


def test_limit_comes_from_the_environment() -> None:
    assert load_settings({}).model_cache_entries == DEFAULT_MODEL_CACHE_ENTRIES
    assert load_settings({"ATELIER_MODEL_CACHE_ENTRIES": "3"}).model_cache_entries == 3
    for bad in ("0", "-1", "2.5", "two"):
        with pytest.raises(SettingsError) as error:
            load_settings({"ATELIER_MODEL_CACHE_ENTRIES": bad})
        assert str(error.value) == (
            f"ATELIER_MODEL_CACHE_ENTRIES must be a positive whole number, got {bad!r}"
        )


def test_a_bad_setting_is_a_one_line_cli_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ATELIER_LEASE_SECONDS", "nan")
    assert main(["list"]) == 2
    assert capsys.readouterr().err == (
        "atelier: error: ATELIER_LEASE_SECONDS must be a positive number, got 'nan'\n"
    )
