"""`text-lm` job kind: a language model trained on a text corpus.

Two architectures, each with its reference's hyperparameters as defaults:

- `transformer` (the default): the word-level model of "Deep Learning with Python" 12.1.
  TextVectorization (15000 tokens, sequences of 100), a positional embedding (256), one
  Transformer decoder block (causal self-attention, 2 heads, feed-forward width 2048)
  and a softmax over the vocabulary, RMSprop, 10 epochs of batches of 256.
- `lstm`: the character-level model of its 8.1: windows of 60 characters taken every
  3 characters, one LSTM(128) and a softmax over the characters, RMSprop at 0.01,
  batches of 128, 60 epochs.

After every epoch the model continues a prompt at several temperatures
(sample/epoch_NNNN.txt); the vocabulary is saved at the start (model/vocabulary.json)
and the trained model at the end (model/model.keras).

A `validation_share` of the corpus is held out of training (and of the vocabulary): the
metrics `val_loss` (the training loss, on at most a few hundred held-out rows) and
`val_perplexity` (its exp) tell how well the model predicts text it has never seen, so
jobs of one corpus and share compare by them. The split ignores the seed, so a sweep
over seeds measures every job on the same held-out text.

Importing this module is cheap: TensorFlow is loaded by `run` only.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from kinds.contract import JobContext, Submission
from kinds.fields import count_field
from kinds.paths import shown
from kinds.text_corpus import (
    CHARACTER,
    IMDB,
    WORD,
    characters,
    submit_vocabulary,
    validate_corpus,
    words,
)
from kinds.training_spec import TrainingSpec

DEFAULT_QUEUE = "gpu"

TRANSFORMER: Final = "transformer"
IMDB_PROMPT = "this movie"  # the reference's prompt, for its corpus
LSTM: Final = "lstm"
DEFAULT_TEMPERATURES = (0.2, 0.5, 0.7, 1.0, 1.5)
MAX_TEMPERATURES = 16
MAX_SEQUENCE_LENGTH = 4096
MAX_GENERATE_LENGTH = 100_000
MODEL_FILE, VOCABULARY_FILE = "model.keras", "vocabulary.json"  # the "model" outputs

# Defaults that depend on the architecture (None: the field does not apply to it).
ARCHITECTURE_DEFAULTS: dict[str, dict[str, Any]] = {
    TRANSFORMER: {
        "epochs": 10,
        "batch_size": 256,
        "sequence_length": 100,
        "embed_dim": 256,
        "latent_dim": 2048,
        "num_heads": 2,
        "lstm_units": None,
        "learning_rate": 1e-3,  # Keras' RMSprop default, as compile(optimizer="rmsprop")
        "generate_length": 50,
    },
    LSTM: {
        "epochs": 60,
        "batch_size": 128,
        "sequence_length": 60,
        "stride": 3,
        "embed_dim": None,
        "latent_dim": None,
        "num_heads": None,
        "lstm_units": 128,
        "learning_rate": 1e-2,
        "generate_length": 400,
    },
}
ONLY_FOR = {
    "embed_dim": TRANSFORMER,
    "latent_dim": TRANSFORMER,
    "num_heads": TRANSFORMER,
    "lstm_units": LSTM,
}

Temperature = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def temperatures_field(help_: str) -> Any:
    """Sampling temperatures (text-lm's per-epoch samples, text-generate's continuations)."""
    return Field(
        default_factory=lambda: list(DEFAULT_TEMPERATURES),
        min_length=1,
        max_length=MAX_TEMPERATURES,
        description=f"{help_}, each > 0 (1 to {MAX_TEMPERATURES} of them)",
    )


class Spec(TrainingSpec):
    """Fields common to both architectures default to the transformer's values; the
    lstm's are filled in when the architecture is lstm and the field is not given."""

    corpus: str = Field(
        "imdb",
        description="imdb (Keras' IMDB reviews, downloaded on first use), a directory of "
        ".txt files (recursive; one file, one document) or a single text file",
    )
    architecture: Literal["transformer", "lstm"] = Field(
        TRANSFORMER, description="word-level Transformer decoder, or character-level LSTM"
    )
    epochs: int = Field(10, gt=0, description="10 (transformer), 60 (lstm)")
    batch_size: int = Field(256, gt=0, description="256 (transformer), 128 (lstm)")
    sequence_length: int = Field(
        100,
        gt=0,
        le=MAX_SEQUENCE_LENGTH,
        description="transformer: tokens per training sequence (100; the model reads one "
        f"fewer); lstm: characters read per prediction (60); at most {MAX_SEQUENCE_LENGTH}",
    )
    stride: int = Field(  # type: ignore[assignment]  # None: _architecture_defaults fills it
        None,
        gt=0,
        description="tokens between the starts of consecutive training windows "
        "(transformer: sequence_length - 1, i.e. consecutive pieces; lstm: 3)",
    )
    vocab_size: int = Field(
        15000, ge=3, le=1_000_000, description="most frequent tokens kept, with padding and [UNK]"
    )
    embed_dim: int | None = Field(None, gt=0, description="transformer: embedding size (256)")
    latent_dim: int | None = Field(
        None, gt=0, description="transformer: feed-forward width of the decoder block (2048)"
    )
    num_heads: int | None = Field(None, gt=0, description="transformer: attention heads (2)")
    lstm_units: int | None = Field(None, gt=0, description="lstm: units of the LSTM (128)")
    learning_rate: float = Field(1e-3, gt=0, description="RMSprop: 1e-3 (transformer), 1e-2 (lstm)")
    prompt: str | None = Field(
        None,
        min_length=1,
        description=f"start of every epoch's samples: {IMDB_PROMPT!r} for imdb (the "
        "reference's), else a passage of the corpus chosen by the seed",
    )
    generate_length: int = count_field(
        50, MAX_GENERATE_LENGTH, "tokens per sample: 50 (transformer), 400 (lstm)"
    )
    temperatures: list[Temperature] = temperatures_field("softmax temperatures of the samples")
    validation_share: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="share of the corpus held out of training for val_loss and val_perplexity "
        "(transformer: whole documents, or the end of each document when there are fewer "
        "than 1/share documents; lstm: the end of the character stream); 0: none",
    )

    @model_validator(mode="before")
    @classmethod
    def _architecture_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        architecture = data.get("architecture", TRANSFORMER)
        if not isinstance(architecture, str) or architecture not in ARCHITECTURE_DEFAULTS:
            return data  # the field's own check reports it
        for name, only in ONLY_FOR.items():
            if only != architecture and data.get(name) is not None:
                raise ValueError(f"{name} applies to architecture {only!r} only")
        filled = dict(data)
        for name, value in ARCHITECTURE_DEFAULTS[architecture].items():
            if filled.get(name) is None:
                filled[name] = value
        if architecture == TRANSFORMER and filled.get("corpus", IMDB) == IMDB:
            filled["prompt"] = filled.get("prompt") or IMDB_PROMPT
        length = filled["sequence_length"]
        if filled.get("stride") is None and type(length) is int:
            filled["stride"] = max(length - 1, 1)  # consecutive pieces of the documents
        return filled

    folder_fields: ClassVar[tuple[str, ...]] = ("corpus",)
    """Fields that may name an object-store folder, synced by the worker (kinds.contract)."""

    @field_validator("corpus")
    @classmethod
    def _check_corpus(cls, value: str, info: ValidationInfo) -> str:
        return validate_corpus(value, info.context)

    @field_validator("sequence_length")
    @classmethod
    def _check_sequence_length(cls, length: int, info: ValidationInfo) -> int:
        if info.data.get("architecture") == TRANSFORMER and length < 2:
            raise ValueError("must be at least 2 for the transformer (inputs and next words)")
        return length

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, prompt: str | None, info: ValidationInfo) -> str | None:
        word_level = info.data.get("architecture") == TRANSFORMER
        if prompt is not None and word_level and not words(prompt):
            raise ValueError("holds no word (letters, digits or symbols besides punctuation)")
        return prompt

    @model_validator(mode="after")
    def _check_prompt_in_corpus(self, info: ValidationInfo) -> Spec:
        """At submit, a prompt none of whose tokens training would keep is refused (the
        worker, validating again without a Submission, leaves it to `run`)."""
        if self.prompt is None or not isinstance(info.context, Submission):
            return self
        level = WORD if self.architecture == TRANSFORMER else CHARACTER
        kept = submit_vocabulary(self.corpus, level, self.vocab_size)
        tokens = words(self.prompt) if level == WORD else characters(self.prompt)
        if kept is not None and not any(token in kept for token in tokens):
            raise ValueError(
                f"no {self.token_name} of the prompt {shown(self.prompt)} is in the vocabulary "
                f"that corpus {shown(self.corpus)} gives"
            )
        return self

    @property
    def token_name(self) -> str:
        return "word" if self.architecture == TRANSFORMER else "character"

    @property
    def window(self) -> int:
        """Tokens the model reads per prediction."""
        if self.architecture == TRANSFORMER:
            return self.sequence_length - 1  # inputs and targets are one token apart
        return self.sequence_length


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.text_lm.train import train

    train(spec, ctx)
