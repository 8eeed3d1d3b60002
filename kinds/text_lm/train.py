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
import hashlib
import math

import keras
import numpy as np
import tensorflow as tf

from kinds.contract import JobContext, JobError
from kinds.reproducibility import configure_randomness
from kinds.seeds import SEED_MODULUS, Stream
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
from kinds.training import EpochLoop, TrainingRows, save_models, save_sample, steps_per_epoch
from kinds.training_models import OptimizerPlan, TrainingModels

ADAPT_BATCH = 512  # documents per TextVectorization call
PROMPT_WORDS = 4  # of the transformer's default prompt off imdb
MODEL_NAME = MODEL_FILE.removesuffix(".keras")


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


class TextLmModels(TrainingModels):
    """The model of one architecture and shape, its RMSprop, the compiled train step and
    the compiled sampler (text-generate's, see kinds.text_lm.sampling)."""

    def __init__(self, spec: Spec, vocab_size: int) -> None:
        if spec.architecture == LSTM:
            rows = tf.TensorSpec([None], tf.int32)  # the character stream
        else:
            rows = tf.TensorSpec([None, None], tf.int32)  # the padded pieces
        self.architecture = spec.architecture
        super().__init__(
            networks={"model": lambda: build_model(model_shape(spec, vocab_size))},
            optimizers={"optimizer": OptimizerPlan(keras.optimizers.RMSprop, ("model",))},
            # all rows, this batch's rows, the random key (unused: no random op)
            signature=[rows, tf.TensorSpec([None], tf.int32), tf.TensorSpec([2], tf.int64)],
            mixed=spec.mixed_precision,
            autograph=False,
        )
        self.model = self.networks["model"]
        self.optimizer = self.optimizers["optimizer"]
        self.window = tf.Variable(spec.window, trainable=False, name="window", dtype=tf.int32)
        self.sampler = Sampler(self.model, spec.window)

    def configure(self, spec: Spec) -> None:
        self.window.assign(spec.window)

    def _train_step(self, data: tf.Tensor, *batch: tf.Tensor) -> tf.Tensor:
        """One RMSprop update on the batch of `rows`; returns [its mean loss]."""
        rows, _ = batch
        if self.architecture == LSTM:
            offsets = tf.range(self.window + 1)
            inputs_and_targets = tf.gather(data, rows[:, tf.newaxis] + offsets[tf.newaxis])
            inputs, targets = inputs_and_targets[:, :-1], inputs_and_targets[:, -1]
            weights = tf.ones_like(targets, tf.float32)
        else:
            pieces = tf.gather(data, rows)
            inputs, targets = pieces[:, :-1], pieces[:, 1:]
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
        return tf.reshape(loss, [1])


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The training data: the vocabulary, the data (transformer: padded pieces, one per
    row; lstm: the character stream, rows being start offsets), its rows and a digest."""

    vocabulary: Vocabulary
    data: np.ndarray
    count: int
    digest: str

    def rows(self, spec: Spec) -> TrainingRows:
        return TrainingRows(
            count=self.count,
            source="corpus",
            describe=f"corpus {spec.corpus!r} gives {self.count} training sequences of "
            f"{spec.sequence_length} {spec.token_name}s",
            too_small="corpus_too_small",
            identity={"rows": self.count, "data_sha256": self.digest},
            extra={"vocabulary": self.vocabulary.tokens},
            stride=spec.stride if spec.architecture == LSTM else 1,
        )


def train(spec: Spec, ctx: JobContext) -> None:
    configure_randomness(spec.seed, spec.deterministic)
    documents = load_documents(spec.corpus)
    checkpoint = ctx.restore()
    tokens = list(checkpoint.meta["vocabulary"]) if checkpoint else None
    corpus = prepare_corpus(spec, documents, tokens)
    del documents
    steps_per_epoch(spec, corpus.rows(spec))  # a corpus too small for one batch fails first
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
    data = tf.convert_to_tensor(corpus.data)
    seed = spec.seed % SEED_MODULUS

    def train_step(rows: np.ndarray, key: np.ndarray) -> list[float]:
        return models.train_step(data, rows, key).numpy().tolist()

    def save_samples(epoch: int, step: int) -> None:
        """The prompt continued at every temperature, keyed by (seed, epoch)."""
        tokens = models.sampler.generate(
            prompt, spec.generate_length, spec.temperatures, (seed, epoch)
        )
        text = format_samples(
            vocabulary, vocabulary.prompt, spec.temperatures, tokens, f"epoch {epoch}"
        )
        save_sample(ctx, text.encode(), epoch=epoch, step=step, suffix=".txt")

    loop = EpochLoop(
        spec, ctx, rows=corpus.rows(spec), metrics=("loss",), train_step=train_step,
        state=models.state, end_epoch=save_samples,
    )  # fmt: skip
    last_step = loop.run(checkpoint)
    save_models(ctx, {MODEL_NAME: models.model}, epoch=spec.epochs, step=last_step)


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
        prompt = spec.prompt or _word_passage(data, tokens, spec)
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


def _word_passage(pieces: np.ndarray, tokens: list[str], spec: Spec) -> str:
    """The transformer's default prompt off imdb: the first PROMPT_WORDS kept words of a
    training piece chosen by the seed (words the vocabulary holds, so the prompt is known)."""
    if len(pieces) == 0:
        return ""  # no training rows: the job fails as corpus_too_small
    rng = np.random.default_rng([spec.seed, Stream.SAMPLES])
    piece = pieces[int(rng.integers(0, len(pieces)))]
    kept = [tokens[i] for i in piece if i > 1]
    return " ".join(kept[:PROMPT_WORDS])


def _passage(text: str, spec: Spec) -> str:
    """The LSTM's default prompt: `sequence_length` characters of the corpus chosen by the
    seed (the reference starts from a random passage)."""
    rng = np.random.default_rng([spec.seed, Stream.SAMPLES])
    start = int(rng.integers(0, max(1, len(text) - spec.window)))
    return text[start : start + spec.window]


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
