"""Spec validation at submit: the kind's typed spec, reported as one clear line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from core.errors import UserError, one_line
from kinds import load_kind
from kinds.contract import Submission


class SpecError(UserError, ValueError):
    """A spec that cannot run; the message is one line naming what is wrong."""


@dataclass(frozen=True)
class ValidSpec:
    values: dict[str, Any]
    """The spec with defaults filled in, as JSON values."""
    queue: str
    """The kind's default queue."""
    input_files: tuple[str, ...]
    """Fields naming input files, copied into the input store at submit."""
    model_inputs: dict[str, tuple[str, ...]]
    """Fields naming another job whose outputs this job reads -> the kinds allowed."""


def validate_spec(kind: str, values: dict[str, Any], submission: Submission) -> ValidSpec:
    try:
        module = load_kind(kind)
    except ValueError as error:
        raise SpecError(str(error)) from None
    model_inputs = dict(getattr(module, "MODEL_INPUTS", {}))
    values = job_ids_as_text(values, model_inputs)
    try:
        spec = module.Spec.model_validate_json(json.dumps(values), context=submission)
    except ValidationError as error:
        raise SpecError(f"{kind}: {describe(error)}") from None
    except OSError as error:  # a check that met the file system where it did not expect to
        raise SpecError(f"{kind}: {one_line(error)}") from None
    return ValidSpec(
        values=spec.model_dump(mode="json"),
        queue=module.DEFAULT_QUEUE,
        input_files=tuple(getattr(module, "INPUT_FILES", ())),
        model_inputs=model_inputs,
    )


def job_ids_as_text(values: dict[str, Any], model_inputs: dict[str, Any]) -> dict[str, Any]:
    """`--set model=799394` reads an all-digit job id prefix as a number: take it back."""
    numbers = [
        field
        for field in model_inputs
        if isinstance(values.get(field), int) and not isinstance(values[field], bool)
    ]
    return {**values, **{field: str(values[field]) for field in numbers}}


def describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown field {field!r}")
            continue
        message = item["msg"].removeprefix("Value error, ")
        if not field:  # a check across fields: its message names them; the input is all
            problems.append(message)
            continue
        got = json.dumps(item.get("input"), default=str)
        got = got if len(got) <= 60 else got[:57] + "..."
        problems.append(f"field {field!r}: {message} (got {got})")
    return "; ".join(problems)


def parse_assignment(text: str) -> tuple[str, Any]:
    """`key=value`; the value is JSON when it parses as JSON, else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set expects key=value, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value
