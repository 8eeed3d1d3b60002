"""`mixed_precision: true` on every training kind whose case in tests/fixtures/kind_cases.py
names a float16 spec: float16 layers with float32 weights and outputs, loss-scaled
optimizers, finite losses, and a stopped and resumed run that ends with the bytes of an
uninterrupted one (the loss scale travels in the checkpoint).

Float16 convolutions are slow on CPUs, so the sizes are the smallest each kind allows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.kind_cases import (
    RESUMABLE,
    KindCase,
    KindRuns,
    assert_parts_make_the_reference,
    run_in_parts,
    training_entries,
)
from tests.fixtures.local_context import DictCache, LocalContext

MIXED = [case for case in RESUMABLE if case.resume and case.resume.mixed_precision is not None]


def parts_of(entry: Any, kind: type) -> list[Any]:
    """The entry's attributes of `kind`, also those held in a dict attribute."""
    found: dict[int, Any] = {}
    for value in vars(entry).values():
        for item in value.values() if isinstance(value, dict) else [value]:
            if isinstance(item, kind):
                found[id(item)] = item
    return list(found.values())


@pytest.mark.parametrize("case", MIXED, ids=str)
def test_mixed_precision_trains_in_float16_and_resumes_exactly(
    case: KindCase, kind_runs: KindRuns, tmp_path: Path
) -> None:
    import keras

    assert case.resume is not None and case.resume.mixed_precision is not None
    changes = {**case.resume.mixed_precision, "mixed_precision": True, "deterministic": True}
    spec = case.spec(kind_runs.inputs, **changes)
    cache = DictCache()
    whole = case.run(spec, LocalContext(tmp_path / "whole", cache=cache))
    assert keras.config.dtype_policy().name == "float32"  # the process default is kept
    assert all(math.isfinite(v) for call in whole.progress_calls for v in call.metrics.values())

    [key] = training_entries(cache)  # not the quality metrics' classifier (float32)
    entry = cache.entries[key]
    models = parts_of(entry, keras.Model)
    optimizers = parts_of(entry, keras.optimizers.Optimizer)
    assert models and optimizers
    for model in models:
        compute = {layer.compute_dtype for layer in model.layers if layer.weights}
        assert "float16" in compute, model.name
        assert {w.dtype for w in model.weights if w.trainable} == {"float32"}, model.name
        assert {output.dtype for output in model.outputs} == {"float32"}, model.name
    for optimizer in optimizers:
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert float(optimizer.dynamic_scale.numpy()) > 1

    # A fresh cache for the resumed part: the scale comes from the checkpoint.
    parts = run_in_parts(case, spec, tmp_path / "split", stops=[3])
    assert_parts_make_the_reference(parts, [3], whole)

    entry.start_job(spec)  # the next job on this worker starts from the initial scale
    assert all(float(o.dynamic_scale.numpy()) == o.initial_scale for o in optimizers)
