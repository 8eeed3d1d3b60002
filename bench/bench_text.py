"""Text kinds against plain Keras, in one process, interleaved repeats, medians.

    python bench/bench_text.py [--repeats 5] [--tokens 20] [--steps 40]

1. text-generate tokens/s: the kind's `run` (through a RunContext on a temporary
   SQLite database, reading the model output of a text-lm job recorded there) against
   the reference's sampler (code 12-7: per token, vectorize the sentence, one `predict`
   of the whole sequence, sample in numpy), on a Transformer of the reference's sizes
   (vocabulary 15000, sequence 100, embedding 256, feed-forward 2048, 2 heads; random
   weights: speed does not depend on them), 5 temperatures. Target >= 10x.
2. text-lm steps/s: the kind's training loop through a RunContext (progress,
   metrics, per-epoch samples, checkpoints, all recorded in the database) against
   `model.fit` of the same model on the same rows (a shuffled, batched, repeated
   tf.data pipeline, as the reference feeds fit), batch size, optimizer and loss.
   Steps/s is measured from the end of the first step to the end of the last, so the
   one-time trace of either is left out. Target >= 0.95x.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from core.settings import Settings, load_settings  # noqa: E402
from db import jobs  # noqa: E402
from db.engine import session_factory  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.models import JobStatus  # noqa: E402
from worker.model_cache import ProcessModelCache  # noqa: E402
from worker.run_context import RunContext  # noqa: E402

REFERENCE_SHAPE = {
    "architecture": "transformer",
    "vocab_size": 15000,
    "sequence_length": 100,
    "embed_dim": 256,
    "latent_dim": 2048,
    "num_heads": 2,
}
TEMPERATURES = [0.2, 0.5, 0.7, 1.0, 1.5]
PROMPT = "w5 w6"
# Training benchmark: smaller than the reference so a run takes seconds on 2 cores.
LM_SPEC: dict[str, Any] = dict(
    architecture="transformer",
    vocab_size=2000,
    sequence_length=64,
    embed_dim=128,
    latent_dim=512,
    num_heads=2,
    batch_size=32,
    epochs=2,
    generate_length=20,
    prompt="w1 w2",
    checkpoint_every=40,
)


class Platform:
    """A temporary ATELIER_HOME with a migrated SQLite database; jobs claimed as a
    worker would, each run through a real RunContext."""

    def __init__(self, home: Path) -> None:
        self.settings: Settings = load_settings({"ATELIER_HOME": str(home)})
        upgrade(self.settings.database_url)
        self.sessions = session_factory(self.settings.database_url)
        self.cache = ProcessModelCache()

    def context(self, kind: str, spec: dict[str, Any], cls: type = RunContext) -> Any:
        with self.sessions.begin() as session:
            job_id = jobs.create_job(session, kind=kind, spec=spec, queue="gpu").id
            jobs.mark_queued(session, job_id)
            claim = jobs.claim(session, job_id, "bench", os.getpid(), 3600)
        assert claim is not None
        return cls(claim, self.settings, self.sessions, self.cache)


class TimedContext(RunContext):
    """Records when each step was reported."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.step_times: list[float] = []

    def progress(self, step: int, total: int, **kwargs: Any) -> None:
        super().progress(step, total, **kwargs)
        self.step_times.append(time.perf_counter())


class StepTimes(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.times.append(time.perf_counter())


def steady_rate(times: list[float]) -> float:
    """Steps per second from the end of the first step to the end of the last."""
    return (len(times) - 1) / (times[-1] - times[0])


# --- 1. generation ------------------------------------------------------------------------


def publish_model(platform: Platform) -> tuple[str, Any, list[str]]:
    """A text-lm job whose model outputs (reference sizes, random weights) are recorded."""
    from kinds.reproducibility import save_model
    from kinds.text_corpus import PADDING, UNKNOWN, WORD, Vocabulary
    from kinds.text_lm.model import build_model

    keras.utils.set_random_seed(0)
    model = build_model(REFERENCE_SHAPE)
    tokens = [PADDING, UNKNOWN] + [f"w{i}" for i in range(2, REFERENCE_SHAPE["vocab_size"])]
    window = REFERENCE_SHAPE["sequence_length"] - 1
    vocabulary = Vocabulary(WORD, "transformer", tokens, window, PROMPT, {"model": REFERENCE_SHAPE})
    ctx = platform.context("text-lm", {})
    ctx.save_output("model", "vocabulary.json", vocabulary.to_json().encode())
    ctx.save_output("model", "model.keras", lambda p: save_model(model, p))
    with platform.sessions.begin() as session:
        jobs.finish(session, ctx.job_id, ctx.token, JobStatus.SUCCEEDED)
    return ctx.job_id, model, tokens


def atelier_generate(platform: Platform, model_job: str, length: int) -> float:
    from kinds.text_generate import Spec, run

    spec = {"model": model_job, "length": length, "temperatures": TEMPERATURES}
    ctx = platform.context("text-generate", spec)
    began = time.perf_counter()
    run(Spec.model_validate(spec), ctx)
    return length * len(TEMPERATURES) / (time.perf_counter() - began)


def reference_generate(model: Any, tokens: list[str], length: int, seed: int) -> float:
    """The reference's callback (code 12-7), reading the prediction at the last word."""
    vectorizer = keras.layers.TextVectorization(
        output_mode="int",
        output_sequence_length=REFERENCE_SHAPE["sequence_length"] - 1,
        vocabulary=tokens,
    )
    rng = np.random.default_rng(seed)
    began = time.perf_counter()
    for temperature in TEMPERATURES:
        sentence = PROMPT
        for _ in range(length):
            tokenized = vectorizer([sentence])
            logits = model.predict(tokenized, verbose=0)
            position = min(len(sentence.split()), tokenized.shape[1]) - 1
            predictions = np.exp(logits[0, position] - logits[0, position].max())
            predictions = np.log(predictions / predictions.sum()) / temperature
            predictions = np.exp(predictions) / np.sum(np.exp(predictions))
            next_token = int(np.argmax(rng.multinomial(1, predictions, 1)))
            sentence += " " + tokens[next_token]
    return length * len(TEMPERATURES) / (time.perf_counter() - began)


# --- 2. training --------------------------------------------------------------------------


def write_corpus(folder: Path, documents: int = 400, words: int = 250) -> Path:
    """Documents of Zipf-distributed words over a 4000-word vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    weights = [1 / rank for rank in range(1, 4001)]
    vocabulary = [f"w{i}" for i in range(4000)]
    for index in range(documents):
        text = " ".join(rng.choices(vocabulary, weights, k=words))
        (folder / f"doc_{index:04d}.txt").write_text(text)
    return folder


def atelier_train(platform: Platform, spec: dict[str, Any]) -> tuple[float, int]:
    from kinds.text_lm import Spec, run

    valid = Spec.model_validate(spec)
    ctx = platform.context("text-lm", valid.model_dump(mode="json"), TimedContext)
    run(valid, ctx)
    return steady_rate(ctx.step_times), len(ctx.step_times)


def plain_fit(
    spec: dict[str, Any], rows: np.ndarray, vocab_size: int, seed: int
) -> tuple[float, int]:
    from kinds.text_lm import Spec
    from kinds.text_lm.model import build_model
    from kinds.text_lm.train import model_shape

    valid = Spec.model_validate(spec)
    keras.utils.set_random_seed(seed)
    model = build_model(model_shape(valid, vocab_size))
    model.compile(
        optimizer=keras.optimizers.RMSprop(valid.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    inputs, targets = rows[:, :-1], rows[:, 1:]
    weights = (targets != 0).astype(np.float32)  # padding targets do not count, as in Atelier
    batches = (
        tf.data.Dataset.from_tensor_slices((inputs, targets, weights))
        .shuffle(len(rows), seed=seed)
        .batch(valid.batch_size, drop_remainder=True)
        .repeat()
        .prefetch(2)
    )
    timer = StepTimes()
    model.fit(
        batches,
        epochs=valid.epochs,
        steps_per_epoch=valid.steps_per_epoch,
        shuffle=False,  # the pipeline shuffles
        verbose=0,
        callbacks=[timer],
    )
    return steady_rate(timer.times), len(timer.times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=20, help="tokens per temperature")
    parser.add_argument("--steps", type=int, default=40, help="training steps per epoch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="atelier-bench-text-") as home:
        measure(args, Path(home))


def measure(args: argparse.Namespace, home: Path) -> None:
    from kinds.text_corpus import load_documents
    from kinds.text_lm import Spec
    from kinds.text_lm.train import prepare_corpus

    platform = Platform(home)

    # 1. generation
    model_job, model, tokens = publish_model(platform)
    began = time.perf_counter()
    atelier_generate(platform, model_job, 2)  # cold: builds the model and traces the sampler
    cold = time.perf_counter() - began
    reference_generate(model, tokens, 2, seed=0)  # warm predict
    generated: dict[str, list[float]] = {"atelier": [], "reference": []}
    for repeat in range(args.repeats):
        generated["reference"].append(reference_generate(model, tokens, args.tokens, repeat))
        generated["atelier"].append(atelier_generate(platform, model_job, args.tokens))

    shape = ", ".join(f"{k}={v}" for k, v in REFERENCE_SHAPE.items() if k != "architecture")
    print(f"1. text-generate, {shape}; {len(TEMPERATURES)} temperatures x {args.tokens} tokens")
    a = report("atelier job (warm worker)", generated["atelier"], "tokens/s")
    r = report("reference predict-per-token", generated["reference"], "tokens/s")
    print(f"  ratio                          {a / r:8.1f}x  (target >= 10x)")
    print(f"  first job on a cold worker: {cold:.1f} s (build, load weights, trace; 10 tokens)")

    # 2. training
    spec = {**LM_SPEC, "corpus": str(write_corpus(home / "corpus")), "steps_per_epoch": args.steps}
    valid = Spec.model_validate(spec)
    corpus = prepare_corpus(valid, load_documents(valid.corpus), None)
    vocab_size = len(corpus.vocabulary.tokens)
    trained: dict[str, list[float]] = {"atelier": [], "fit": []}
    steps = 0
    for repeat in range(args.repeats):
        rate, steps = atelier_train(platform, spec)
        trained["atelier"].append(rate)
        trained["fit"].append(plain_fit(spec, corpus.data, vocab_size, repeat)[0])

    sizes = {k: v for k, v in LM_SPEC.items() if k not in ("architecture", "prompt")}
    print(f"2. text-lm training, {vocab_size} tokens, {corpus.rows} rows, {steps} steps per run")
    print(f"  {json.dumps(sizes)}")
    a = report("atelier job (RunContext)", trained["atelier"], "steps/s")
    f = report("plain model.fit", trained["fit"], "steps/s")
    print(f"  ratio                          {a / f:8.2f}x  (target >= 0.95x)")


def report(what: str, values: list[float], unit: str) -> float:
    median = statistics.median(values)
    runs = ", ".join(f"{value:.2f}" for value in values)
    print(f"  {what:<30} {median:8.2f} {unit} (runs: {runs})")
    return median


if __name__ == "__main__":
    main()
