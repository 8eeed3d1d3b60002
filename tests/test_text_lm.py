"""The text-lm kind: spec and corpus checks, what a run records in process (LocalContext),
and training through a real worker (both architectures, bad input at submit). Resume,
crash, warm cache, non-finite loss, a worker killed mid-job, imports and bad specs:
tests/test_kind_contract.py and tests/test_kill_resume.py (the cases "text-lm-transformer"
and "text-lm-lstm" of tests/fixtures/kind_cases.py); their metrics events hold val_loss,
so they also show that a resumed run measures the held-out text as an uninterrupted one.

The trained models of the end-to-end tests (tests/fixtures/trained.py) are shared with
tests/test_text_generate.py, so each is trained once per test session.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from kinds import text_corpus
from kinds.contract import JobError
from kinds.text_lm import DEFAULT_QUEUE, Spec, run
from tests.fixtures.data import corpus_text, write_corpus
from tests.fixtures.jobs import Stacks, assert_refused_at_submit, events_of, finished, output_bytes
from tests.fixtures.kind_cases import CASES, KindCase, KindRuns, output_files
from tests.fixtures.local_context import DictCache, LocalContext, StopRequested
from tests.fixtures.stacks import Stack
from tests.fixtures.trained import text_stack, trained_job

CASE = CASES["text-lm-transformer"]
LSTM_CASE = CASES["text-lm-lstm"]


def tiny(corpus: Path, **changes: Any) -> Spec:
    return Spec(**{**CASE.values, "corpus": str(corpus), **changes})


def epoch_losses(stack: Stack, job_id: str) -> list[float]:
    by_epoch = {e["epoch"]: e["loss"] for e in events_of(stack, job_id, "metrics")}
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
    assert (spec.validation_share, spec.quality) == (0.1, True)
    for share, message in ((0.5, "less than 0.5"), (-0.1, "greater than or equal to 0")):
        with pytest.raises(ValidationError, match=message):
            Spec(corpus="imdb", validation_share=share)

    lstm = Spec(corpus="imdb", architecture="lstm")
    assert (lstm.sequence_length, lstm.stride, lstm.lstm_units, lstm.window) == (60, 3, 128, 60)
    assert (lstm.batch_size, lstm.epochs, lstm.learning_rate) == (128, 60, 1e-2)
    assert (lstm.prompt, lstm.generate_length) == (None, 400)
    assert (lstm.embed_dim, lstm.latent_dim, lstm.num_heads) == (None, None, None)
    stored = lstm.model_dump(mode="json")
    assert Spec.model_validate_json(json.dumps(stored)) == lstm  # what the worker reads back


def test_punctuation_is_a_prompt_for_the_character_model(tmp_path: Path) -> None:
    """Bad specs: tests/test_kind_contract.py. A prompt without words is one of them for
    the word-level transformer, but text to a character-level model."""
    values = {"corpus": "imdb", "architecture": "lstm", "prompt": "?!"}
    assert Spec.model_validate_json(json.dumps(values)).prompt == "?!"


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


# --- in process ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(kind_runs: KindRuns) -> Path:
    return kind_runs.inputs.corpus


@pytest.fixture(scope="module")
def reference(kind_runs: KindRuns) -> LocalContext:
    """An uninterrupted run of the tiny transformer (shared with the contract tests)."""
    return kind_runs.reference(CASE)


@pytest.fixture(scope="module")
def cache(reference: LocalContext) -> DictCache:
    """The reference run's: warm for the tests below."""
    assert isinstance(reference.cache, DictCache)
    return reference.cache


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

    names = sorted(output_files(reference))
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


def test_deterministic_model_file_is_reproducible(reference: LocalContext) -> None:
    with zipfile.ZipFile(io.BytesIO(reference.outputs[("model", "model.keras")].read_bytes())) as z:
        assert {info.date_time for info in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert json.loads(z.read("metadata.json"))["date_saved"] == "1980-01-01@00:00:00"


# --- held-out text and its metrics ---------------------------------------------------------


@pytest.mark.parametrize("case", [CASE, LSTM_CASE], ids=str)
def test_val_loss_and_perplexity_every_epoch(kind_runs: KindRuns, case: KindCase) -> None:
    ctx = kind_runs.reference(case)
    vocabulary = text_corpus.Vocabulary.read(ctx.outputs[("model", "vocabulary.json")])
    assert [e.epoch for e in ctx.metric_events] == list(range(1, case.values["epochs"] + 1))
    losses = [e.values["val_loss"] for e in ctx.metric_events]
    for event in ctx.metric_events:
        assert set(event.values) == {"loss", "val_loss", "val_perplexity"}
        assert math.isclose(event.values["val_perplexity"], math.exp(event.values["val_loss"]))
    # Below a uniform guess's ln(vocabulary) after an epoch, and falling: the case's corpus
    # is sentences drawn from a few word lists, so its held-out end is learnable.
    assert math.log(len(vocabulary.tokens)) > losses[0] > losses[-1] > 0
    assert losses == sorted(losses, reverse=True)
    (models,) = ctx.cache.entries.values()
    assert models.loss_sums.experimental_get_tracing_count() == 1  # for every batch, epoch


@pytest.mark.parametrize("case", [CASE, LSTM_CASE], ids=str)
def test_untrained_val_loss_is_about_ln_vocabulary(kind_runs: KindRuns, case: KindCase) -> None:
    import tensorflow as tf

    from kinds.text_lm.train import TextLmModels, prepare_corpus

    spec = case.spec(kind_runs.inputs)
    prepared = prepare_corpus(spec, text_corpus.load_documents(spec.corpus), None)
    size = len(prepared.vocabulary.tokens)
    models = TextLmModels(spec, size)
    models.start_job(spec)
    held = prepared.held_out
    assert held is not None and len(held.rows) == held.available > 0
    loss = models.held_out_loss(tf.convert_to_tensor(held.data), held.rows, spec.batch_size)
    # Small random logits: a near-uniform guess (the transformer's spread a little more).
    assert math.log(size) - 0.1 < loss < math.log(size) + 0.6
    assert kind_runs.reference(case).metric_events[0].values["val_loss"] < loss


def test_transformer_holds_out_whole_documents(tmp_path: Path) -> None:
    from kinds.text_lm.train import prepare_corpus, split_documents

    documents = [f"{corpus_text(12, seed=i)}marker{i} ends here\n" for i in range(10)]
    training, held = split_documents(documents, 0.1)
    assert len(held) == 1 and sorted(training + held) == sorted(documents)
    assert split_documents(documents[::-1], 0.1)[1] == held  # by text, not by position
    assert set(held) < set(split_documents(documents, 0.3)[1])
    copies = [*documents, held[0]]  # a copy goes with its original
    assert split_documents(copies, 0.1)[1] == [held[0], held[0]]

    corpus = write_corpus(tmp_path / "corpus", files=1)
    spec = tiny(corpus)
    prepared = prepare_corpus(spec, documents, None)
    vocabulary = prepared.vocabulary
    markers = {f"marker{i}" for i in range(10)}
    (unknown,) = markers - set(vocabulary.tokens)  # adapted on the training documents only
    assert unknown in held[0]
    # The held-out rows are exactly the held-out document's pieces, its marker unknown.
    assert prepared.held_out is not None
    pieces = prepared.held_out.data
    ids = np.concatenate([*(piece[: spec.stride] for piece in pieces[:-1]), pieces[-1]])
    assert ids[ids > 0].tolist() == vocabulary.encode(held[0])
    assert vocabulary.encode(unknown) == [1]
    # And the training rows are the training documents' pieces, nothing more.
    alone = prepare_corpus(tiny(corpus, validation_share=0.0), training, vocabulary.tokens)
    assert np.array_equal(prepared.data, alone.data) and prepared.count == alone.count
    assert prepare_corpus(tiny(corpus, seed=99), documents, None).vocabulary == vocabulary


def test_one_document_holds_out_its_end(corpus: Path) -> None:
    from kinds.text_lm.train import split_documents

    (document,) = text_corpus.load_documents(str(corpus))
    (head,), (tail,) = split_documents([document], 0.1)
    assert head + tail == document and 0.09 < len(tail) / len(document) < 0.11
    assert text_corpus.words(head) + text_corpus.words(tail) == text_corpus.words(document)
    assert split_documents([document], 0.0) == ([document], [])


def test_lstm_holds_out_the_end_of_its_stream(tmp_path: Path) -> None:
    from kinds.text_lm.train import MAX_VALIDATION_ROWS, prepare_corpus

    documents = [corpus_text(500, seed=1), corpus_text(500, seed=2) + "§"]  # § only at the end
    corpus = write_corpus(tmp_path / "corpus", files=1)
    spec = Spec(**{**LSTM_CASE.values, "corpus": str(corpus), "stride": 1})
    prepared = prepare_corpus(spec, documents, None)
    vocabulary, held = prepared.vocabulary, prepared.held_out
    assert held is not None and "§" not in vocabulary.tokens
    stream = "\n".join(documents)
    assert 0.099 < len(held.data) / len(stream) <= 0.1
    assert np.concatenate([prepared.data, held.data]).tolist() == vocabulary.encode(stream)
    assert held.data[-1] == 1  # unknown
    # No training window reaches the held-out end; held-out windows stay inside it.
    assert (prepared.count - 1) * spec.stride + spec.window == len(prepared.data) - 1
    assert held.available == len(held.data) - spec.window > MAX_VALIDATION_ROWS["lstm"]
    rows = held.rows  # capped, evenly spread
    assert len(rows) == MAX_VALIDATION_ROWS["lstm"] and rows[0] == 0
    assert np.all(np.diff(rows) > 0) and rows[-1] + spec.window < len(held.data)
    assert rows[-1] > 0.99 * held.available


def test_no_share_or_quality_off_measure_nothing(
    corpus: Path, cache: DictCache, tmp_path: Path
) -> None:
    runs = {}
    variants = {"on": {}, "off": {"quality": False}, "none": {"validation_share": 0}}
    for name, changes in variants.items():
        ctx = LocalContext(tmp_path / name, cache=cache)
        run(tiny(corpus, epochs=1, steps_per_epoch=3, **changes), ctx)
        (event,) = ctx.metric_events
        runs[name] = event.values
    assert set(runs["on"]) == {"loss", "val_loss", "val_perplexity"}
    assert set(runs["off"]) == set(runs["none"]) == {"loss"}
    assert runs["off"]["loss"] == runs["on"]["loss"]  # the same training rows
    assert runs["none"]["loss"] != runs["on"]["loss"]  # all of the text


def test_checkpoint_of_another_share_is_refused(
    corpus: Path, cache: DictCache, tmp_path: Path
) -> None:
    with pytest.raises(StopRequested):
        run(tiny(corpus), LocalContext(tmp_path, cache=cache, stop_at=2))
    with pytest.raises(JobError) as error:
        run(tiny(corpus, validation_share=0.2), LocalContext(tmp_path, cache=cache))
    assert error.value.code == "checkpoint_mismatch"
    assert "validation_share 0.1)" in error.value.message
    assert "validation_share 0.2:" in error.value.message


def test_corpus_too_small_to_hold_out_a_sequence(corpus: Path, tmp_path: Path) -> None:
    from kinds.text_lm.train import prepare_corpus

    values = {**LSTM_CASE.values, "corpus": str(corpus), "validation_share": 0.01}
    values["sequence_length"] = 60  # 1 % of 4 KB is under a window and its target
    spec = Spec(**values)
    with pytest.raises(JobError) as error:
        run(spec, LocalContext(tmp_path))
    assert error.value.code == "corpus_too_small" and "\n" not in error.value.message
    assert error.value.message == (
        f"corpus {str(corpus)!r} gives no held-out sequence at validation_share 0.01 (one "
        "needs 61 characters): give a larger corpus or validation_share, or validation_share=0"
    )
    off = Spec(**values, quality=False)
    assert prepare_corpus(off, text_corpus.load_documents(str(corpus)), None).held_out is None


# --- end to end through a real worker --------------------------------------------------------


_EARLY: list[Future[tuple[Stack, dict[str, str]]]] = []


def _start_and_submit(stacks: Stacks) -> tuple[Stack, dict[str, str]]:
    stack = text_stack(stacks)
    return stack, {name: trained_job(stack, name) for name in ("transformer", "lstm")}


@pytest.fixture(scope="module", autouse=True)
def start_training_early(request: pytest.FixtureRequest, stacks: Stacks) -> Iterator[None]:
    """Start the stack and submit both trainings in the background while the in-process
    tests run, so the workers train meanwhile (the end-to-end tests are last in this
    file)."""
    if not any("through_" in item.name for item in request.session.items):
        yield
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        _EARLY.append(pool.submit(_start_and_submit, stacks))
        yield


@pytest.fixture(scope="module")
def text_jobs(stacks: Stacks) -> tuple[Stack, dict[str, str]]:
    """The stack, and both tiny models training side by side on its two workers."""
    if _EARLY:
        return _EARLY[0].result(timeout=120)
    return _start_and_submit(stacks)


def test_transformer_trains_through_a_worker(text_jobs: tuple[Stack, dict]) -> None:
    stack, jobs = text_jobs
    view = finished(stack, jobs["transformer"])
    assert (view.attempts, view.progress, view.queue) == (1, 1.0, "gpu")
    samples = output_bytes(view, "sample")
    assert sorted(samples) == ["epoch_0001.txt", "epoch_0002.txt", "epoch_0003.txt"]
    models = output_bytes(view, "model")
    assert sorted(models) == ["model.keras", "vocabulary.json"]
    vocabulary = text_corpus.Vocabulary.from_json(models["vocabulary.json"].decode())
    for text in samples.values():
        assert set(sample_tokens(text.decode(), "word")) <= set(vocabulary.tokens)
    losses = epoch_losses(stack, view.id)
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2]


def test_lstm_trains_through_a_worker(text_jobs: tuple[Stack, dict]) -> None:
    stack, jobs = text_jobs
    view = finished(stack, jobs["lstm"])
    samples = output_bytes(view, "sample")
    assert sorted(samples) == ["epoch_0001.txt", "epoch_0002.txt"]
    vocabulary = text_corpus.Vocabulary.from_json(
        output_bytes(view, "model")["vocabulary.json"].decode()
    )
    assert vocabulary.level == "char" and "e" in vocabulary.tokens
    for text in samples.values():
        generated = sample_tokens(text.decode(), "char")
        assert len(generated) >= 5 * 40 and set(generated) <= set(vocabulary.tokens)
    losses = epoch_losses(stack, view.id)
    assert len(losses) == 2 and losses[1] < losses[0]


def test_bad_input_is_refused_at_submit_through_the_cli(
    text_jobs: tuple[Stack, dict], tmp_path: Path
) -> None:
    stack, _ = text_jobs
    good = write_corpus(tmp_path / "good", files=1, lines=5)
    (tmp_path / "empty").mkdir()
    binary = tmp_path / "weights.txt"
    binary.write_bytes(np.arange(512, dtype=np.int32).tobytes())
    corpus = f"corpus={good}"
    cases = {  # more cases in tests/test_kind_contract.py and test_corpus_checks, no CLI
        (f"corpus={tmp_path / 'empty'}",): "field 'corpus': directory ",
        (f"corpus={binary}",): "weights.txt: not a text file (binary data)",
        (corpus, "temperatures=[0.7,0]"): "field 'temperatures.1': Input should be greater than 0",
        (corpus, "prompt=..."): "field 'prompt': holds no word",
    }
    assert_refused_at_submit(stack, "text-lm", cases)
