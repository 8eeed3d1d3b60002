"""Training loop of the text-lm kind. Imports TensorFlow: loaded by `run` only.

Data. Transformer: TextVectorization is adapted on the documents (its vocabulary is
sorted by count, ties by token, so it is the same in every run), each document becomes
token ids, and pieces of `sequence_length` tokens taken every `stride` tokens are the
training rows (inputs: all but the last token; targets: all but the first; padding
targets do not count in the loss). LSTM: the lowercased documents joined by newlines
are one stream of character ids; a row is `sequence_length` characters and the next
one, taken every `stride` characters (the reference's maxlen 60, step 3).

Held-out text (`validation_share`): the transformer holds out whole documents (those
whose text hashes lowest, so the seed does not move them; every copy of a text goes the
same way), or the end of each document when the corpus has fewer than 1/share of them
(one text file); the LSTM holds out the end of its stream. The vocabulary is adapted on
the training text only, and no training row reads held-out text. `val_loss` is the
training loss (padding targets do not count) over at most MAX_VALIDATION_ROWS held-out
rows, evenly spaced, in inference mode: the same weights give the same value, so a
resumed run records what an uninterrupted one does.

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
import re
from collections.abc import Mapping

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
MAX_VALIDATION_ROWS = {TRANSFORMER: 256, LSTM: 1024}
"""Held-out rows evaluated per `val_loss`: pieces (a transformer's reference piece holds 99
targets, so about 25000 words) or windows (one target character each). At the reference
sizes an evaluation costs under 1 % of an epoch (README)."""
MAX_LOG_PERPLEXITY = 700.0  # exp() of more overflows a float
_SPACE = re.compile(r"[ \t\n\v\f\r]")  # what TextVectorization splits words on
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
        # Traced per op-determinism setting, as the train step (kinds.training_models).
        self._trace_evaluator = lambda: tf.function(
            self._loss_sums,
            input_signature=[rows, tf.TensorSpec([None], tf.int32)],
            autograph=False,
        )
        self._evaluators: dict[bool, tf.types.experimental.PolymorphicFunction] = {}
        self.loss_sums = self._evaluator_for(spec.deterministic)

    def configure(self, spec: Spec) -> None:
        self.window.assign(spec.window)
        self.loss_sums = self._evaluator_for(spec.deterministic)

    def _evaluator_for(self, deterministic: bool) -> tf.types.experimental.PolymorphicFunction:
        if deterministic not in self._evaluators:
            self._evaluators[deterministic] = self._trace_evaluator()
        return self._evaluators[deterministic]

    def held_out_loss(self, data: tf.Tensor, rows: np.ndarray, batch_size: int) -> float:
        """The mean loss per target over `rows` of `data`, in batches of `batch_size`."""
        total = np.zeros(2)
        for start in range(0, len(rows), batch_size):
            total += self.loss_sums(data, rows[start : start + batch_size]).numpy()
        return float(total[0] / max(total[1], 1.0))

    def _batch(self, data: tf.Tensor, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Inputs, targets and target weights of `rows` (padding targets weigh 0)."""
        if self.architecture == LSTM:
            offsets = tf.range(self.window + 1)
            inputs_and_targets = tf.gather(data, rows[:, tf.newaxis] + offsets[tf.newaxis])
            inputs, targets = inputs_and_targets[:, :-1], inputs_and_targets[:, -1]
            return inputs, targets, tf.ones_like(targets, tf.float32)
        pieces = tf.gather(data, rows)
        inputs, targets = pieces[:, :-1], pieces[:, 1:]
        return inputs, targets, tf.cast(targets != 0, tf.float32)  # after a document's end

    def _losses(self, inputs: tf.Tensor, targets: tf.Tensor, training: bool) -> tf.Tensor:
        logits = self.model(inputs, training=training)
        return keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)

    def _loss_sums(self, data: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
        """[sum of the weighted losses, sum of the weights] of `rows`, in inference mode."""
        inputs, targets, weights = self._batch(data, rows)
        losses = self._losses(inputs, targets, training=False)
        return tf.stack([tf.reduce_sum(losses * weights), tf.reduce_sum(weights)])

    def _train_step(self, data: tf.Tensor, *batch: tf.Tensor) -> tf.Tensor:
        """One RMSprop update on the batch of `rows`; returns [its mean loss]."""
        rows, _ = batch
        inputs, targets, weights = self._batch(data, rows)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            losses = self._losses(inputs, targets, training=True)
            loss = tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
            scaled = self.optimizer.scale_loss(loss)  # see kinds.precision
        # Embedding gradients come as IndexedSlices with repeated rows, which Keras'
        # RMSprop squares per repeat instead of after summing; dense is the exact update.
        gradients = [tf.convert_to_tensor(g) for g in tape.gradient(scaled, variables)]
        self.optimizer.apply(gradients, variables)
        return tf.reshape(loss, [1])


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """The held-out rows `val_loss` is measured on, as the train step reads rows: `data`
    (transformer: the chosen pieces; lstm: the held-out stream) and `rows` (indices;
    start offsets), of the `available` rows the held-out text gives."""

    data: np.ndarray
    rows: np.ndarray
    available: int


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The training data: the vocabulary, the data (transformer: padded pieces, one per
    row; lstm: the character stream, rows being start offsets), its rows and a digest;
    the held-out rows (None when nothing is measured)."""

    vocabulary: Vocabulary
    data: np.ndarray
    count: int
    digest: str
    held_out: HeldOut | None = None

    def rows(self, spec: Spec) -> TrainingRows:
        return TrainingRows(
            count=self.count,
            source="corpus",
            describe=f"corpus {spec.corpus!r} gives {self.count} training sequences of "
            f"{spec.sequence_length} {spec.token_name}s",
            too_small="corpus_too_small",
            identity={
                "rows": self.count,
                "data_sha256": self.digest,
                "validation_share": spec.validation_share,
            },
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
    held = corpus.held_out
    if held is not None and held.available == 0:
        needs = 2 if spec.architecture == TRANSFORMER else spec.window + 1
        raise JobError(
            "corpus_too_small",
            f"corpus {spec.corpus!r} gives no held-out sequence at validation_share "
            f"{spec.validation_share} (one needs {needs} {spec.token_name}s): give a larger "
            "corpus or validation_share, or validation_share=0",
        )
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

    evaluate = None
    if held is not None:
        held_data = tf.convert_to_tensor(held.data)

        def evaluate() -> Mapping[str, float]:
            loss = models.held_out_loss(held_data, held.rows, spec.batch_size)
            if not loss <= MAX_LOG_PERPLEXITY:  # NaN too
                message = f"val_loss is {loss:.6g} on the held-out text; try a lower learning_rate"
                raise JobError("nan_loss", message)
            return {"val_loss": loss, "val_perplexity": math.exp(loss)}

    loop = EpochLoop(
        spec, ctx, rows=corpus.rows(spec), metrics=("loss",), train_step=train_step,
        state=models.state, end_epoch=save_samples, evaluate=evaluate,
    )  # fmt: skip
    last_step = loop.run(checkpoint)
    save_models(ctx, {MODEL_NAME: models.model}, epoch=spec.epochs, step=last_step)


def prepare_corpus(spec: Spec, documents: list[str], tokens: list[str] | None) -> Corpus:
    """Vocabulary (adapted on the training text, or `tokens` from a checkpoint), training
    rows and, unless nothing is measured (`quality` off or no share), the held-out rows."""
    measure = spec.quality and spec.validation_share > 0
    held: HeldOut | None = None
    if spec.architecture == LSTM:
        stream = "\n".join(documents).lower()
        cut = len(stream) - _share(len(stream), spec.validation_share)
        text, tail = stream[:cut], stream[cut:]
        if tokens is None:
            counts = collections.Counter(text)
            ranked = sorted(counts, key=lambda char: (-counts[char], char))
            tokens = [PADDING, UNKNOWN, *ranked[: spec.vocab_size - 2]]
        index = {char: i for i, char in enumerate(tokens)}
        data = _characters(text, index)
        rows = _windows(len(data), spec)
        if measure:
            available = _windows(len(tail), spec)
            offsets = _spaced(available, MAX_VALIDATION_ROWS[LSTM]) * spec.stride
            held = HeldOut(_characters(tail, index), offsets, available)
        prompt = spec.prompt or _passage(text, spec)
        level = CHARACTER
    else:
        training, held_texts = split_documents(documents, spec.validation_share)
        vectorizer = keras.layers.TextVectorization(
            max_tokens=spec.vocab_size,
            output_mode="int",
            ragged=True,
            vocabulary=tokens,
        )
        if tokens is None:
            vectorizer.adapt(_batches(training))
            tokens = [str(token) for token in vectorizer.get_vocabulary()]
        data = _vectorized(vectorizer, training, spec)
        rows = len(data)
        if measure:
            pieces = _vectorized(vectorizer, held_texts, spec)
            chosen = pieces[_spaced(len(pieces), MAX_VALIDATION_ROWS[TRANSFORMER])]
            held = HeldOut(chosen, np.arange(len(chosen), dtype=np.int32), len(pieces))
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
    return Corpus(vocabulary, np.ascontiguousarray(data, np.int32), rows, digest, held)


def split_documents(documents: list[str], share: float) -> tuple[list[str], list[str]]:
    """The transformer's training and held-out texts (see the module's docstring).

    By the hash of a text, not by the seed: a sweep over seeds measures every job on the
    same text, and adding a document to a corpus moves no other one. A text held out
    keeps every copy of itself out, but never the larger part of the corpus."""
    if share == 0:
        return documents, []
    count = _share(len(documents), share)
    if count == 0:
        cuts = [_cut(document, share) for document in documents]
        pairs = list(zip(documents, cuts, strict=True))
        return [text[:cut] for text, cut in pairs], [
            text[cut:] for text, cut in pairs if text[cut:]
        ]
    digests = [hashlib.sha256(document.encode()).digest() for document in documents]
    copies = collections.Counter(digests)
    held: set[bytes] = set()
    taken = 0
    for digest in sorted(copies):
        if taken >= count:
            break
        if taken + copies[digest] <= len(documents) // 2:
            held.add(digest)
            taken += copies[digest]
    hashed = list(zip(documents, digests, strict=True))
    return [text for text, d in hashed if d not in held], [text for text, d in hashed if d in held]


def _share(count: int, share: float) -> int:
    """`share` of `count` things, rounded down (0.1 of 10 is 1, not 0 by rounding error)."""
    return math.floor(count * share + 1e-9)


def _cut(document: str, share: float) -> int:
    """Where the held-out end of a document starts: about `share` of its characters, at a
    space, so that no word is cut in two (len(document): nothing held out)."""
    start = len(document) - _share(len(document), share)
    space = _SPACE.search(document, max(start - 1, 0))
    return space.start() if space else len(document)


def _spaced(available: int, cap: int) -> np.ndarray:
    """min(available, cap) indices evenly spread over range(available)."""
    count = min(available, cap)
    return (np.arange(count, dtype=np.int64) * available // max(count, 1)).astype(np.int32)


def _characters(text: str, index: dict[str, int]) -> np.ndarray:
    return np.fromiter((index.get(char, 1) for char in text), np.int32, len(text))


def _windows(length: int, spec: Spec) -> int:
    """LSTM rows of a stream of `length` characters: windows and their next character."""
    return max(0, math.ceil((length - spec.window) / spec.stride))


def _batches(texts: list[str]) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string)).batch(ADAPT_BATCH)


def _vectorized(
    vectorizer: keras.layers.TextVectorization, texts: list[str], spec: Spec
) -> np.ndarray:
    """The pieces of every text, in order."""
    pieces = [
        _pieces(ids, spec.sequence_length, spec.stride)
        for batch in (_batches(texts) if texts else [])
        for ids in vectorizer(batch).numpy()
    ]
    return np.concatenate(pieces) if pieces else np.zeros((0, spec.sequence_length), np.int32)


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
