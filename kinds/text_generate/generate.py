"""The text-generate kind's work. Imports TensorFlow: loaded by `run` only.

A worker keeps one model and one compiled sampler per model shape (the shape is in the
vocabulary file); each job loads its trained weights into them, so a warm worker
neither rebuilds nor retraces for another model of the same shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kinds.contract import JobContext, JobError
from kinds.seeds import SEED_MODULUS
from kinds.text_corpus import WORD, Vocabulary
from kinds.text_generate import Spec
from kinds.text_lm import MODEL_FILE, VOCABULARY_FILE
from kinds.text_lm.model import build_model
from kinds.text_lm.sampling import Sampler
from kinds.text_lm.train import format_samples

GENERATE_STREAM = 0  # second key component; text-lm's epoch samples use the epoch (>= 1)
TEXT_FILE, JSON_FILE = "continuations.txt", "continuations.json"


class LoadedLm:
    """A model of one shape and its compiled sampler; `load` swaps in trained weights."""

    def __init__(self, shape: dict[str, Any], window: int) -> None:
        self.model = build_model(shape)
        self.sampler = Sampler(self.model, window)
        self.loaded: tuple[str, int, int] | None = None

    def load(self, path: Path) -> None:
        stat = path.stat()
        version = (str(path), stat.st_mtime_ns, stat.st_size)
        if version != self.loaded:
            self.model.load_weights(path)
            self.loaded = version


def generate(spec: Spec, ctx: JobContext) -> None:
    files = ctx.outputs_of(spec.model, "model")
    missing = [name for name in (MODEL_FILE, VOCABULARY_FILE) if name not in files]
    if missing:
        raise JobError(
            "model_missing",
            f"job {spec.model} has no model output {' or '.join(missing)}; did it succeed?",
        )
    try:
        vocabulary = Vocabulary.read(files[VOCABULARY_FILE])
        shape = dict(vocabulary.extra["model"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise JobError("model_invalid", f"{files[VOCABULARY_FILE]}: {exc}") from None
    prompt = spec.prompt or vocabulary.prompt
    ids = encode(vocabulary, prompt)
    if not any(token > 1 for token in ids):
        level = "word" if vocabulary.level == WORD else "character"
        raise JobError(
            "prompt_unknown",
            f"no {level} of the prompt {prompt!r} is in the vocabulary of job {spec.model}",
        )
    key = ("text-generate", *shape.values(), vocabulary.window)
    lm = ctx.cache.get_or_build(key, lambda: LoadedLm(shape, vocabulary.window))
    try:
        lm.load(files[MODEL_FILE])
    except (OSError, ValueError) as exc:
        raise JobError("model_invalid", f"{files[MODEL_FILE]}: {exc}") from None
    tokens = lm.sampler.generate(
        ids, spec.length, spec.temperatures, (spec.seed % SEED_MODULUS, GENERATE_STREAM)
    )
    ctx.progress(spec.length, spec.length)
    heading = f"model {spec.model}; seed {spec.seed}"
    text = format_samples(vocabulary, prompt, spec.temperatures, tokens, heading)
    record = {
        "model": spec.model,
        "prompt": prompt,
        "seed": spec.seed,
        "level": vocabulary.level,
        "continuations": [
            {
                "temperature": temperature,
                "tokens": [vocabulary.tokens[i] for i in row],
                "text": vocabulary.decode(row),
            }
            for temperature, row in zip(spec.temperatures, tokens.tolist(), strict=True)
        ],
    }
    ctx.save_output("text", TEXT_FILE, text.encode(), step=spec.length)
    ctx.save_output(
        "text",
        JSON_FILE,
        json.dumps(record, ensure_ascii=False, indent=1).encode(),
        step=spec.length,
    )


def encode(vocabulary: Vocabulary, prompt: str) -> list[int]:
    """Prompt token ids: word-level through a TextVectorization rebuilt from the saved
    vocabulary (no re-adapting), character-level by lookup."""
    if vocabulary.level != WORD:
        return vocabulary.encode(prompt)
    vectorizer = keras.layers.TextVectorization(
        output_mode="int", vocabulary=vocabulary.tokens, ragged=True
    )
    return [int(token) for token in np.asarray(vectorizer([prompt])[0])]
