"""The two language models of the text-lm kind. Imports Keras: loaded by `run` only.

Both map token ids (batch, time) to logits over the vocabulary; softmax is applied by
the loss and by the sampler (the reference's final softmax, moved out of the model so
temperature sampling works on logits). The custom layers are registered with Keras, so
`keras.models.load_model` reads a saved model once this module is imported.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

PACKAGE = "atelier_text"
# Layer names the sampler looks up in a trained (or loaded) model.
EMBEDDING, DECODER, ONE_HOT, RECURRENT, LOGITS = "embedding", "decoder", "one_hot", "lstm", "logits"


@keras.saving.register_keras_serializable(package=PACKAGE)
class PositionalEmbedding(layers.Layer):
    """Token embedding plus a learned embedding of the position (0 .. sequence_length-1)."""

    def __init__(self, sequence_length: int, vocab_size: int, embed_dim: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.sequence_length = sequence_length
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.token_embeddings = layers.Embedding(vocab_size, embed_dim, name="tokens")
        self.position_embeddings = layers.Embedding(sequence_length, embed_dim, name="positions")

    def build(self, input_shape: Any) -> None:
        self.token_embeddings.build(input_shape)
        self.position_embeddings.build((self.sequence_length,))
        self.built = True

    def call(self, inputs: Any) -> Any:
        positions = ops.arange(0, ops.shape(inputs)[-1])
        return self.token_embeddings(inputs) + self.position_embeddings(positions)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (*input_shape, self.embed_dim)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "sequence_length": self.sequence_length,
            "vocab_size": self.vocab_size,
            "embed_dim": self.embed_dim,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerDecoder(layers.Layer):
    """The reference's decoder block used as a language model (called with the same
    sequence as target and context): causal self-attention, causal attention over the
    embedded input, a ReLU feed-forward projection, each with a residual connection
    and layer normalization. Attention heads have key_dim = embed_dim, as there."""

    def __init__(self, embed_dim: int, latent_dim: int, num_heads: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.latent_dim = latent_dim
        self.num_heads = num_heads
        self.self_attention = layers.MultiHeadAttention(num_heads, embed_dim, name="self_attn")
        self.context_attention = layers.MultiHeadAttention(num_heads, embed_dim, name="ctx_attn")
        self.projection_in = layers.Dense(latent_dim, activation="relu", name="project_in")
        self.projection_out = layers.Dense(embed_dim, name="project_out")
        self.norms = [layers.LayerNormalization(name=f"norm_{i}") for i in (1, 2, 3)]

    def build(self, input_shape: Any) -> None:
        for attention in (self.self_attention, self.context_attention):
            attention.build(input_shape, input_shape)
            _name_sublayers(attention)
        self.projection_in.build(input_shape)
        self.projection_out.build((*input_shape[:-1], self.latent_dim))
        for norm in self.norms:
            norm.build(input_shape)
        self.built = True

    def call(self, inputs: Any) -> Any:
        attended = self.self_attention(inputs, inputs, use_causal_mask=True)
        attended = self.norms[0](inputs + attended)
        context = self.context_attention(attended, inputs, use_causal_mask=True)
        context = self.norms[1](attended + context)
        projected = self.projection_out(self.projection_in(context))
        return self.norms[2](context + projected)

    def call_at(self, inputs: Any, position: Any) -> Any:
        """`call(inputs)[:, position]`, computed for that position only: (batch, embed_dim).

        Both attentions take their keys and values from `inputs`, so the output at one
        position needs the key and value projections of the positions up to it and
        nothing else of the others. A sampler asks for one position per token.
        """
        query = ops.take(inputs, ops.reshape(position, (1,)), axis=1)  # (batch, 1, embed)
        visible = ops.arange(ops.shape(inputs)[1]) <= position
        mask = ops.broadcast_to(
            visible[None, None, :], (ops.shape(inputs)[0], 1, ops.shape(inputs)[1])
        )
        attended = self.self_attention(query, inputs, attention_mask=mask)
        attended = self.norms[0](query + attended)
        context = self.context_attention(attended, inputs, attention_mask=mask)
        context = self.norms[1](attended + context)
        projected = self.projection_out(self.projection_in(context))
        return self.norms[2](context + projected)[:, 0]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "latent_dim": self.latent_dim,
            "num_heads": self.num_heads,
        }


def _name_sublayers(layer: layers.Layer) -> None:
    """Name the layers `layer` made for itself after itself and their attribute.

    MultiHeadAttention leaves its softmax and dropout unnamed, so Keras numbers them per
    process ("softmax_3"), and the weights file records those names: the same weights
    saved by two processes would differ in bytes.
    """
    for attribute, sublayer in vars(layer).items():
        if isinstance(sublayer, layers.Layer):
            sublayer.name = f"{layer.name}{attribute}"


@keras.saving.register_keras_serializable(package=PACKAGE)
class OneHot(layers.Layer):
    """Token ids to one-hot vectors: the reference LSTM reads one-hot characters."""

    def __init__(self, depth: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.depth = depth

    def call(self, inputs: Any) -> Any:
        return ops.one_hot(ops.cast(inputs, "int32"), self.depth, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (*input_shape, self.depth)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "depth": self.depth}


def build_transformer(
    vocab_size: int, sequence_length: int, embed_dim: int, latent_dim: int, num_heads: int
) -> keras.Model:
    inputs = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = PositionalEmbedding(sequence_length, vocab_size, embed_dim, name=EMBEDDING)(inputs)
    x = TransformerDecoder(embed_dim, latent_dim, num_heads, name=DECODER)(x)
    outputs = layers.Dense(vocab_size, name=LOGITS, dtype="float32")(x)  # see kinds.precision
    return keras.Model(inputs, outputs, name="transformer_lm")


def build_lstm(vocab_size: int, units: int) -> keras.Model:
    inputs = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = OneHot(vocab_size, name=ONE_HOT)(inputs)
    x = layers.LSTM(units, name=RECURRENT)(x)
    outputs = layers.Dense(vocab_size, name=LOGITS, dtype="float32")(x)
    return keras.Model(inputs, outputs, name="lstm_lm")


def build_model(shape: dict[str, Any]) -> keras.Model:
    """A model from the shape recorded in a vocabulary file (see `model_shape`)."""
    if shape["architecture"] == "lstm":
        return build_lstm(shape["vocab_size"], shape["lstm_units"])
    return build_transformer(
        shape["vocab_size"],
        shape["sequence_length"],
        shape["embed_dim"],
        shape["latent_dim"],
        shape["num_heads"],
    )
