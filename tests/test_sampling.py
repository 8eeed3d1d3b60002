"""The generation kinds, gan-sample and vae-sample: specs, latent helpers, and jobs on
real workers reading the models of real training jobs (submitted while those still
train, so they wait for them), plus the submit-time refusals. Imports and bad specs:
tests/test_kind_contract.py."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
from PIL import Image

from kinds import gan_sample, vae_sample
from kinds.sampling import gif_bytes, latent_grid, walk
from scheduler.client import JobView
from tests.fixtures.data import enlarged, write_image_folder
from tests.fixtures.jobs import output_paths
from tests.fixtures.stacks import REPO, Stack
from tests.fixtures.trained import CGAN, DCGAN, training_jobs

# --- specs and helpers (no TensorFlow) ---------------------------------------------------


def test_queues_and_model_inputs() -> None:
    assert gan_sample.DEFAULT_QUEUE == vae_sample.DEFAULT_QUEUE == "cpu"
    assert gan_sample.MODEL_INPUTS == {"model": ("dcgan", "cgan")}
    assert vae_sample.MODEL_INPUTS == {"model": ("vae",)}


def test_vae_sample_concept_from_folders_needs_both(tmp_path: Path) -> None:
    for name in ("smiling", "neutral"):
        write_image_folder(tmp_path / name, 1, (8, 8))
    spec = vae_sample.Spec(
        model="abcd",
        mode="concept",
        with_images=str(tmp_path / "smiling"),
        without_images=str(tmp_path / "neutral"),
    )
    assert spec.without_images == str(tmp_path / "neutral")
    with pytest.raises(pydantic.ValidationError, match="go together"):
        vae_sample.Spec(model="abcd", mode="concept", with_images=str(tmp_path / "smiling"))
    labelled = vae_sample.Spec(model="abcd", mode="concept", with_labels=[1, 7])
    assert labelled.without_classes == [0, 2, 3, 4, 5, 6, 8, 9]


def test_latent_grid_is_laid_out_like_a_plot() -> None:
    points = latent_grid(3, -1.0, 1.0, 4, dims=(2, 0)).reshape(3, 3, 4)
    assert points.dtype == np.float32
    assert points[0, 0].tolist() == [1.0, 0.0, -1.0, 0.0]  # top left: x low, y high
    assert points[2, 2].tolist() == [-1.0, 0.0, 1.0, 0.0]  # bottom right: x high, y low
    assert not points[:, :, [1, 3]].any()


def test_walks_end_where_they_should() -> None:
    rng = np.random.default_rng(0)
    start, end = rng.standard_normal(8), rng.standard_normal(8)
    for spherical in (False, True):
        path = walk(start, end, 5, spherical=spherical)
        assert path.shape == (5, 8) and path.dtype == np.float32
        assert np.allclose(path[0], start, atol=1e-6) and np.allclose(path[-1], end, atol=1e-6)
    straight = walk(start, end, 3, spherical=False)
    assert np.allclose(straight[1], (start + end) / 2, atol=1e-6)
    arc = walk(start, -start, 3, spherical=True)  # opposite points: falls back to a line
    assert np.allclose(arc[1], 0.0, atol=1e-6)


def test_gif_holds_every_distinct_frame() -> None:
    frames = np.linspace(0.0, 1.0, 7, dtype=np.float32)[:, None, None, None] * np.ones(
        (7, 5, 6, 1), np.float32
    )
    with Image.open(io.BytesIO(gif_bytes(frames, 80))) as gif:
        assert (gif.format, gif.size, gif.n_frames) == ("GIF", (6, 5), 7)
        assert gif.info["duration"] == 80 and gif.info["loop"] == 0


# --- through real workers ----------------------------------------------------------------

GAN_FROM_CGAN: dict[str, Any] = dict(count=12, labels=[3, 7], interpolate=5, seed=4)
GAN_FROM_DCGAN: dict[str, Any] = dict(count=5, seed=2, interpolate=3, interpolation="linear")
VAE_GRID: dict[str, Any] = dict(mode="grid", grid_size=8, grid_range=[-2.0, 2.0])
VAE_WALK: dict[str, Any] = dict(mode="walk", frames=6, seed=3)
VAE_CONCEPT: dict[str, Any] = dict(
    mode="concept", with_labels=[1], count=4, strengths=[0.0, 1.0, 2.0], dataset_size=512
)


@pytest.fixture(scope="module")
def sampled(embedded_stack: Stack) -> dict[str, JobView]:
    """Generation jobs submitted right after (or while) their models train."""
    stack = embedded_stack
    trained = training_jobs(stack)
    jobs = {
        "cgan": stack.submit("gan-sample", model=trained["cgan"], **GAN_FROM_CGAN),
        "dcgan": stack.submit("gan-sample", model=trained["dcgan"][:8], **GAN_FROM_DCGAN),
        "dcgan-labels": stack.submit("gan-sample", model=trained["dcgan"], labels=[1]),
        "vae-grid": stack.submit("vae-sample", model=trained["vae"], **VAE_GRID),
        "vae-walk": stack.submit("vae-sample", model=trained["vae"], **VAE_WALK),
        "vae-concept": stack.submit("vae-sample", model=trained["vae"], **VAE_CONCEPT),
    }
    return {name: stack.wait(job_id, timeout=300) for name, job_id in jobs.items()}


def check_png(path: Path, size: tuple[int, int], mode: str = "L") -> None:
    with Image.open(path) as image:
        assert (image.format, image.mode, image.size) == ("PNG", mode, size), path
        image.load()


def check_walk(view: JobView, frames: int, side: int) -> None:
    walk_files = output_paths(view, "walk")
    assert sorted(walk_files) == [f"frame_{i:04d}.png" for i in range(frames)] + ["walk.gif"]
    for index in range(frames):
        check_png(walk_files[f"frame_{index:04d}.png"], (side, side))
    with Image.open(walk_files["walk.gif"]) as gif:
        assert (gif.format, gif.size, gif.n_frames) == ("GIF", (side, side), frames)


def test_gan_sample_from_a_cgan(embedded_stack: Stack, sampled: dict[str, JobView]) -> None:
    view = sampled["cgan"]
    assert view.status == "succeeded", view.error_message
    cgan = embedded_stack.client.get(training_jobs(embedded_stack)["cgan"])
    assert view.started_at >= cgan.finished_at  # it waited (implicitly) for its model
    side, count = CGAN["image_size"], GAN_FROM_CGAN["count"]
    images = output_paths(view, "image")
    assert sorted(images) == [f"sample_{i:04d}.png" for i in range(count)]
    for path in images.values():
        check_png(path, (side, side))
    # One column per label, the labels repeated down the rows.
    rows = math.ceil(count / 2)
    grid = output_paths(view, "grid")["grid.png"]
    check_png(grid, enlarged((2 * (side + 2) + 2, rows * (side + 2) + 2)))
    check_walk(view, GAN_FROM_CGAN["interpolate"], side)


def test_gan_sample_from_a_dcgan(sampled: dict[str, JobView]) -> None:
    view = sampled["dcgan"]
    assert view.status == "succeeded", view.error_message
    side = DCGAN["image_size"]
    images = output_paths(view, "image")
    assert len(images) == GAN_FROM_DCGAN["count"]
    for path in images.values():
        check_png(path, (side, side))
    grid = output_paths(view, "grid")["grid.png"]
    check_png(grid, enlarged((3 * (side + 2) + 2, 2 * (side + 2) + 2)))
    check_walk(view, GAN_FROM_DCGAN["interpolate"], side)


def test_model_named_by_its_output_id(embedded_stack: Stack, sampled: dict[str, JobView]) -> None:
    stack = embedded_stack
    dcgan = stack.client.get(training_jobs(stack)["dcgan"])
    [generator] = [o for o in dcgan.outputs if o.role == "model"]
    grid = next(o for o in dcgan.outputs if o.role == "sample")
    assert f"#{generator.id}" in stack.cli("outputs", dcgan.id, check=True).stdout

    settings = [f"{key}={json.dumps(value)}" for key, value in GAN_FROM_DCGAN.items()]
    args = [arg for setting in settings for arg in ("--set", setting)]
    job_id = stack.cli("submit", "gan-sample", "--set", f"model=#{generator.id}", *args).stdout
    view = stack.wait(job_id.strip())
    assert view.status == "succeeded", view.error_message
    assert view.spec["model"] == dcgan.id
    assert output_paths(view, "image")["sample_0000.png"].read_bytes() == (
        output_paths(sampled["dcgan"], "image")["sample_0000.png"].read_bytes()
    )
    refused = stack.cli("submit", "gan-sample", "--set", f"model={grid.id}")
    assert refused.returncode == 2
    assert f"no job or model output '{grid.id}'" in refused.stderr


def test_labels_for_an_unconditional_generator_fail_clearly(
    sampled: dict[str, JobView],
) -> None:
    view = sampled["dcgan-labels"]
    assert (view.status, view.attempts, view.error_code) == ("failed", 1, "bad_input")
    assert "labels apply to a cgan generator" in view.error_message


def test_vae_sample_grid(sampled: dict[str, JobView]) -> None:
    view = sampled["vae-grid"]
    assert view.status == "succeeded", view.error_message
    side = VAE_GRID["grid_size"] * 28
    check_png(output_paths(view, "grid")["latent_grid.png"], enlarged((side, side)))


def test_vae_sample_walk(sampled: dict[str, JobView]) -> None:
    view = sampled["vae-walk"]
    assert view.status == "succeeded", view.error_message
    check_walk(view, VAE_WALK["frames"], 28)


def test_vae_sample_concept_vector(sampled: dict[str, JobView]) -> None:
    view = sampled["vae-concept"]
    assert view.status == "succeeded", view.error_message
    columns, rows = len(VAE_CONCEPT["strengths"]), VAE_CONCEPT["count"]
    concept = output_paths(view, "grid")["concept.png"]
    check_png(concept, enlarged((columns * 30 + 2, rows * 30 + 2)))
    summary = json.loads(output_paths(view, "concept")["vector.json"].read_text())
    assert len(summary["vector"]) == 2 and summary["norm"] > 0
    assert summary["with_images"] > 0 and summary["without_images"] > summary["with_images"]
    assert summary["with_images"] + summary["without_images"] == VAE_CONCEPT["dataset_size"]


def test_bad_generation_specs_are_refused_at_submit(embedded_stack: Stack) -> None:
    from scheduler.specs import SpecError

    stack = embedded_stack
    trained = training_jobs(stack)
    before = len(stack.client.list(limit=1000))
    vae, cgan = trained["vae"], trained["cgan"]
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("gan-sample", {"model": vae}, f"field 'model': job {vae} is a vae job, expected dcgan"),
        ("vae-sample", {"model": cgan}, f"field 'model': job {cgan} is a cgan job, expected vae"),
        ("gan-sample", {"model": "nothere"}, "field 'model': no job or model output 'nothere'"),
        ("gan-sample", {"model": cgan, "labels": [2, 10]}, "labels 10 outside the dataset's"),
        ("gan-sample", {"model": cgan, "count": 0}, "field 'count': Input should be greater"),
        ("vae-sample", {"model": vae, "mode": "concept", "with_labels": [12]}, "12 outside"),
        ("vae-sample", {"model": vae, "grid_size": -3}, "field 'grid_size': Input should be"),
        ("cgan", {"dataset": str(REPO / "no-such-folder")}, "field 'dataset': dataset"),
    ]
    for kind, spec, expected in cases:
        with pytest.raises(SpecError) as error:
            stack.client.submit(kind, spec)
        assert expected in str(error.value) and "\n" not in str(error.value), str(error.value)
    # The command line prints the same one line and exits with 2.
    result = stack.cli("submit", "gan-sample", "--set", f"model={vae}", "--set", "count=3")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"atelier: error: gan-sample: field 'model': job {vae} is a vae job, expected dcgan, cgan"
    )
    assert len(stack.client.list(limit=1000)) == before
