"""Quality metrics of the image generators (kinds.quality): the Fréchet distance against
its closed form, the glyph classifier (accuracy, trained once per machine), the FID's
sense (real glyphs close, noise far), and what dcgan, cgan and vae runs record: `fid`
falling while a GAN learns, `label_accuracy` of a trained cGAN above chance, nothing with
`quality` off, events at multiples of `quality_every` that a resumed run repeats."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kinds.quality.frechet import Gaussian, frechet_distance
from tests.fixtures.data import write_image_folder
from tests.fixtures.kind_cases import (
    CASES,
    KindRuns,
    assert_parts_make_the_reference,
    output_files,
    run_in_parts,
)
from tests.fixtures.local_context import DictCache, LocalContext, machine_cache_dir

FEATURES = {"fid_features": "glyph_classifier"}


# --- the Fréchet distance ---------------------------------------------------------------


def test_frechet_distance_of_identical_sets_is_zero() -> None:
    features = np.random.default_rng(0).normal(size=(300, 8)) @ np.diag(np.arange(1.0, 9.0))
    same = Gaussian.of(features)
    assert frechet_distance(same, same) == pytest.approx(0.0, abs=1e-8)
    shuffled = Gaussian.of(features[::-1])
    assert frechet_distance(same, shuffled) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_shifted_gaussians_has_the_closed_form() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    shift = np.array([3.0, -1.0, 0.5, 0.0, 2.0])
    # The same covariance: the distance is the squared shift of the means.
    moved = frechet_distance(Gaussian.of(features), Gaussian.of(features + shift))
    assert moved == pytest.approx(float(shift @ shift), rel=1e-9)

    # Commuting (diagonal) covariances: |m1 - m2|² + Σ (√a - √b)².
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    first = Gaussian(np.zeros(3), np.diag(a), 100)
    second = Gaussian(np.ones(3), np.diag(b), 100)
    expected = 3.0 + float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(first, second) == pytest.approx(expected, rel=1e-12)

    # Any covariances: Tr √(S1 S2) is the sum of the roots of S1 S2's (real) eigenvalues.
    s1, s2 = (m @ m.T + np.eye(4) for m in rng.normal(size=(2, 4, 4)))
    m1, m2 = rng.normal(size=(2, 4))
    roots = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).real))
    general = float((m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * roots)
    distance = frechet_distance(Gaussian(m1, s1, 10), Gaussian(m2, s2, 10))
    assert distance == pytest.approx(general, rel=1e-9)
    assert distance == pytest.approx(frechet_distance(Gaussian(m2, s2, 10), Gaussian(m1, s1, 10)))


# --- the glyph classifier -------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_machine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, float]:
    """A machine's cache folder where the classifier was just trained: the folder, the
    classifier and the seconds its training took."""
    from kinds.quality.glyph_classifier import glyph_classifier

    folder = tmp_path_factory.mktemp("machine-cache")
    began = time.perf_counter()
    classifier = glyph_classifier(DictCache(), folder)
    return folder, classifier, time.perf_counter() - began


def test_classifier_is_trained_once_per_machine_and_reused(
    fresh_machine: tuple[Path, Any, float],
) -> None:
    from kinds import keras_state
    from kinds.quality.glyph_classifier import VERSION, glyph_classifier

    folder, first, seconds = fresh_machine
    assert first.trained
    assert seconds < 60, f"training the classifier took {seconds:.1f} s"
    saved = folder / "features" / f"{VERSION}.npz"
    written = saved.stat().st_mtime_ns
    cache = DictCache()  # another worker process of the machine
    second = glyph_classifier(cache, folder)
    assert not second.trained and saved.stat().st_mtime_ns == written
    assert glyph_classifier(cache, folder) is second and set(cache.builds.values()) == {1}
    ours, theirs = (keras_state.model_arrays("m", c.model) for c in (first, second))
    assert all(np.array_equal(ours[key], theirs[key]) for key in ours)
    assert [path.name for path in saved.parent.glob("*.npz")] == [saved.name]  # no temp left


def test_classifier_trains_again_over_a_damaged_file(tmp_path: Path) -> None:
    from kinds.quality.glyph_classifier import VERSION, load_or_train

    (tmp_path / "features").mkdir()
    (tmp_path / "features" / f"{VERSION}.npz").write_bytes(b"not a zip")
    assert load_or_train(tmp_path).trained
    assert not load_or_train(tmp_path).trained


@pytest.mark.parametrize("size", [28, 16, 64])
def test_classifier_reads_held_out_glyphs(
    size: int, fresh_machine: tuple[Path, Any, float]
) -> None:
    from kinds.datasets import render_glyphs

    classifier = fresh_machine[1]
    images, labels = render_glyphs(1000, size, seed=123)  # the training glyphs' seeds differ
    accuracy = float(np.mean(classifier.classes(images) == labels))
    assert accuracy > 0.95, accuracy
    rgb = np.repeat(images[:200], 3, axis=-1)  # colour images are read by their luminance
    assert np.array_equal(classifier.classes(rgb), classifier.classes(images[:200]))


def test_fid_of_real_glyphs_is_far_below_that_of_noise(
    fresh_machine: tuple[Path, Any, float],
) -> None:
    from kinds.datasets import render_glyphs

    features = fresh_machine[1]
    training = Gaussian.of(features(render_glyphs(1000, 28, seed=7)[0]))
    others = render_glyphs(500, 28, seed=8)[0]  # another render: disjoint draws
    noise = np.random.default_rng(0).uniform(size=others.shape).astype(np.float32)
    real_fid = frechet_distance(Gaussian.of(features(others)), training)
    noise_fid = frechet_distance(Gaussian.of(features(noise)), training)
    blank_fid = frechet_distance(Gaussian.of(features(others * 0.3)), training)
    assert real_fid * 10 < noise_fid, (real_fid, noise_fid)
    assert real_fid * 10 < blank_fid, (real_fid, blank_fid)


# --- what the kinds record -----------------------------------------------------------------


def quality_events(ctx: LocalContext, name: str = "fid") -> list[tuple[int, float]]:
    return [(event.step, event.values[name]) for event in ctx.metric_events if name in event.values]


def test_dcgan_fid_falls_while_it_learns(tmp_path: Path) -> None:
    from kinds.dcgan import Spec, run

    # The dcgan networks at 16 px, Adam at 1e-3 with the DCGAN paper's beta_1: in 48
    # steps the samples go from noise to blobs of ink where digits are.
    spec = Spec(
        dataset="glyphs", image_size=16, latent_dim=16, batch_size=16, dataset_size=256,
        epochs=3, steps_per_epoch=16, learning_rate=1e-3, beta_1=0.5, samples=4,
        deterministic=True, seed=1,
    )  # fmt: skip
    ctx = LocalContext(tmp_path)
    run(spec, ctx)
    fids = quality_events(ctx)
    assert [step for step, _ in fids] == [16, 32, 48]
    assert all(event.notes == FEATURES for event in ctx.metric_events)
    first, last = fids[0][1], fids[-1][1]
    assert last < first / 2, fids
    # A step's progress holds its losses only (the run context adds the latest fid).
    assert all(set(call.metrics) == {"d_loss", "g_loss"} for call in ctx.progress_calls)


def test_trained_cgan_draws_the_classes_it_is_asked_for(tmp_path: Path) -> None:
    from kinds.cgan import Spec, run

    # 112 steps of 32: the cheapest training found whose label accuracy is well clear of
    # chance (0.1); measured once, at the end (quality_every = every step of the run).
    steps = 7 * 16
    spec = Spec(
        dataset="glyphs", image_size=16, latent_dim=16, batch_size=32, dataset_size=512,
        epochs=7, steps_per_epoch=16, learning_rate=1e-3, beta_1=0.5, label_noise=0.0,
        samples_per_class=1, quality_every=steps, deterministic=True, seed=1,
    )  # fmt: skip
    ctx = LocalContext(tmp_path)
    run(spec, ctx)
    measured = [event for event in ctx.metric_events if "fid" in event.values]
    assert [(event.step, event.epoch) for event in measured] == [(steps, 7)]
    assert set(measured[0].values) == {"fid", "label_accuracy"}
    assert measured[0].notes == FEATURES
    assert measured[0].values["label_accuracy"] > 0.3, measured[0].values


def test_quality_off_measures_nothing(tmp_path: Path) -> None:
    from kinds.dcgan import Spec, run

    cache = DictCache()
    ctx = LocalContext(tmp_path, cache=cache, cache_dir=tmp_path / "machine")
    run(Spec(**{**CASES["dcgan"].values, "quality": False}), ctx)
    assert [set(event.values) for event in ctx.metric_events] == [{"d_loss", "g_loss"}] * 2
    assert all(event.notes == {} for event in ctx.metric_events)
    assert all(set(call.metrics) == {"d_loss", "g_loss"} for call in ctx.progress_calls)
    assert not any(key[0] == "quality" for key in cache.entries)  # nothing built or trained
    assert not (tmp_path / "machine").exists()


def test_quality_every_records_its_own_events_and_resumes_exactly(tmp_path: Path) -> None:
    from kinds.dcgan import Spec

    case = CASES["dcgan"]  # 2 epochs of 3 steps
    spec = Spec(**{**case.values, "image_size": 16, "quality_every": 2})
    reference = case.run(spec, LocalContext(tmp_path / "whole"))
    events = [(e.step, e.epoch, sorted(e.values), e.notes) for e in reference.metric_events]
    losses = ["d_loss", "g_loss"]
    assert events == [
        (2, 1, ["fid"], FEATURES),
        (3, 1, losses, {}),
        (4, 2, ["fid"], FEATURES),
        (6, 2, ["fid"], FEATURES),
        (6, 2, losses, {}),
    ]
    stops = [5]  # a step after an evaluation: its fid is reported on
    parts = run_in_parts(case, spec, tmp_path / "parts", stops)
    assert_parts_make_the_reference(parts, stops, reference)


def test_vae_records_the_fid_of_its_prior_samples(tmp_path: Path) -> None:
    from kinds.vae import Spec, run

    ctx = LocalContext(tmp_path)
    run(Spec(**CASES["vae"].values), ctx)
    assert [event.step for event in ctx.metric_events] == [4, 8]
    for event in ctx.metric_events:
        assert set(event.values) == {"total_loss", "reconstruction_loss", "kl_loss", "fid"}
        assert event.values["fid"] > 0 and event.notes == FEATURES


def test_without_inception_s_weights_other_datasets_use_the_glyph_classifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without InceptionV3's weights in Keras' cache (the metric never downloads them), a
    colour dataset's FID uses the glyph classifier and its events say so."""
    from kinds.dcgan import Spec, run
    from kinds.quality import inception

    monkeypatch.setattr(inception, "keras_models_dir", lambda: tmp_path / "no-weights")
    images = write_image_folder(tmp_path / "images", 8, (20, 24))
    spec = Spec(**{**CASES["dcgan"].values, "dataset": str(images), "image_size": 16,
                   "batch_size": 4, "epochs": 1, "samples": 4})  # fmt: skip
    ctx = LocalContext(tmp_path / "run")
    run(spec, ctx)
    (event,) = ctx.metric_events
    assert event.notes == FEATURES and event.values["fid"] >= 0


def test_machine_cache_is_shared_by_local_contexts(tmp_path: Path) -> None:
    assert LocalContext(tmp_path / "a").cache_dir == LocalContext(tmp_path / "b").cache_dir
    assert LocalContext(tmp_path / "a").cache_dir == machine_cache_dir()


def test_pix2pix_with_quality_off_keeps_its_held_out_grid(
    tmp_path: Path, kind_runs: KindRuns
) -> None:
    case = CASES["pix2pix"]
    runs = {
        quality: case.run(
            case.spec(kind_runs.inputs, quality=quality), LocalContext(tmp_path / f"{quality}")
        )
        for quality in (True, False)
    }
    assert [sorted(e.values) for e in runs[False].metric_events] == [
        ["d_loss", "g_gan", "g_l1"]
    ] * 2
    assert all("val_l1" in event.values for event in runs[True].metric_events)
    grids = {quality: output_files(ctx) for quality, ctx in runs.items()}
    assert grids[True] == grids[False]  # the same held-out translations, measured or not
