"""Keras 3 model and optimizer state as flat numpy arrays, and per-job resets.

Arrays are keyed "<prefix>.<index>" by the variable's position in `model.variables` /
`optimizer.variables`. Variable names and paths are not used: Keras numbers layers
per process ("dense_3"), so they differ between a worker that built the model once
and one that built it twice, while positions are fixed by the architecture.

`model.variables` includes non-trainable state such as Dropout's seed-generator
counter, so saving and restoring it makes dropout masks repeat exactly after a resume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

SEED_STATE_NAME = "seed_generator_state"  # name Keras gives every SeedGenerator's variable
# Variable name -> layer attribute holding its initializer, where "<name>_initializer" fails.
INITIALIZER_ATTRIBUTES = {"recurrent_kernel": "recurrent_initializer"}


class StateMismatch(ValueError):
    """Saved arrays do not fit the model or optimizer they are loaded into."""


@dataclass(frozen=True)
class TrainingState:
    """Everything a training checkpoint holds: models and optimizers by name (the
    prefix of their arrays), each optimizer with the variables it trains, and other
    variables of the training by name (CycleGAN's image pools)."""

    models: Mapping[str, keras.Model]
    optimizers: Mapping[str, tuple[keras.optimizers.Optimizer, Sequence[Any]]]
    variables: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for name, model in self.models.items():
            arrays.update(model_arrays(name, model))
        for name, (optimizer, _) in self.optimizers.items():
            arrays.update(optimizer_arrays(name, optimizer))
        for name, variables in self.variables.items():
            arrays.update(variables_to_arrays(name, variables))
        return arrays

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Assign arrays saved by `arrays()`; raises StateMismatch if they don't fit."""
        for name, model in self.models.items():
            load_model_arrays(name, model, arrays)
        for name, (optimizer, variables) in self.optimizers.items():
            load_optimizer_arrays(name, optimizer, arrays, variables)
        for name, variables in self.variables.items():
            assign_arrays(name, variables, arrays)


def model_arrays(prefix: str, model: keras.Model) -> dict[str, np.ndarray]:
    """Copies of all variables of `model` (weights and non-trainable state)."""
    return variables_to_arrays(prefix, model.variables)


def load_model_arrays(prefix: str, model: keras.Model, arrays: Mapping[str, np.ndarray]) -> None:
    """Assign arrays saved by `model_arrays` back; raises StateMismatch if they don't fit."""
    assign_arrays(prefix, model.variables, arrays)


def optimizer_arrays(prefix: str, optimizer: keras.optimizers.Optimizer) -> dict[str, np.ndarray]:
    """Copies of all optimizer variables: iteration count, learning rate, slots."""
    return variables_to_arrays(prefix, optimizer.variables)


def load_optimizer_arrays(
    prefix: str,
    optimizer: keras.optimizers.Optimizer,
    arrays: Mapping[str, np.ndarray],
    variables: Sequence[Any],
) -> None:
    """Assign arrays saved by `optimizer_arrays`, building the optimizer on the
    trainable `variables` first if needed (its slots only exist once built)."""
    if not optimizer.built:
        optimizer.build(variables)
    assign_arrays(prefix, optimizer.variables, arrays)


def variables_to_arrays(prefix: str, variables: Sequence[Any]) -> dict[str, np.ndarray]:
    return {_key(prefix, index): np.array(var.numpy()) for index, var in enumerate(variables)}


def assign_arrays(prefix: str, variables: Sequence[Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Assign `arrays[prefix.i]` to `variables[i]`, after checking count, shapes and dtypes
    of all of them (so a mismatch changes nothing)."""
    saved = sorted(key for key in arrays if key.startswith(prefix + "."))
    expected = [_key(prefix, index) for index in range(len(variables))]
    if saved != expected:
        raise StateMismatch(
            f"checkpoint has {len(saved)} arrays for {prefix!r}, the model has "
            f"{len(variables)} variables"
        )
    for key, var in zip(expected, variables, strict=True):
        array = np.asarray(arrays[key])
        if tuple(array.shape) != tuple(var.shape) or array.dtype != numpy_dtype(var):
            raise StateMismatch(
                f"checkpoint array {key} is {array.dtype}{list(array.shape)}, variable "
                f"{var.name} is {numpy_dtype(var)}{list(var.shape)}"
            )
    for key, var in zip(expected, variables, strict=True):
        var.assign(arrays[key])


def numpy_dtype(var: Any) -> np.dtype[Any]:
    """The numpy dtype of a Keras variable (dtype "float32") or a TensorFlow one."""
    return np.dtype(getattr(var.dtype, "as_numpy_dtype", var.dtype))


def reinitialize(model: keras.Model, seed: int | Sequence[int]) -> None:
    """Give every variable of `model` a fresh value that depends only on `seed`.

    Each weight is redrawn from its layer's own initializer, reseeded per variable, and
    each seed-generator state restarts from a seed-derived value. A model fetched from a
    cache and one built just now thus start from the same values for the same seed.
    Raises ValueError for a variable whose initializer cannot be found.
    """
    seeds = [seed] if isinstance(seed, int) else list(seed)
    owners = _variable_owners(model)
    for index, var in enumerate(model.variables):
        var_seed = derive_seed(seeds, index)
        if var.name == SEED_STATE_NAME:
            var.assign(np.array([var_seed, 0], dtype=np.dtype(var.dtype)))
        else:
            var.assign(_initial_value(owners.get(id(var)), var, var_seed))


def reset_optimizer(optimizer: keras.optimizers.Optimizer, learning_rate: float) -> None:
    """Put a built optimizer back to its starting state: iteration 0, all slots 0, and
    the given learning rate (a variable, so traced train steps see the new value)."""
    for var in optimizer.variables:
        var.assign(np.zeros(var.shape, dtype=np.dtype(var.dtype)))
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer.dynamic_scale.assign(optimizer.initial_scale)  # mixed precision
    optimizer.learning_rate = learning_rate


def _key(prefix: str, index: int) -> str:
    return f"{prefix}.{index:04d}"


def derive_seed(seeds: Sequence[int], index: int) -> int:
    state = np.random.SeedSequence([*seeds, index]).generate_state(1, dtype=np.uint32)[0]
    return int(state) % (2**31 - 1)  # Keras int seeds must fit in int32


def _variable_owners(model: keras.Model) -> dict[int, keras.layers.Layer]:
    owners: dict[int, keras.layers.Layer] = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for var in layer._trainable_variables + layer._non_trainable_variables:
            owners[id(var)] = layer
    return owners


def _initial_value(layer: keras.layers.Layer | None, var: Any, seed: int) -> Any:
    attribute = INITIALIZER_ATTRIBUTES.get(var.name, f"{var.name}_initializer")
    initializer = getattr(layer, attribute, None)
    if initializer is None:
        raise ValueError(f"no initializer known for variable {var.path}")
    config = initializer.get_config()
    if "seed" in config:
        initializer = type(initializer).from_config({**config, "seed": seed})
    value = initializer(var.shape, dtype=var.dtype)
    if var.name == "bias" and getattr(layer, "unit_forget_bias", False):
        # LSTM cells start the forget gate (second quarter of the bias) at one.
        units = var.shape[0] // 4
        value = keras.ops.concatenate(
            [value[:units], keras.ops.ones((units,), var.dtype), value[2 * units :]]
        )
    return value
