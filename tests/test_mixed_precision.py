"""`mixed_precision: true` on every training kind: float16 layers with float32 weights and
outputs, loss-scaled optimizers, finite losses, and a stopped and resumed run that ends
with the bytes of an uninterrupted one (the loss scale travels in the checkpoint).

Float16 convolutions are slow on CPUs, so the sizes are the smallest each kind allows.
"""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.local_context import DictCache, LocalContext, StopRequested
from tests.test_text_lm import write_corpus

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

IMAGES: dict[str, Any] = dict(
    dataset="glyphs", image_size=16, dataset_size=32, steps_per_epoch=2, epochs=2, seed=5
)
KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "dcgan": ("kinds.dcgan", {**IMAGES, "batch_size": 4, "latent_dim": 8, "samples": 4}),
    "cgan": (
        "kinds.cgan",
        {**IMAGES, "batch_size": 4, "latent_dim": 8, "samples_per_class": 1},
    ),
    "vae": ("kinds.vae", {**IMAGES, "batch_size": 8, "grid_size": 3}),
    "denoising-ae": (
        "kinds.denoising_ae",
        {**IMAGES, "batch_size": 8, "encoding_dim": 8, "samples": 2},
    ),
    "text-lm": (
        "kinds.text_lm",
        dict(
            architecture="transformer",
            epochs=2,
            steps_per_epoch=2,
            batch_size=4,
            sequence_length=12,
            vocab_size=200,
            embed_dim=16,
            latent_dim=32,
            num_heads=2,
            generate_length=6,
            temperatures=[1.0],
            seed=5,
        ),
    ),
}


def spec_of(kind: str, corpus: Path) -> Any:
    module_name, values = KINDS[kind]
    extra = {"corpus": str(corpus)} if kind == "text-lm" else {}
    spec = importlib.import_module(module_name).Spec(**values, **extra)
    return spec.model_copy(update={"mixed_precision": True, "deterministic": True})


def run(kind: str, spec: Any, ctx: LocalContext) -> None:
    importlib.import_module(KINDS[kind][0]).run(spec, ctx)


def files(ctx: LocalContext) -> dict[str, bytes]:
    return {
        str(path.relative_to(ctx.output_dir)): path.read_bytes()
        for path in sorted(ctx.output_dir.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), files=1, lines=40)


@pytest.mark.parametrize("kind", list(KINDS))
def test_mixed_precision_trains_in_float16_and_resumes_exactly(
    kind: str, corpus: Path, tmp_path: Path
) -> None:
    import keras

    spec = spec_of(kind, corpus)
    cache = DictCache()
    whole = LocalContext(tmp_path / "whole", cache=cache)
    run(kind, spec, whole)
    assert keras.config.dtype_policy().name == "float32"  # the process default is kept
    assert all(math.isfinite(v) for call in whole.progress_calls for v in call.metrics.values())

    [entry] = cache.entries.values()
    models = [v for v in vars(entry).values() if isinstance(v, keras.Model)]
    optimizers = [v for v in vars(entry).values() if isinstance(v, keras.optimizers.Optimizer)]
    assert models and optimizers
    for model in models:
        compute = {layer.compute_dtype for layer in model.layers if layer.weights}
        assert "float16" in compute, model.name
        assert {w.dtype for w in model.weights if w.trainable} == {"float32"}, model.name
        assert {output.dtype for output in model.outputs} == {"float32"}, model.name
    for optimizer in optimizers:
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert float(optimizer.dynamic_scale.numpy()) > 1

    first = LocalContext(tmp_path / "split", stop_at=3)
    with pytest.raises(StopRequested):
        run(kind, spec, first)
    resumed = LocalContext(tmp_path / "split")  # a fresh cache: the scale comes from the checkpoint
    run(kind, spec, resumed)
    assert resumed.progress_calls[0].step == 4
    assert files(resumed) == files(whole)

    entry.start_job(spec)  # the next job on this worker starts from the initial scale
    assert all(float(o.dynamic_scale.numpy()) == o.initial_scale for o in optimizers)
