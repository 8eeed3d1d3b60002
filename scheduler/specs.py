"""Spec validation at submit: the kind's typed spec, reported as one clear line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from core.errors import UserError, one_line
from kinds import load_kind
from kinds.contract import CheckpointedSpec, Submission


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


def is_checkpointed(kind: str) -> bool:
    """The kind checkpoints (training, rendering): it can be preempted and continued."""
    try:
        return issubclass(load_kind(kind).Spec, CheckpointedSpec)
    except ValueError as error:
        raise SpecError(str(error)) from None


def input_fields(kind: str) -> tuple[str, ...]:
    """The kind's fields that name input files (copied into the store at submit)."""
    try:
        return tuple(getattr(load_kind(kind), "INPUT_FILES", ()))
    except ValueError as error:
        raise SpecError(str(error)) from None


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


def parse_assignments(kind: str, items: list[str]) -> dict[str, Any]:
    """`key=value` items; a value is JSON when it parses as JSON, else a string, except that
    a field that takes only text keeps the text as typed unless it is a JSON string: a job
    id such as `386e7667` or `799394` would otherwise read as a number."""
    try:
        text_only = text_fields(load_kind(kind).Spec)
    except ValueError as error:
        raise SpecError(str(error)) from None
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set expects key=value, got {item!r}")
        value = json_or_text(raw)
        values[key] = raw if key in text_only and not isinstance(value, str) else value
    return values


def json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def text_fields(spec: type[BaseModel]) -> set[str]:
    """Fields whose schema admits strings (or null) and nothing else."""
    fields = set()
    for name, schema in spec.model_json_schema().get("properties", {}).items():
        options = schema.get("anyOf", [schema])
        types = {option.get("type") for option in options}
        if "string" in types and types <= {"string", "null"}:
            fields.add(name)
    return fields
