"""Training loop of the text-lm kind. Imports TensorFlow: loaded by `run` only.

Data. Transformer: TextVectorization is adapted on the documents (its vocabulary is
sorted by count, ties by token, so it is the same in every run), each document becomes
token ids, and pieces of `sequence_length` tokens taken every `stride` tokens are the
training rows (inputs: all but the last token; targets: all but the first; padding
targets do not count in the loss). LSTM: the lowercased documents joined by newlines
are one stream of character ids; a row is `sequence_length` characters and the next
one, taken every `stride` characters (the reference's maxlen 60, step 3).

Reproducibility as in the dcgan kind: weights are drawn per variable from
(seed, index), each epoch's data order from (seed, epoch), each epoch's samples from
stateless noise keyed by (seed, epoch); the checkpoint holds all weights, RMSprop's
slots and iteration count, the counters, and the vocabulary. A run resumed from any
checkpoint repeats the uninterrupted run exactly when op determinism is on.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import math

import keras
import numpy as np
import tensorflow as tf

from kinds import keras_state, precision
from kinds.contract import Checkpoint, JobContext, JobError
from kinds.reproducibility import configure_randomness, save_model
from kinds.text_corpus import (
    CHARACTER,
    PADDING,
    UNKNOWN,
    WORD,
    Vocabulary,
    load_documents,
)
from kinds.text_lm import LSTM, MODEL_FILE, TRANSFORMER, VOCABULARY_FILE, Spec
from kinds.text_lm.model import build_model
from kinds.text_lm.sampling import Sampler

# Second seed component of each use of the job seed, so no two uses share numbers.
MODEL_INIT, DATA_ORDER, PROMPT_CHOICE = 1, 2, 3
SEED_MODULUS = 2**63  # stateless random keys are int64
ADAPT_BATCH = 512  # documents per TextVectorization call


def model_shape(spec: Spec, vocab_size: int) -> dict[str, object]:
    """What `build_model` needs; recorded in the vocabulary file for text-generate."""
    if spec.architecture == LSTM:
        return {"architecture": LSTM, "vocab_size": vocab_size, "lstm_units": spec.lstm_units}
    return {
        "architecture": TRANSFORMER,
        "vocab_size": vocab_size,
        "sequence_length": spec.sequence_length,
        "embed_dim": spec.embed_dim,
        "latent_dim": spec.latent_dim,
        "num_heads": spec.num_heads,
    }


def cache_key(spec: Spec, vocab_size: int) -> tuple[object, ...]:
    return ("text-lm", *model_shape(spec, vocab_size).values(), spec.mixed_precision)


class TextLmModels:
    """Per-process cache entry for one architecture and shape: the model, its RMSprop,
    the compiled train step and the compiled sampler. Jobs reuse it through
    `start_job`, which resets all state.

    `builds` (class-wide) counts entries built in this process, `jobs` the jobs that
    used this entry, `tracing_count` the traces of the train step.
    """

    builds = 0

    def __init__(self, spec: Spec, vocab_size: int) -> None:
        self.architecture = spec.architecture
        with precision.compute_policy(spec.mixed_precision):
            self.model = build_model(model_shape(spec, vocab_size))
        if spec.architecture == LSTM:
            rows = tf.TensorSpec([None], tf.int32)  # the character stream
        else:
            rows = tf.TensorSpec([None, None], tf.int32)  # the padded pieces
        self.optimizer = precision.optimizer(keras.optimizers.RMSprop(), spec.mixed_precision)
        self.optimizer.build(self.model.trainable_variables)
        self.state = keras_state.TrainingState(
            models={"model": self.model},
            optimizers={"optimizer": (self.optimizer, self.model.trainable_variables)},
        )
        self.window = tf.Variable(spec.window, trainable=False, name="window", dtype=tf.int32)
        # A fixed signature: one trace per entry, whatever the job's data or seed.
        signature = [rows, tf.TensorSpec([None], tf.int32)]  # all rows, this batch's rows
        self.train_step = tf.function(self._train_step, input_signature=signature, autograph=False)
        self.sampler = Sampler(self.model, spec.window)
        self.jobs = 0
        TextLmModels.builds += 1

    @property
    def tracing_count(self) -> int:
        return self.train_step.experimental_get_tracing_count()

    def start_job(self, spec: Spec) -> None:
        """Reset everything to the state a fresh build would have for this spec."""
        keras_state.reinitialize(self.model, (spec.seed, MODEL_INIT))
        keras_state.reset_optimizer(self.optimizer, spec.learning_rate)
        self.window.assign(spec.window)
        self.jobs += 1

    def _train_step(self, data: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
        """One RMSprop update on the batch of `rows`; returns its mean loss."""
        if self.architecture == LSTM:
            offsets = tf.range(self.window + 1)
            batch = tf.gather(data, rows[:, tf.newaxis] + offsets[tf.newaxis])
            inputs, targets = batch[:, :-1], batch[:, -1]
            weights = tf.ones_like(targets, tf.float32)
        else:
            batch = tf.gather(data, rows)
            inputs, targets = batch[:, :-1], batch[:, 1:]
            weights = tf.cast(targets != 0, tf.float32)  # padding after a document's end
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(inputs, training=True)
            losses = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
            loss = tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
            scaled = self.optimizer.scale_loss(loss)  # see kinds.precision
        # Embedding gradients come as IndexedSlices with repeated rows, which Keras'
        # RMSprop squares per repeat instead of after summing; dense is the exact update.
        gradients = [tf.convert_to_tensor(g) for g in tape.gradient(scaled, variables)]
        self.optimizer.apply(gradients, variables)
        return loss


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The training data: the vocabulary, the rows (transformer: padded pieces, one
    per row; lstm: the character stream, rows being start offsets) and a digest."""

    vocabulary: Vocabulary
    data: np.ndarray
    rows: int
    digest: str


@dataclasses.dataclass
class Position:
    """Where training stands: `step` steps of `epoch` are done (epochs count from 1)."""

    epoch: int = 1
    step: int = 0
    global_step: int = 0
    loss_sum: float = 0.0  # over the finished steps of this epoch


def train(spec: Spec, ctx: JobContext) -> None:
    configure_randomness(spec.seed, spec.deterministic)
    documents = load_documents(spec.corpus)
    checkpoint = ctx.restore()
    tokens = list(checkpoint.meta["vocabulary"]) if checkpoint else None
    corpus = prepare_corpus(spec, documents, tokens)
    del documents
    vocabulary = corpus.vocabulary
    prompt = vocabulary.encode(vocabulary.prompt)
    if not any(token > 1 for token in prompt):
        raise JobError(
            "prompt_unknown",
            f"no {spec.token_name} of the prompt {vocabulary.prompt!r} is in the corpus' "
            "vocabulary",
        )
    ctx.save_output(
        "model",
        VOCABULARY_FILE,
        vocabulary.to_json().encode(),
        step=checkpoint.step if checkpoint else 0,
    )
    size = len(vocabulary.tokens)
    models = ctx.cache.get_or_build(cache_key(spec, size), lambda: TextLmModels(spec, size))
    models.start_job(spec)
    _Trainer(spec, ctx, models, corpus, prompt).run(checkpoint)


def prepare_corpus(spec: Spec, documents: list[str], tokens: list[str] | None) -> Corpus:
    """Vocabulary (adapted, or `tokens` from a checkpoint) and training rows."""
    if spec.architecture == LSTM:
        text = "\n".join(documents).lower()
        if tokens is None:
            counts = collections.Counter(text)
            ranked = sorted(counts, key=lambda char: (-counts[char], char))
            tokens = [PADDING, UNKNOWN, *ranked[: spec.vocab_size - 2]]
        index = {char: i for i, char in enumerate(tokens)}
        data = np.fromiter((index.get(char, 1) for char in text), np.int32, len(text))
        rows = max(0, math.ceil((len(data) - spec.window) / spec.stride))
        prompt = spec.prompt or _passage(text, spec)
        level = CHARACTER
    else:
        vectorizer = keras.layers.TextVectorization(
            max_tokens=spec.vocab_size,
            output_mode="int",
            ragged=True,
            vocabulary=tokens,
        )
        batches = tf.data.Dataset.from_tensor_slices(documents).batch(ADAPT_BATCH)
        if tokens is None:
            vectorizer.adapt(batches)
            tokens = [str(token) for token in vectorizer.get_vocabulary()]
        pieces = [
            _pieces(ids, spec.sequence_length, spec.stride)
            for batch in batches
            for ids in vectorizer(batch).numpy()
        ]
        data = np.concatenate(pieces) if pieces else np.zeros((0, spec.sequence_length), np.int32)
        rows = len(data)
        prompt = spec.prompt
        level = WORD
    vocabulary = Vocabulary(
        level=level,
        architecture=spec.architecture,
        tokens=list(tokens),
        window=spec.window,
        prompt=prompt,
        extra={"model": model_shape(spec, len(tokens))},
    )
    digest = hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()
    return Corpus(vocabulary, np.ascontiguousarray(data, np.int32), rows, digest)


def _pieces(ids: np.ndarray, length: int, stride: int) -> np.ndarray:
    """Pieces of `length` ids starting every `stride` ids, zero-padded at the end; a piece
    needs two ids (an input and its target)."""
    count = max(0, math.ceil((len(ids) - 1) / stride))
    padded = np.zeros(count * stride + length, np.int32)
    padded[: len(ids)] = ids
    starts = np.arange(count) * stride
    return padded[starts[:, np.newaxis] + np.arange(length)[np.newaxis]]


def _passage(text: str, spec: Spec) -> str:
    """The LSTM's default prompt: `sequence_length` characters of the corpus chosen by the
    seed (the reference starts from a random passage)."""
    rng = np.random.default_rng([spec.seed, PROMPT_CHOICE])
    start = int(rng.integers(0, max(1, len(text) - spec.window)))
    return text[start : start + spec.window]


class _Trainer:
    def __init__(
        self, spec: Spec, ctx: JobContext, models: TextLmModels, corpus: Corpus, prompt: list[int]
    ) -> None:
        self.spec, self.ctx, self.models, self.corpus = spec, ctx, models, corpus
        self.steps = steps_per_epoch(spec, corpus.rows)
        self.total = spec.epochs * self.steps
        self.data = tf.convert_to_tensor(corpus.data)
        self.prompt = prompt
        self.seed = spec.seed % SEED_MODULUS

    def run(self, checkpoint: Checkpoint | None) -> None:
        position = self._resume(checkpoint)
        while position.epoch <= self.spec.epochs:
            order = epoch_order(self.spec, position.epoch, self.corpus.rows)
            while position.step < self.steps:
                self._step(position, order)
            position = Position(epoch=position.epoch + 1, global_step=position.global_step)
        self.ctx.save_output(
            "model",
            MODEL_FILE,
            functools.partial(save_model, self.models.model),
            epoch=self.spec.epochs,
            step=position.global_step,
        )

    def _step(self, position: Position, order: np.ndarray) -> None:
        batch = self.spec.batch_size
        rows = order[position.step * batch : (position.step + 1) * batch]
        loss = float(self.models.train_step(self.data, rows).numpy())
        if not math.isfinite(loss):
            raise JobError(
                "nan_loss",
                f"loss is not finite at epoch {position.epoch}, step {position.global_step + 1} "
                f"(loss={loss}); try a lower learning_rate",
            )
        position.step += 1
        position.global_step += 1
        position.loss_sum += loss
        self.ctx.progress(
            position.global_step, self.total, epoch=position.epoch, metrics={"loss": loss}
        )
        if position.step == self.steps:
            self._finish_epoch(position)
        self.ctx.boundary(position.global_step, self._snapshotter(position))

    def _finish_epoch(self, position: Position) -> None:
        epoch, step = position.epoch, position.global_step
        self.ctx.metrics({"loss": position.loss_sum / self.steps}, step=step, epoch=epoch)
        text = self.samples(epoch)
        self.ctx.save_output(
            "sample",
            f"epoch_{epoch:04d}.txt",
            text.encode(),
            epoch=epoch,
            step=step,
        )

    def samples(self, epoch: int) -> str:
        """The prompt continued at every temperature, keyed by (seed, epoch)."""
        spec, vocabulary = self.spec, self.corpus.vocabulary
        tokens = self.models.sampler.generate(
            self.prompt, spec.generate_length, spec.temperatures, (self.seed, epoch)
        )
        return format_samples(
            vocabulary, vocabulary.prompt, spec.temperatures, tokens, f"epoch {epoch}"
        )

    def _snapshotter(self, position: Position) -> functools.partial[Checkpoint]:
        # A finished epoch is saved as the start of the next one.
        if position.step == self.steps:
            position = Position(epoch=position.epoch + 1, global_step=position.global_step)
        return functools.partial(self._snapshot, dataclasses.replace(position))

    def _snapshot(self, position: Position) -> Checkpoint:
        meta = {
            "epoch": position.epoch,
            "step_in_epoch": position.step,
            "global_step": position.global_step,
            "loss_sum": position.loss_sum,
            "steps_per_epoch": self.steps,
            "rows": self.corpus.rows,
            "data_sha256": self.corpus.digest,
            "vocabulary": self.corpus.vocabulary.tokens,
        }
        return Checkpoint(step=position.global_step, arrays=self.models.state.arrays(), meta=meta)

    def _resume(self, checkpoint: Checkpoint | None) -> Position:
        if checkpoint is None:
            return Position()
        meta = checkpoint.meta
        if meta.get("data_sha256") != self.corpus.digest or meta.get("steps_per_epoch") != (
            self.steps
        ):
            raise JobError(
                "checkpoint_mismatch",
                f"checkpoint was taken on other training data ({meta.get('rows')} rows, "
                f"{meta.get('steps_per_epoch')} steps per epoch; the corpus now gives "
                f"{self.corpus.rows} and {self.steps}): did the corpus change?",
            )
        try:
            self.models.state.load(dict(checkpoint.arrays))
        except keras_state.StateMismatch as exc:
            raise JobError("checkpoint_mismatch", f"cannot resume: {exc}") from None
        return Position(
            epoch=int(meta["epoch"]),
            step=int(meta["step_in_epoch"]),
            global_step=int(meta["global_step"]),
            loss_sum=float(meta["loss_sum"]),
        )


def format_samples(
    vocabulary: Vocabulary,
    prompt: str,
    temperatures: list[float],
    tokens: np.ndarray,
    heading: str,
) -> str:
    """A readable text: a heading, then per temperature the prompt and its continuation."""
    separator = " " if vocabulary.level == WORD else ""
    parts = [f"{heading}; prompt: {prompt!r}; {tokens.shape[1]} {vocabulary.level} tokens"]
    for temperature, row in zip(temperatures, tokens, strict=True):
        continuation = vocabulary.decode(row)
        parts.append(f"\n--- temperature {temperature:g}\n{prompt}{separator}{continuation}")
    return "\n".join(parts) + "\n"


def steps_per_epoch(spec: Spec, rows: int) -> int:
    """Full batches per epoch (a last partial batch is dropped), capped by the spec."""
    steps = rows // spec.batch_size
    if steps == 0:
        raise JobError(
            "corpus_too_small",
            f"corpus {spec.corpus!r} gives {rows} training sequences of {spec.sequence_length} "
            f"{spec.token_name}s, fewer than one batch ({spec.batch_size})",
        )
    return min(steps, spec.steps_per_epoch or steps)


def epoch_order(spec: Spec, epoch: int, rows: int) -> np.ndarray:
    """The shuffled rows of one epoch, a function of (seed, epoch) only. LSTM rows are
    start offsets into the character stream."""
    rng = np.random.default_rng([spec.seed, DATA_ORDER, epoch])
    order = rng.permutation(rows).astype(np.int32)
    return order * spec.stride if spec.architecture == LSTM else order
