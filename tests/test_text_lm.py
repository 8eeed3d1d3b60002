"""The text-lm kind: spec and corpus checks, in-process training and exact resume through
LocalContext, and end to end through a real worker (training, SIGKILL, bad input).

The trained models of the end-to-end tests are shared with tests/test_text_generate.py
through `trained_job`, so each is trained once per test session.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest

from core.settings import load_settings
from kinds import text_corpus
from kinds.contract import JobError
from kinds.text_lm import DEFAULT_QUEUE, Spec, run
from scheduler.client import JobView
from tests.conftest import Stack, make_stack
from tests.fixtures.local_context import DictCache, LocalContext, SimulatedCrash, StopRequested

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keras 3.15 calls np.array(tensor) in get_weights/save, which numpy 2.4 flags.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
REPO = Path(__file__).resolve().parent.parent

# --- a corpus the tests write, and tiny specs --------------------------------------------

SUBJECTS = ["the film", "this movie", "the actor", "the story", "the director", "the music"]
VERBS = ["was", "is", "seemed", "felt"]
WORDS = ["great", "boring", "funny", "long", "beautiful", "terrible", "slow", "brilliant", "sad"]
ENDINGS = [
    "and i loved it",
    "but the cast was weak",
    "and the camera work was fine",
    "so i left early",
    "and my friends agreed",
]


def corpus_text(lines: int, seed: int) -> str:
    rng = random.Random(seed)
    sentences = (
        f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(WORDS)}, "
        f"{rng.choice(ENDINGS)}."
        for _ in range(lines)
    )
    return "\n".join(sentences) + "\n"


def write_corpus(folder: Path, files: int = 3, lines: int = 90) -> Path:
    """A directory of `files` reviews-like .txt files (about 4 KB each)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        (folder / f"review_{index}.txt").write_text(corpus_text(lines, seed=index))
    return folder


TRANSFORMER: dict[str, Any] = dict(
    architecture="transformer",
    epochs=3,
    batch_size=4,
    sequence_length=16,
    vocab_size=300,
    embed_dim=32,
    latent_dim=64,
    num_heads=2,
    generate_length=12,
    deterministic=True,
    seed=1,
)
LSTM: dict[str, Any] = dict(
    architecture="lstm",
    epochs=2,
    batch_size=16,
    sequence_length=20,
    stride=4,
    lstm_units=32,
    steps_per_epoch=25,
    generate_length=40,
    deterministic=True,
    seed=2,
)
SPECS = {"transformer": TRANSFORMER, "lstm": LSTM}


def tiny(corpus: Path, **changes: Any) -> Spec:
    return Spec(**{**TRANSFORMER, "corpus": str(corpus), **changes})


# --- a stack and jobs shared across the text test modules --------------------------------

# A cold worker imports TensorFlow inside its first job, and loading TensorFlow's shared
# library holds the GIL for one to three seconds on two busy cores: the heartbeat
# thread cannot renew conftest's 3-second lease, the job is run again elsewhere and the
# first attempt is wasted. These tests' stack gives leases this long instead.
TEXT_LEASE_SECONDS = 6

_STACK: list[Stack] = []
_STACK_LOCK = threading.Lock()
_JOBS: dict[tuple[str, str], str] = {}


def text_stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Stack:
    """`atelier up --workers 2` on SQLite and the embedded Redis, started on first use
    and stopped at the end of the session."""
    with _STACK_LOCK:
        return _text_stack(tmp_path_factory, request)


def _text_stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Stack:
    if not _STACK:
        stack, _ = make_stack("embedded", tmp_path_factory.mktemp("embedded-text"))
        stack.env["ATELIER_LEASE_SECONDS"] = str(TEXT_LEASE_SECONDS)
        stack.settings = load_settings(stack.env)
        stack.start()
        request.config.add_cleanup(stack.stop)
        _STACK.append(stack)
    return _STACK[0]


def shared_corpus(stack: Stack) -> Path:
    folder = stack.home / "text-corpus"
    if not folder.exists():
        write_corpus(folder)
    return folder


def trained_job(stack: Stack, name: str) -> str:
    """The id of the stack's `transformer` or `lstm` training job, submitted on first use
    (the caller waits for it)."""
    key = (str(stack.home), name)
    if key not in _JOBS:
        corpus = shared_corpus(stack)
        if name == "lstm":
            corpus = corpus / "review_0.txt"  # a single text file
        _JOBS[key] = stack.submit("text-lm", corpus=str(corpus), **SPECS[name])
    return _JOBS[key]


def finished(stack: Stack, job_id: str, timeout: float = 120) -> JobView:
    view = stack.wait(job_id, timeout=timeout)
    assert view.status == "succeeded", (view.error_code, view.error_message, stack.log_tail())
    return view


def files_of(view: JobView, role: str) -> dict[str, bytes]:
    return {o.name: Path(o.path).read_bytes() for o in view.outputs if o.role == role}


def epoch_losses(stack: Stack, job_id: str) -> list[float]:
    events = [e for e in stack.client.events(job_id) if e["type"] == "metrics"]
    by_epoch = {e["epoch"]: e["loss"] for e in events}
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def sample_tokens(text: str, level: str) -> list[str]:
    """Generated tokens of a sample file: each temperature's text after the prompt line."""
    tokens: list[str] = []
    for block in text.split("\n--- temperature ")[1:]:
        _, continuation = block.split("\n", 1)
        tokens += continuation.split() if level == "word" else list(continuation.rstrip("\n"))
    return tokens


# --- spec ----------------------------------------------------------------------------------


def test_defaults_follow_the_references() -> None:
    spec = Spec(corpus="imdb")
    assert DEFAULT_QUEUE == "gpu"
    assert (spec.corpus, spec.architecture, spec.vocab_size, spec.sequence_length) == (
        "imdb",
        "transformer",
        15000,
        100,
    )
    assert (spec.embed_dim, spec.latent_dim, spec.num_heads) == (256, 2048, 2)
    assert (spec.batch_size, spec.epochs, spec.learning_rate, spec.stride) == (256, 10, 1e-3, 99)
    assert (spec.prompt, spec.generate_length, spec.window) == ("this movie", 50, 99)
    assert spec.temperatures == [0.2, 0.5, 0.7, 1.0, 1.5]
    assert spec.lstm_units is None

    lstm = Spec(corpus="imdb", architecture="lstm")
    assert (lstm.sequence_length, lstm.stride, lstm.lstm_units, lstm.window) == (60, 3, 128, 60)
    assert (lstm.batch_size, lstm.epochs, lstm.learning_rate) == (128, 60, 1e-2)
    assert (lstm.prompt, lstm.generate_length) == (None, 400)
    assert (lstm.embed_dim, lstm.latent_dim, lstm.num_heads) == (None, None, None)
    stored = lstm.model_dump(mode="json")
    assert Spec.model_validate_json(json.dumps(stored)) == lstm  # what the worker reads back


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"temperatures": [0.5, 0.0]}, "greater than 0"),
        ({"temperatures": [-1.0]}, "greater than 0"),
        ({"temperatures": []}, "at least 1 item"),
        ({"temperatures": ["hot"]}, "valid number"),
        ({"epochs": 0}, "greater than 0"),
        ({"batch_size": -4}, "greater than 0"),
        ({"embed_dim": 0}, "greater than 0"),
        ({"latent_dim": 0}, "greater than 0"),
        ({"num_heads": 0}, "greater than 0"),
        ({"sequence_length": 1}, "at least 2"),
        ({"sequence_length": 0}, "greater than 0"),
        ({"vocab_size": 2}, "greater than or equal to 3"),
        ({"stride": 0}, "greater than 0"),
        ({"generate_length": 0}, "greater than 0"),
        ({"learning_rate": 0.0}, "greater than 0"),
        ({"steps_per_epoch": 0}, "greater than 0"),
        ({"prompt": "?!"}, "holds no word"),
        ({"prompt": "?!", "architecture": "lstm", "corpus": "imdb"}, None),
        ({"prompt": ""}, "at least 1 character"),
        ({"architecture": "gru"}, "'transformer' or 'lstm'"),
        ({"lstm_units": 64}, "applies to architecture 'lstm' only"),
        ({"architecture": "lstm", "num_heads": 2}, "applies to architecture 'transformer'"),
        ({"epochs": "2"}, "valid integer"),
        ({"colour": "red"}, "Extra inputs"),
    ],
)
def test_spec_rejects(tmp_path: Path, changes: dict[str, Any], message: str | None) -> None:
    corpus = write_corpus(tmp_path / "corpus", files=1, lines=5)
    values = {"corpus": str(corpus), **changes}
    if message is None:  # accepted: punctuation is text to a character-level model
        Spec.model_validate_json(json.dumps(values))
        return
    with pytest.raises(pydantic.ValidationError, match=message):
        Spec.model_validate_json(json.dumps(values))


def test_corpus_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_corpus(tmp_path / "good", files=2, lines=3)
    (good / "notes.md").write_bytes(b"\x00\x01 not read: only .txt files are")
    assert text_corpus.validate_corpus(str(good)) == str(good.resolve())
    monkeypatch.chdir(tmp_path)
    assert text_corpus.validate_corpus("good/review_0.txt") == str(good / "review_0.txt")

    (tmp_path / "empty").mkdir()
    (tmp_path / "no_text").mkdir()
    (tmp_path / "no_text" / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("  \n\n")
    (tmp_path / "blank" / "b.txt").write_text("")
    binary = write_corpus(tmp_path / "binary", files=1, lines=3)
    (binary / "data.txt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "zero.txt").write_bytes(b"")
    cases = {
        "nowhere": "neither 'imdb' nor an existing directory or text file",
        "empty": "holds no .txt files",
        "no_text": "holds no .txt files",
        "blank": "is empty: its 2 .txt files hold no text",
        "binary": "data.txt: not a text file (binary data)",
        "latin1.txt": "latin1.txt: not UTF-8 text (bad byte at offset 3)",
        "zero.txt": "is empty: the file holds no text",
    }
    for value, message in cases.items():
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            text_corpus.validate_corpus(value)

    documents = text_corpus.load_documents(str(good))
    assert len(documents) == 2 and documents[0] == corpus_text(3, seed=0)
    (good / "review_1.txt").write_text("a<br />b")
    assert text_corpus.load_documents(str(good))[1] == "a b"


def test_imdb_offline_fails_with_a_clear_code(monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    def offline(**_: Any) -> None:
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: no network")

    monkeypatch.setattr(keras.datasets.imdb, "load_data", offline)
    with pytest.raises(JobError) as error:
        text_corpus.load_documents("imdb")
    assert error.value.code == "dataset_unavailable" and "\n" not in error.value.message
    assert "imdb.npz" in error.value.message and "no network" in error.value.message


def test_words_mirror_text_vectorization() -> None:
    import keras

    text = "Hello, World! it's  a\u00a0test\u2003of «quotes» — ÉCOLE école x\ty\nz (TF)"
    vectorizer = keras.layers.TextVectorization(output_mode="int")
    vectorizer.adapt([text])
    vocabulary = vectorizer.get_vocabulary()
    expected = [vocabulary[i] for i in np.asarray(vectorizer([text])[0])]
    assert text_corpus.words(text) == expected


def test_importing_the_kinds_does_not_load_tensorflow() -> None:
    code = (
        "import sys, kinds.text_lm, kinds.text_generate, kinds.text_corpus\n"
        "loaded = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "assert not loaded, loaded"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


# --- in process ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("text") / "corpus", files=1)


@pytest.fixture(scope="module")
def cache() -> DictCache:
    return DictCache()


@pytest.fixture(scope="module")
def reference(
    corpus: Path, cache: DictCache, tmp_path_factory: pytest.TempPathFactory
) -> LocalContext:
    """An uninterrupted run of the tiny transformer."""
    ctx = LocalContext(tmp_path_factory.mktemp("reference"), cache=cache)
    run(tiny(corpus), ctx)
    return ctx


def output_bytes(ctx: LocalContext) -> dict[str, bytes]:
    return {
        f"{path.parent.name}/{path.name}": path.read_bytes()
        for path in sorted(ctx.output_dir.glob("*/*"))
        if not path.name.startswith(".")
    }


def test_run_records_samples_metrics_vocabulary_and_model(
    reference: LocalContext, cache: DictCache
) -> None:
    steps = len(reference.progress_calls)
    assert [call.step for call in reference.progress_calls] == list(range(1, steps + 1))
    assert steps % 3 == 0 and {call.total for call in reference.progress_calls} == {steps}
    assert [(e.epoch, e.step) for e in reference.metric_events] == [
        (1, steps // 3),
        (2, 2 * steps // 3),
        (3, steps),
    ]
    losses = [e.values["loss"] for e in reference.metric_events]
    assert losses[0] > losses[1] > losses[2] > 0

    names = sorted(output_bytes(reference))
    assert names == [
        "model/model.keras",
        "model/vocabulary.json",
        "sample/epoch_0001.txt",
        "sample/epoch_0002.txt",
        "sample/epoch_0003.txt",
    ]
    vocabulary = text_corpus.Vocabulary.read(reference.outputs[("model", "vocabulary.json")])
    assert vocabulary.tokens[:2] == ["", "[UNK]"] and len(vocabulary.tokens) <= 300
    assert {"the", "movie", "camera"} <= set(vocabulary.tokens)
    assert (vocabulary.level, vocabulary.window, vocabulary.prompt) == ("word", 15, "this movie")
    assert vocabulary.extra["model"]["embed_dim"] == 32

    for name in ("epoch_0001.txt", "epoch_0003.txt"):
        text = reference.outputs[("sample", name)].read_text()
        assert text.count("\n--- temperature ") == 5
        for temperature in ("0.2", "0.5", "0.7", "1", "1.5"):
            assert f"\n--- temperature {temperature}\nthis movie " in text
        tokens = sample_tokens(text, "word")
        assert len(tokens) == 5 * (2 + 12)  # prompt and 12 generated words per temperature
        assert set(tokens) <= set(vocabulary.tokens)

    import keras

    model = keras.models.load_model(reference.outputs[("model", "model.keras")])
    assert model.output_shape == (None, None, len(vocabulary.tokens))
    (key,) = [key for key in cache.entries if key[1] == "transformer"]
    models = cache.entries[key]
    assert models.tracing_count == 1 and models.sampler.tracing_count == 1
    for mine, saved in zip(models.model.get_weights(), model.get_weights(), strict=True):
        assert np.array_equal(mine, saved)


@pytest.mark.parametrize("where", ["mid-epoch", "epoch end"])
def test_stopped_run_resumes_to_identical_bytes(
    reference: LocalContext, corpus: Path, cache: DictCache, tmp_path: Path, where: str
) -> None:
    steps_per_epoch = len(reference.progress_calls) // 3
    stop_at = 7 if where == "mid-epoch" else steps_per_epoch
    first = LocalContext(tmp_path, cache=cache, stop_at=stop_at)
    with pytest.raises(StopRequested):
        run(tiny(corpus), first)
    assert first.saved_steps == [stop_at] and ("model", "model.keras") not in first.outputs

    # Mid-epoch, a fresh cache as in a new worker process; else the warm one, reset.
    resumed = LocalContext(tmp_path, cache=DictCache() if where == "mid-epoch" else cache)
    run(tiny(corpus), resumed)
    assert resumed.progress_calls[0].step == stop_at + 1
    assert resumed.metric_events[-1] == reference.metric_events[-1]
    assert output_bytes(resumed) == output_bytes(reference)


def test_crashed_run_resumes_from_its_last_checkpoint(
    reference: LocalContext, corpus: Path, cache: DictCache, tmp_path: Path
) -> None:
    crashed = LocalContext(tmp_path, cache=cache, checkpoint_every=4, crash_at=9)
    with pytest.raises(SimulatedCrash):
        run(tiny(corpus, checkpoint_every=4), crashed)
    assert crashed.saved_steps == [4, 8]
    resumed = LocalContext(tmp_path, cache=cache, checkpoint_every=4)
    run(tiny(corpus, checkpoint_every=4), resumed)
    assert resumed.progress_calls[0].step == 9
    assert output_bytes(resumed) == output_bytes(reference)


def test_changed_corpus_is_not_resumed(corpus: Path, cache: DictCache, tmp_path: Path) -> None:
    changed = write_corpus(tmp_path / "corpus", files=1)
    with pytest.raises(StopRequested):
        run(tiny(changed), LocalContext(tmp_path / "job", cache=cache, stop_at=2))
    (changed / "review_0.txt").write_text(corpus_text(40, seed=9))
    with pytest.raises(JobError) as error:
        run(tiny(changed), LocalContext(tmp_path / "job", cache=cache))
    assert error.value.code == "checkpoint_mismatch" and "did the corpus change?" in str(
        error.value
    )


def test_unknown_prompt_and_small_corpus_fail_at_run_time(
    corpus: Path, cache: DictCache, tmp_path: Path
) -> None:
    with pytest.raises(JobError) as error:
        run(tiny(corpus, prompt="zebra quokka"), LocalContext(tmp_path / "a", cache=cache))
    assert error.value.code == "prompt_unknown"
    assert error.value.message == (
        "no word of the prompt 'zebra quokka' is in the corpus' vocabulary"
    )
    with pytest.raises(JobError) as error:
        run(tiny(corpus, batch_size=4096), LocalContext(tmp_path / "b", cache=cache))
    assert error.value.code == "corpus_too_small" and "fewer than one batch (4096)" in str(
        error.value
    )


def test_non_finite_loss_fails_the_job(corpus: Path, cache: DictCache, tmp_path: Path) -> None:
    with pytest.raises(JobError) as error:
        run(tiny(corpus, learning_rate=1e30), LocalContext(tmp_path, cache=cache))
    assert error.value.code == "nan_loss" and "\n" not in error.value.message


def test_deterministic_model_file_is_reproducible(reference: LocalContext) -> None:
    with zipfile.ZipFile(io.BytesIO(reference.outputs[("model", "model.keras")].read_bytes())) as z:
        assert {info.date_time for info in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert json.loads(z.read("metadata.json"))["date_saved"] == "1980-01-01@00:00:00"


# --- end to end through a real worker --------------------------------------------------------


_EARLY: list[Future[tuple[Stack, dict[str, str]]]] = []


def _start_and_submit(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> tuple[Stack, dict[str, str]]:
    stack = text_stack(tmp_path_factory, request)
    return stack, {name: trained_job(stack, name) for name in ("transformer", "lstm")}


@pytest.fixture(scope="module", autouse=True)
def start_training_early(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[None]:
    """Start the stack and submit both trainings in the background while the in-process
    tests run, so the workers load TensorFlow and train meanwhile (the end-to-end tests
    are last in this file)."""
    if not any("through_" in item.name for item in request.session.items):
        yield
        return
    tmp_path_factory.getbasetemp()  # creates it here: pytest's first call is not thread-safe
    with ThreadPoolExecutor(max_workers=1) as pool:
        _EARLY.append(pool.submit(_start_and_submit, tmp_path_factory, request))
        yield


@pytest.fixture(scope="module")
def text_jobs(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> tuple[Stack, dict[str, str]]:
    """The stack, and both tiny models training side by side on its two workers."""
    if _EARLY:
        return _EARLY[0].result(timeout=120)
    return _start_and_submit(tmp_path_factory, request)


def test_transformer_trains_through_a_worker(text_jobs: tuple[Stack, dict]) -> None:
    stack, jobs = text_jobs
    view = finished(stack, jobs["transformer"])
    assert (view.attempts, view.progress, view.queue) == (1, 1.0, "gpu")
    samples = files_of(view, "sample")
    assert sorted(samples) == ["epoch_0001.txt", "epoch_0002.txt", "epoch_0003.txt"]
    models = files_of(view, "model")
    assert sorted(models) == ["model.keras", "vocabulary.json"]
    vocabulary = text_corpus.Vocabulary.from_json(models["vocabulary.json"].decode())
    for text in samples.values():
        assert set(sample_tokens(text.decode(), "word")) <= set(vocabulary.tokens)
    losses = epoch_losses(stack, view.id)
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2]


def test_lstm_trains_through_a_worker(text_jobs: tuple[Stack, dict]) -> None:
    stack, jobs = text_jobs
    view = finished(stack, jobs["lstm"])
    samples = files_of(view, "sample")
    assert sorted(samples) == ["epoch_0001.txt", "epoch_0002.txt"]
    vocabulary = text_corpus.Vocabulary.from_json(
        files_of(view, "model")["vocabulary.json"].decode()
    )
    assert vocabulary.level == "char" and "e" in vocabulary.tokens
    for text in samples.values():
        generated = sample_tokens(text.decode(), "char")
        assert len(generated) >= 5 * 40 and set(generated) <= set(vocabulary.tokens)
    losses = epoch_losses(stack, view.id)
    assert len(losses) == 2 and losses[1] < losses[0]


def test_killed_worker_resumes_to_the_same_bytes_through_a_worker(
    text_jobs: tuple[Stack, dict],
) -> None:
    stack, jobs = text_jobs
    reference = finished(stack, jobs["transformer"])
    spec = {**TRANSFORMER, "corpus": str(shared_corpus(stack)), "checkpoint_every": 5}
    job_id = stack.submit("text-lm", **spec)

    def training() -> bool:
        view = stack.client.get(job_id)
        return view.status == "running" and (view.step or 0) >= 12

    stack.wait_for(training, timeout=90, what="the text-lm job to reach step 12")
    running = stack.client.get(job_id)
    os.kill(running.worker_pid, signal.SIGKILL)
    view = finished(stack, job_id, timeout=120)
    assert view.attempts == 2
    assert view.resumed_from_step is not None and view.resumed_from_step >= 10
    assert view.resumed_from_step % 5 == 0
    started = [e for e in stack.client.events(job_id) if e["type"] == "started"]
    assert len(started) == 2 and started[1]["pid"] != running.worker_pid
    for role in ("sample", "model"):
        assert files_of(view, role) == files_of(reference, role), role


def test_bad_input_is_refused_at_submit_through_the_cli(
    text_jobs: tuple[Stack, dict], tmp_path: Path
) -> None:
    stack, _ = text_jobs
    good = write_corpus(tmp_path / "good", files=1, lines=5)
    (tmp_path / "empty").mkdir()
    binary = tmp_path / "weights.txt"
    binary.write_bytes(np.arange(512, dtype=np.int32).tobytes())
    before = len(stack.client.list(limit=1000))
    cases = {  # more cases in test_spec_rejects and test_corpus_checks, without the CLI
        ("--set", f"corpus={tmp_path / 'empty'}"): "field 'corpus': directory ",
        ("--set", f"corpus={binary}"): "weights.txt: not a text file (binary data)",
        ("--set", "temperatures=[0.7,0]"): "field 'temperatures.1': Input should be greater than 0",
        ("--set", "prompt=..."): "field 'prompt': holds no word",
    }

    def submit(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        corpus = () if any(a.startswith("corpus=") for a in args) else ("--set", f"corpus={good}")
        return stack.cli("submit", "text-lm", *corpus, *args)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(cases, pool.map(submit, cases), strict=True))
    for args, expected in cases.items():
        result = results[args]
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("atelier: error: text-lm: "), result.stderr
        assert expected in result.stderr, (args, result.stderr)
    assert len(stack.client.list(limit=1000)) == before
