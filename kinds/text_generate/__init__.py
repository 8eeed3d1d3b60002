"""`text-generate` job kind: continue a prompt with a language model trained by text-lm.

Reads the `text-lm` job's model/model.keras and model/vocabulary.json, continues the
prompt for `length` tokens at each temperature in one compiled call (see
kinds.text_lm.sampling), and writes text/continuations.txt (readable) and
text/continuations.json (tokens and text per temperature). The same seed gives the same
text.

A prompt is checked against the model's vocabulary at submit when that vocabulary is
already written (text-lm writes it when training starts); otherwise when the job runs,
which then fails with `prompt_unknown`. Importing this module is cheap: TensorFlow is
loaded by `run` only.
"""

from __future__ import annotations

import re

from pydantic import Field, ValidationInfo, field_validator

from kinds.contract import JobContext, JobSpec, Submission
from kinds.fields import count_field
from kinds.text_corpus import Vocabulary
from kinds.text_lm import (
    MAX_GENERATE_LENGTH,
    VOCABULARY_FILE,
    Temperature,
    temperatures_field,
)

DEFAULT_QUEUE = "cpu"
MODEL_INPUTS = {"model": ("text-lm",)}

JOB_ID_PREFIX = re.compile(r"^[0-9a-f]{4,32}$")


class Spec(JobSpec):
    model: str = Field(
        min_length=1, description="a text-lm job: its id, a unique prefix, or its model output (#N)"
    )
    prompt: str | None = Field(
        None, min_length=1, description="text to continue; default: the training job's prompt"
    )
    length: int = count_field(50, MAX_GENERATE_LENGTH, "tokens per continuation")
    temperatures: list[Temperature] = temperatures_field("one continuation per temperature")
    seed: int = Field(0, ge=0, description="the sampling noise: same seed, same text")

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, prompt: str | None, info: ValidationInfo) -> str | None:
        model = info.data.get("model")
        if prompt is None or model is None:
            return prompt
        found = submitted_vocabulary(model, info.context)
        if found is not None and not found[1].known(prompt):
            level = "word" if found[1].level == "word" else "character"
            raise ValueError(f"no {level} of the prompt is in the vocabulary of job {found[0]}")
        return prompt


def submitted_vocabulary(model: str, submission: object) -> tuple[str, Vocabulary] | None:
    """The job id and vocabulary file of the text-lm job `model` names (an id or a
    prefix), when this is a submit and the file is there; else None (the job then
    checks its prompt when it runs).

    The worker validates the spec again before `run` (without a `Submission`); a prompt
    refused there would end as a retried generic error, so there the check is left to
    `run`, which fails with the code `prompt_unknown`.
    """
    if not isinstance(submission, Submission):
        return None
    found = submission.outputs_of(model, "model")
    if found is None or VOCABULARY_FILE not in found[1]:
        return None  # no such job (submit reports it), or it has not written it yet
    try:
        return found[0], Vocabulary.read(found[1][VOCABULARY_FILE])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.text_generate.generate import generate

    generate(spec, ctx)
