"""Mixed precision for training kinds: float16 compute with float32 weights, as GPUs
with tensor cores run fastest, and dynamic loss scaling so small float16 gradients do
not flush to zero.

A kind builds its models inside `compute_policy(mixed)` with their output layers in
float32 (the losses stay float32), wraps its optimizers with `optimizer(...)`, and
takes gradients of `optimizer.scale_loss(loss)`: Keras' LossScaleOptimizer unscales
them in `apply` and skips a step whose gradients overflowed; a plain optimizer's
`scale_loss` returns the loss unchanged. The loss scale is an optimizer variable, so
checkpoints hold it and a resumed run continues with the same scale.

Importing this module is light (specs use it at submit): Keras loads on first use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

MIXED_POLICY = "mixed_float16"
MIXED_PRECISION_HELP = (
    "float16 compute with float32 weights and dynamic loss scaling: faster on GPUs with "
    "tensor cores, slow on CPUs (the reference trains in float32)"
)


@contextmanager
def compute_policy(mixed: bool) -> Iterator[None]:
    """Layers created inside compute in float16 when `mixed` (Keras' global policy is
    restored after, so other models in the process are unaffected)."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_POLICY if mixed else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def optimizer(inner: keras.optimizers.Optimizer, mixed: bool) -> keras.optimizers.Optimizer:
    """`inner`, with dynamic loss scaling when `mixed`."""
    import keras

    return keras.optimizers.LossScaleOptimizer(inner) if mixed else inner
