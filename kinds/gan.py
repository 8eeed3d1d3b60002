"""What the GAN kinds (dcgan, cgan) share: the per-process cache entry holding both
networks, an Adam optimizer for each (loss-scaled under mixed precision), the label
noise and the checkpointed state. Each kind adds its compiled train step.

Imports TensorFlow: loaded by the kinds' `run` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import keras
import tensorflow as tf

from kinds import keras_state, precision

# Second seed component of each network's initial weights (4 is the data order).
GENERATOR_INIT, DISCRIMINATOR_INIT = 1, 2


class GanSpec(Protocol):
    seed: int
    learning_rate: float
    label_noise: float


class GanModels:
    """Generator, discriminator and their optimizers, built once per process and shape;
    jobs reuse them through `start_job`, which resets all state.

    `builds` (per subclass) counts entries built in this process, `jobs` the jobs that
    used this entry, `tracing_count` the traces of the train step (`self.train_step`,
    set by the subclass).
    """

    builds: ClassVar[int] = 0
    train_step: Any

    def __init__(
        self,
        build_generator: Callable[[], keras.Model],
        build_discriminator: Callable[[], keras.Model],
        mixed: bool,
    ) -> None:
        with precision.compute_policy(mixed):
            self.generator = build_generator()
            self.discriminator = build_discriminator()
        self.generator_optimizer = precision.optimizer(keras.optimizers.Adam(), mixed)
        self.discriminator_optimizer = precision.optimizer(keras.optimizers.Adam(), mixed)
        self.generator_optimizer.build(self.generator.trainable_variables)
        self.discriminator_optimizer.build(self.discriminator.trainable_variables)
        self.label_noise = tf.Variable(0.0, trainable=False, name="label_noise")
        self.loss_fn = keras.losses.BinaryCrossentropy()
        self.state = keras_state.TrainingState(
            models={"generator": self.generator, "discriminator": self.discriminator},
            optimizers={
                "generator_optimizer": (
                    self.generator_optimizer,
                    self.generator.trainable_variables,
                ),
                "discriminator_optimizer": (
                    self.discriminator_optimizer,
                    self.discriminator.trainable_variables,
                ),
            },
        )
        self.jobs = 0
        type(self).builds += 1

    @property
    def tracing_count(self) -> int:
        return self.train_step.experimental_get_tracing_count()

    def start_job(self, spec: GanSpec) -> None:
        """Reset everything to the state a fresh build would have for this spec."""
        keras_state.reinitialize(self.generator, (spec.seed, GENERATOR_INIT))
        keras_state.reinitialize(self.discriminator, (spec.seed, DISCRIMINATOR_INIT))
        keras_state.reset_optimizer(self.generator_optimizer, spec.learning_rate)
        keras_state.reset_optimizer(self.discriminator_optimizer, spec.learning_rate)
        self.label_noise.assign(spec.label_noise)
        self.jobs += 1
