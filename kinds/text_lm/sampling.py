"""Temperature sampling from a text-lm model, compiled: one call generates every token.

`Sampler.generate` is one tf.function with a fixed signature (one trace per sampler):
a tf.while_loop produces all tokens on the device, for all temperatures at once (one
row per temperature), with no Python round trip per token.

- Transformer: the rows hold a window of the model's input length; the prompt is
  written left-aligned and each new token goes into the next free position, then,
  once the window is full, the window slides by one. Every step embeds the fixed-shape
  window and computes the decoder block and the output layer at the last filled
  position only (`TransformerDecoder.call_at`: attention keys and values of the window,
  everything else for one position; later positions are masked out).
- LSTM: the prompt is fed once through the LSTM cell; each new token then advances the
  carried state by one step instead of re-reading the sequence.

Sampling is the reference's reweighting (log-probabilities divided by the temperature)
done as Gumbel-max on logits / temperature, with stateless noise keyed by (key, step):
the same key always gives the same text. Token 0 (padding) is never drawn, nor, for the
character-level LSTM, token 1 ([UNK] is no character; words may be [UNK], as in the
reference).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kinds.text_lm.model import DECODER, EMBEDDING, LOGITS, ONE_HOT, RECURRENT

SIGNATURE = (
    tf.TensorSpec([None], tf.int32),  # prompt token ids (at least one)
    tf.TensorSpec([], tf.int32),  # tokens to generate
    tf.TensorSpec([None], tf.float32),  # temperatures, one row each
    tf.TensorSpec([2], tf.int64),  # random key
)
TINY = float(np.finfo(np.float32).tiny)


class Sampler:
    def __init__(self, model: keras.Model, window: int) -> None:
        self.window = window
        self.logits = model.get_layer(LOGITS)
        recurrent = any(layer.name == RECURRENT for layer in model.layers)
        self.first_token = 2 if recurrent else 1  # ids below it are never drawn
        if recurrent:
            self.one_hot = model.get_layer(ONE_HOT)
            self.cell = model.get_layer(RECURRENT).cell
            body = self._generate_lstm
        else:
            self.embedding = model.get_layer(EMBEDDING)
            self.decoder = model.get_layer(DECODER)
            body = self._generate_transformer
        self._generate = tf.function(body, input_signature=SIGNATURE, autograph=False)

    @property
    def tracing_count(self) -> int:
        return self._generate.experimental_get_tracing_count()

    def generate(
        self, prompt: list[int], steps: int, temperatures: list[float], key: tuple[int, int]
    ) -> np.ndarray:
        """Token ids (len(temperatures), steps) continuing `prompt` at each temperature."""
        if not prompt:
            raise ValueError("the prompt needs at least one token")
        tokens = self._generate(
            np.asarray(prompt, np.int32),
            np.int32(steps),
            np.asarray(temperatures, np.float32),
            np.asarray(key, np.int64),
        )
        return tokens.numpy()

    def _generate_transformer(
        self, prompt: tf.Tensor, steps: tf.Tensor, temperatures: tf.Tensor, key: tf.Tensor
    ) -> tf.Tensor:
        window = self.window
        rows = tf.shape(temperatures)[0]
        prompt = prompt[-window:]
        filled = tf.shape(prompt)[0]
        start = tf.pad(prompt, [[0, window - filled]])
        tokens = tf.tile(start[tf.newaxis], [rows, 1])
        positions = tf.range(window)[tf.newaxis]

        def step(i, tokens, filled, out):  # type: ignore[no-untyped-def]
            last = self.decoder.call_at(self.embedding(tokens), filled - 1)
            token = sample(self.logits(last), temperatures, fold(key, i), self.first_token)
            slid = tf.concat([tokens[:, 1:], token[:, tf.newaxis]], axis=1)
            written = tf.where(positions == filled, token[:, tf.newaxis], tokens)
            tokens = tf.cond(filled < window, lambda: written, lambda: slid)
            return i + 1, tokens, tf.minimum(filled + 1, window), out.write(i, token)

        out = tf.TensorArray(tf.int32, size=steps)
        _, _, _, out = tf.while_loop(
            lambda i, *_: i < steps, step, [tf.constant(0), tokens, filled, out]
        )
        return tf.transpose(out.stack(), [1, 0])

    def _generate_lstm(
        self, prompt: tf.Tensor, steps: tf.Tensor, temperatures: tf.Tensor, key: tf.Tensor
    ) -> tf.Tensor:
        rows = tf.shape(temperatures)[0]
        zeros = tf.zeros([rows, self.cell.units], self.cell.compute_dtype)

        def advance(token, h, c):  # type: ignore[no-untyped-def]
            output, (h, c) = self.cell(self.one_hot(token), [h, c], training=False)
            return output, h, c

        def feed(j, output, h, c):  # type: ignore[no-untyped-def]
            return j + 1, *advance(tf.fill([rows], prompt[j]), h, c)

        _, output, h, c = tf.while_loop(
            lambda j, *_: j < tf.shape(prompt)[0], feed, [tf.constant(0), zeros, zeros, zeros]
        )

        def step(i, output, h, c, out):  # type: ignore[no-untyped-def]
            token = sample(self.logits(output), temperatures, fold(key, i), self.first_token)
            return i + 1, *advance(token, h, c), out.write(i, token)

        out = tf.TensorArray(tf.int32, size=steps)
        *_, out = tf.while_loop(lambda i, *_: i < steps, step, [tf.constant(0), output, h, c, out])
        return tf.transpose(out.stack(), [1, 0])


def fold(key: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(key, tf.cast(step, tf.int64))


def sample(
    logits: tf.Tensor, temperatures: tf.Tensor, key: tf.Tensor, first_token: int = 1
) -> tf.Tensor:
    """One token id per row: a draw from softmax(logits / temperature) over the ids from
    `first_token` on."""
    scaled = tf.cast(logits, tf.float32) / temperatures[:, tf.newaxis]
    allowed = tf.range(tf.shape(scaled)[1]) >= first_token
    scaled = tf.where(allowed[tf.newaxis], scaled, -np.inf)
    uniform = tf.random.stateless_uniform(tf.shape(scaled), seed=key, minval=TINY, maxval=1.0)
    return tf.argmax(scaled - tf.math.log(-tf.math.log(uniform)), axis=1, output_type=tf.int32)
