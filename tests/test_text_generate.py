"""The text-generate kind: the compiled sampler against a plain step-by-step sampler,
and generation jobs through a real worker from the text-lm models of
tests/fixtures/trained.py (shared with tests/test_text_lm.py: each model is trained once
per session). Imports and bad specs: tests/test_kind_contract.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from db import jobs
from kinds.contract import Submission
from kinds.text_generate import DEFAULT_QUEUE, MODEL_INPUTS, Spec
from scheduler.specs import SpecError, parse_assignments, validate_spec
from tests.fixtures.jobs import Stacks, assert_refused_at_submit, finished, output_bytes
from tests.fixtures.stacks import Stack
from tests.fixtures.trained import TEXT_SPECS, shared_corpus, text_stack, trained_job

# --- spec ----------------------------------------------------------------------------------


def test_spec_defaults_and_model_reference(tmp_path: Path) -> None:
    spec = Spec(model="abcd1234")
    nothing = Submission(outputs_of=lambda reference, role: None)
    for job_id in ("799394", "386e766708994078", "1e5"):  # read as numbers, were they JSON
        values = parse_assignments("text-generate", [f"model={job_id}", "length=7"])
        assert values == {"model": job_id, "length": 7}
        assert validate_spec("text-generate", values, nothing).values["model"] == job_id
    quoted = parse_assignments("text-generate", ['prompt="a movie"', "model=null"])
    assert quoted == {"prompt": "a movie", "model": "null"}
    assert (DEFAULT_QUEUE, MODEL_INPUTS) == ("cpu", {"model": ("text-lm",)})
    assert (spec.prompt, spec.length, spec.seed) == (None, 50, 0)
    assert spec.temperatures == [0.2, 0.5, 0.7, 1.0, 1.5]


# --- the compiled sampler -------------------------------------------------------------------

VOCAB, WINDOW = 40, 6


def greedy_reference(model: Any, prompt: list[int], steps: int, window: int) -> list[int]:
    """The plain way: the whole (last `window`) sequence through the model per token."""
    tokens = list(prompt)
    for _ in range(steps):
        logits = np.asarray(model(np.array([tokens[-window:]], np.int32)))
        last = np.array(logits[0, -1] if logits.ndim == 3 else logits[0])
        last[0] = -np.inf  # the sampler never draws padding
        tokens.append(int(np.argmax(last)))
    return tokens[len(prompt) :]


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    import keras

    from kinds.text_lm.model import build_lstm, build_transformer

    keras.utils.set_random_seed(5)
    return {
        "transformer": build_transformer(VOCAB, WINDOW + 1, 16, 32, 2),
        "lstm": build_lstm(VOCAB, 16),
    }


@pytest.mark.parametrize("architecture", ["transformer", "lstm"])
def test_sampler_matches_step_by_step_decoding(models: dict[str, Any], architecture: str) -> None:
    """At a vanishing temperature sampling is greedy decoding: the compiled loop (sliding
    window, carried LSTM state) must give what re-running the model per token gives."""
    from kinds.text_lm.sampling import Sampler

    model = models[architecture]
    sampler = Sampler(model, WINDOW)
    prompt = [5, 9, 2, 17]
    steps = 3 * WINDOW  # well past a full window
    tokens = sampler.generate(prompt, steps, [1e-6], (0, 0))
    assert tokens.shape == (1, steps) and tokens.dtype == np.int32
    window = WINDOW if architecture == "transformer" else len(prompt) + steps  # LSTM: all
    assert tokens[0].tolist() == greedy_reference(model, prompt, steps, window)


def test_sampler_is_compiled_once_and_reproducible(models: dict[str, Any]) -> None:
    from kinds.text_lm.sampling import Sampler

    sampler = Sampler(models["transformer"], WINDOW)
    first = sampler.generate([3, 4], 25, [0.5, 1.0, 1.5], (7, 0))
    again = sampler.generate([3, 4], 25, [0.5, 1.0, 1.5], (7, 0))
    other = sampler.generate([3, 4], 25, [0.5, 1.0, 1.5], (8, 0))
    longer = sampler.generate(list(range(1, 20)), 40, [2.0], (7, 0))  # prompt > window
    assert first.shape == (3, 25) and longer.shape == (1, 40)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert first.min() >= 1 and first.max() < VOCAB
    assert sampler.tracing_count == 1  # one trace for every length, prompt and row count

    lstm = Sampler(models["lstm"], WINDOW).generate([3], 400, [1e3], (1, 0))
    assert lstm.min() >= 2, "the character model never draws padding or [UNK]"
    assert len(set(lstm[0].tolist())) > VOCAB // 2, "a hot temperature spreads the draws"


# --- generation jobs through a worker --------------------------------------------------------


@pytest.fixture(scope="module")
def stack(stacks: Stacks) -> Stack:
    return text_stack(stacks)


@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict[str, str]:
    """Both text-lm models (submitted by test_text_lm.py's tests when they ran first)."""
    ids = {name: trained_job(stack, name) for name in ("transformer", "lstm")}
    for job_id in ids.values():
        finished(stack, job_id)
    return ids


def continuations(view: Any) -> dict[str, Any]:
    assert view.status == "succeeded", (view.error_code, view.error_message)
    files = output_bytes(view, "text")
    assert sorted(files) == ["continuations.json", "continuations.txt"]
    return json.loads(files["continuations.json"])


def test_generate_from_both_models(stack: Stack, trained: dict[str, str]) -> None:
    temperatures = [0.3, 1.0, 1.8]
    submitted = {
        "words": stack.submit(
            "text-generate", model=trained["transformer"], length=30, temperatures=temperatures
        ),
        "again": stack.submit(
            "text-generate", model=trained["transformer"], length=30, temperatures=temperatures
        ),
        "seed": stack.submit(
            "text-generate",
            model=trained["transformer"][:8],  # a unique prefix is enough
            length=30,
            temperatures=temperatures,
            seed=4,
            prompt="The director was",
        ),
        "chars": stack.submit("text-generate", model=trained["lstm"], length=80, prompt="the "),
    }
    views = {name: stack.wait(job_id, timeout=120) for name, job_id in submitted.items()}
    models = {name: output_bytes(stack.client.get(job), "model") for name, job in trained.items()}
    vocabulary = json.loads(models["transformer"]["vocabulary.json"])["tokens"]

    words = continuations(views["words"])
    assert views["words"].queue == "cpu"
    assert (words["prompt"], words["level"], words["seed"]) == ("this movie", "word", 0)
    assert [c["temperature"] for c in words["continuations"]] == temperatures
    for continuation in words["continuations"]:
        assert len(continuation["tokens"]) == 30  # past the model's 15-token window
        assert set(continuation["tokens"]) <= set(vocabulary) - {""}
        assert continuation["text"] == " ".join(continuation["tokens"])
    text = output_bytes(views["words"], "text")["continuations.txt"].decode()
    assert text.count("\n--- temperature ") == 3 and "\nthis movie " in text

    assert output_bytes(views["again"], "text") == output_bytes(views["words"], "text")
    seeded = continuations(views["seed"])
    assert seeded["prompt"] == "The director was" and seeded["model"] == trained["transformer"]
    assert seeded["continuations"] != words["continuations"]

    characters = json.loads(models["lstm"]["vocabulary.json"])["tokens"]
    chars = continuations(views["chars"])
    assert chars["level"] == "char" and len(chars["continuations"]) == 5
    for continuation in chars["continuations"]:
        assert len(continuation["tokens"]) == 80
        assert set(continuation["tokens"]) <= set(characters) - {"", "[UNK]"}
        assert continuation["text"] == "".join(continuation["tokens"])


def test_bad_input_is_refused_at_submit(stack: Stack, trained: dict[str, str]) -> None:
    with stack.client.sessions.begin() as session:  # a job of another kind, never run
        other = jobs.create_job(session, kind="counter", spec={}, queue="nowhere").id
    broken = stack.submit(
        "text-lm",
        corpus=str(shared_corpus(stack)),
        **{**TEXT_SPECS["transformer"], "batch_size": 10**6},
    )
    failed = stack.wait(broken, timeout=120)
    assert (failed.status, failed.error_code) == ("failed", "corpus_too_small")

    model = trained["transformer"]
    cases = {  # more cases in tests/test_kind_contract.py and below, without the CLI
        (f"model={model[:6]}", "prompt=zebra quokka!"): (
            f"text-generate: field 'prompt': no word of the prompt is in the vocabulary of job "
            f'{model} (got "zebra quokka!")'
        ),
        ("model=ffffffffffff",): "field 'model': no job or model output 'ffffffffffff'",
        (f"model={other}",): f"job {other} is a counter job, expected text-lm",
        (f"model={broken}",): f"text-generate: field 'model': job {broken} failed",
    }
    assert_refused_at_submit(stack, "text-generate", cases)
    before = len(stack.client.list(limit=1000))

    # The Python client checks the same way, in its settings' outputs.
    refused = {
        "no character of the prompt": {"model": trained["lstm"], "prompt": "\u4e2d\u6587"},
        "field 'temperatures.1'": {"model": model, "temperatures": [1, -0.2]},
        "field 'length'": {"model": model, "length": 0},
    }
    for message, spec in refused.items():
        with pytest.raises(SpecError, match=message):
            stack.client.submit("text-generate", spec)
    assert len(stack.client.list(limit=1000)) == before


def test_unknown_prompt_fails_at_run_time_when_the_model_was_not_ready(
    stack: Stack, trained: dict[str, str]
) -> None:
    """Submitted before its model has a vocabulary, the job waits for the model and then
    fails with a clear code instead of being retried."""
    spec = {**TEXT_SPECS["transformer"], "epochs": 1, "steps_per_epoch": 2, "seed": 9}
    model = stack.submit("text-lm", corpus=str(shared_corpus(stack)), **spec)
    job_id = stack.submit("text-generate", model=model, prompt="zebra", length=5)
    view = stack.wait(job_id, timeout=120)
    assert view.depends_on == model and stack.client.get(model).status == "succeeded"
    assert (view.status, view.attempts, view.error_code) == ("failed", 1, "prompt_unknown")
    assert view.error_message == (
        f"no word of the prompt 'zebra' is in the vocabulary of job {model}"
    )


def test_model_files_load_with_plain_keras(trained: dict[str, str], stack: Stack) -> None:
    import keras

    import kinds.text_lm.model  # noqa: F401 - registers the custom layers

    view = stack.client.get(trained["transformer"])
    path = next(Path(o.location) for o in view.outputs if o.name == "model.keras")
    model = keras.models.load_model(path)
    tokens = json.loads(output_bytes(view, "model")["vocabulary.json"])["tokens"]
    logits = model(np.array([[2, 3, 4]], np.int32))
    assert tuple(logits.shape) == (1, 3, len(tokens))
