"""Text kinds against plain Keras, in one process, interleaved repeats, medians.

    python bench/bench_text.py [--repeats 5] [--tokens 20] [--steps 40] [--quick] [--json FILE]

Jobs run through the worker runtime in this process (bench/harness.py LocalRuntime:
claim, lease heartbeat, the real RunContext, outputs recorded in a temporary SQLite
database).

1. text-generate tokens/s: text-generate jobs against the reference's sampler (code
   12-7: per token, vectorize the sentence, one `predict` of the whole sequence, sample
   in numpy), both on the model a text-lm job of the reference's sizes (vocabulary
   15000, sequence 100, embedding 256, feed-forward 2048, 2 heads) trained for one step
   on a synthetic corpus (speed does not depend on the weights) and wrote as its outputs;
   5 temperatures. The job is timed from its claim to its last output; the first job
   (build, load weights, trace) is reported apart. Target >= 10x.
2. text-lm steps/s: text-lm jobs (progress, metrics, per-epoch samples, checkpoints)
   against `model.fit` of the same model on the same rows (a shuffled, batched, repeated
   tf.data pipeline, as the reference feeds fit), batch size, optimizer and loss
   (padding targets weighted 0, as the kind does). Steps 2..N (harness.Window), so the
   one-time trace of either is left out. Target >= 0.95x.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import harness
import keras
import numpy as np
import tensorflow as tf

from kinds.text_corpus import Vocabulary, load_documents
from kinds.text_lm import Spec
from kinds.text_lm.model import build_model
from kinds.text_lm.train import prepare_corpus

REFERENCE_SHAPE = {"vocab_size": 15000, "sequence_length": 100, "embed_dim": 256,
                   "latent_dim": 2048, "num_heads": 2}  # fmt: skip
QUICK_SHAPE = {"vocab_size": 500, "sequence_length": 20, "embed_dim": 32, "latent_dim": 64,
               "num_heads": 2}  # fmt: skip
TEMPERATURES = [0.2, 0.5, 0.7, 1.0, 1.5]
PROMPT = "w5 w6"
# Training benchmark: smaller than the reference so a run takes seconds on 2 cores.
LM_SPEC: dict[str, Any] = dict(
    architecture="transformer", vocab_size=2000, sequence_length=64, embed_dim=128,
    latent_dim=512, num_heads=2, batch_size=32, epochs=2, generate_length=20,
    prompt="w1 w2", checkpoint_every=40,
    quality=False,  # model.fit measures no held-out loss (bench_watching.py measures its cost)
)  # fmt: skip


def write_corpus(folder: Path, words: int, documents: int, length: int = 250) -> str:
    """`documents` of `length` words `w0`..: each of the `words` once, the rest Zipf-drawn."""
    folder.mkdir(parents=True)
    rng = random.Random(0)
    vocabulary = [f"w{i}" for i in range(words)]
    zipf = [1 / rank for rank in range(1, words + 1)]
    text = vocabulary + rng.choices(vocabulary, zipf, k=max(documents * length - words, 0))
    rng.shuffle(text)
    for index in range(0, len(text), length):
        (folder / f"doc_{index // length:04d}.txt").write_text(
            " ".join(text[index : index + length])
        )
    return str(folder)


# --- 1. generation ------------------------------------------------------------------------


def trained_model(runtime: harness.LocalRuntime, shape: dict[str, Any]) -> harness.Run:
    """A transformer text-lm job of `shape`, one training step; its model outputs stay."""
    corpus = write_corpus(runtime.home / "lm-corpus", shape["vocab_size"] + 1000, 80)
    spec = {**shape, "architecture": "transformer", "corpus": corpus, "epochs": 1,
            "steps_per_epoch": 1, "batch_size": 8, "prompt": PROMPT, "generate_length": 1,
            "temperatures": [1.0]}  # fmt: skip
    return runtime.run("text-lm", spec, keep_outputs=True)


def reference_model(run: harness.Run) -> tuple[keras.Model, Vocabulary]:
    """The text-lm job's model (its saved weights) and vocabulary, for the reference's loop."""
    files = {saved.name: saved.path for saved in run.ctx.saved if saved.role == "model"}
    vocabulary = Vocabulary.read(files["vocabulary.json"])
    model = build_model(dict(vocabulary.extra["model"]))
    model.load_weights(files["model.keras"])
    return model, vocabulary


def atelier_generate(runtime: harness.LocalRuntime, model_job: str, length: int) -> float:
    spec = {"model": model_job, "length": length, "temperatures": TEMPERATURES}
    ctx = runtime.run("text-generate", spec).ctx
    return length * len(TEMPERATURES) / (ctx.saved[-1].end - ctx.created)


def reference_generate(model: Any, vocabulary: Vocabulary, length: int, seed: int = 0) -> float:
    """The reference's callback (code 12-7), reading the prediction at the last word."""
    tokens = vocabulary.tokens
    vectorizer = keras.layers.TextVectorization(
        output_mode="int", output_sequence_length=vocabulary.window, vocabulary=tokens
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


def generation(runtime: harness.LocalRuntime, args: Any, report: harness.Report) -> None:
    run = trained_model(runtime, QUICK_SHAPE if args.quick else REFERENCE_SHAPE)
    model, vocabulary = reference_model(run)
    shape = vocabulary.extra["model"]  # as trained: the vocabulary the corpus gave
    print(f"1. text-generate, {json.dumps(shape)}; {len(TEMPERATURES)} x {args.tokens} tokens")
    began = time.perf_counter()
    atelier_generate(runtime, run.job_id, 2)  # the first job builds, loads weights, traces
    first = time.perf_counter() - began
    rates = harness.interleave(
        {"atelier": lambda: atelier_generate(runtime, run.job_id, args.tokens),
         "reference": lambda: reference_generate(model, vocabulary, args.tokens)},
        args.repeats,
        warmup={"reference": lambda: reference_generate(model, vocabulary, 2)},
        describe=lambda tokens_per_s: f"{tokens_per_s:.1f} tokens/s",
    )  # fmt: skip
    report.ratio(
        "generate_tokens_per_s_ratio", rates["atelier"], rates["reference"],
        arm="atelier text-generate job", baseline="reference sampler (one predict per token)",
        target=">= 10", shape=shape, tokens=args.tokens, temperatures=len(TEMPERATURES),
    )  # fmt: skip
    what = "the first text-generate job here (after the text-lm job that made its model)"
    report.figure("generate_first_job_s", first, "s", what=what + ": build, load, trace")


# --- 2. training --------------------------------------------------------------------------


def plain_fit(spec: Spec, rows: np.ndarray, shape: dict[str, Any], steps: int) -> harness.Window:
    keras.utils.set_random_seed(spec.seed)
    model = build_model(shape)
    model.compile(
        optimizer=keras.optimizers.RMSprop(spec.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    inputs, targets = rows[:, :-1], rows[:, 1:]
    weights = (targets != 0).astype(np.float32)  # padding targets do not count, as in Atelier
    batches = (
        tf.data.Dataset.from_tensor_slices((inputs, targets, weights))
        .shuffle(len(rows), seed=spec.seed)
        .batch(spec.batch_size, drop_remainder=True)
        .repeat()
        .prefetch(2)
    )
    clock = harness.FitClock()
    model.fit(
        batches, epochs=spec.epochs, steps_per_epoch=steps,
        shuffle=False, verbose=0, callbacks=[clock.callback()],  # the pipeline shuffles
    )  # fmt: skip
    return clock.window(spec.epochs * steps)


def training(runtime: harness.LocalRuntime, args: Any, report: harness.Report) -> None:
    corpus = write_corpus(runtime.home / "corpus", 4000, 400)
    values = {**LM_SPEC, "corpus": corpus, "steps_per_epoch": args.steps}
    spec = Spec.model_validate(values)
    prepared = prepare_corpus(spec, load_documents(corpus), None)  # the rows the job trains on
    shape = dict(prepared.vocabulary.extra["model"])
    steps = min(args.steps, len(prepared.data) // spec.batch_size)  # the job's cap does so
    print(f"2. text-lm training, {len(prepared.data)} rows, {steps} steps per epoch")
    print(f"  {json.dumps({k: v for k, v in LM_SPEC.items() if k != 'prompt'})}")
    windows = harness.interleave(
        {"atelier": lambda: runtime.run("text-lm", values).ctx.window(),
         "fit": lambda: plain_fit(spec, prepared.data, shape, steps)},
        args.repeats,
        describe=lambda window: f"{window.steady_rate:.2f} steps/s (steps 2..{window.steps})",
    )  # fmt: skip
    report.ratio(
        "lm_train_steps_per_s_ratio", [w.steady_rate for w in windows["atelier"]],
        [w.steady_rate for w in windows["fit"]], arm="atelier", baseline="model.fit",
        target=">= 0.95", what="steady steps/s, steps 2..N", vocabulary=shape["vocab_size"],
    )  # fmt: skip


def main() -> None:
    parser = harness.parser(__doc__, repeats=5)
    parser.add_argument("--tokens", type=int, default=20, help="tokens per temperature")
    parser.add_argument("--steps", type=int, default=40, help="training steps per epoch")
    parser.add_argument("--parts", nargs="*", default=["generate", "train"],
                        choices=["generate", "train"])  # fmt: skip
    args = harness.parse(parser, quick={"repeats": 1, "tokens": 3, "steps": 3})
    report = harness.Report("text", args)
    with harness.LocalRuntime("atelier-bench-text-") as runtime:
        if "generate" in args.parts:
            generation(runtime, args, report)
        if "train" in args.parts:
            training(runtime, args, report)


if __name__ == "__main__":
    main()
