"""Seed streams: every random number of a job is drawn from (the job's seed, a stream),
so no two uses of one seed share numbers. The stream is the second component of a numpy
`default_rng([seed, stream, ...])` or of a Keras initializer's derived seed.

Training and render jobs draw from `Stream`; generation jobs, whose seed is their own
(not the seed of the model's training job), from `SamplingStream`.
"""

from __future__ import annotations

from enum import IntEnum

SEED_MODULUS = 2**63
"""Stateless random keys are int64: seeds are taken modulo this."""


class Stream(IntEnum):
    FIRST_NETWORK = 1
    """Initial weights of a kind's first network: generator, encoder, autoencoder, LM."""
    SECOND_NETWORK = 2
    """Initial weights of its second network: discriminator, decoder."""
    SAMPLES = 3
    """Fixed inputs of the per-epoch samples: grid latents, preview noise, prompt passage."""
    DATA_ORDER = 4
    """Each epoch's order of the training rows (with the epoch as third component)."""
    BACKBONE = 5
    """Random (`none`) weights of a render kind's backbone."""
    THIRD_NETWORK = 6
    """Initial weights of a third network (CycleGAN's discriminator of domain A)."""
    FOURTH_NETWORK = 7
    """Initial weights of a fourth network (CycleGAN's discriminator of domain B)."""
    QUALITY = 8
    """What quality metrics measure: the real images of the FID statistics and the fixed
    latent vectors of its generated images (kinds.quality.meter)."""


NETWORK_STREAMS = (
    Stream.FIRST_NETWORK,
    Stream.SECOND_NETWORK,
    Stream.THIRD_NETWORK,
    Stream.FOURTH_NETWORK,
)
"""Initial-weight streams of a kind's networks, in the order the kind declares them."""


class SamplingStream(IntEnum):
    IMAGES = 1
    """Latent points of the images a generation job renders."""
    WALK = 2
    """End points of a latent walk."""
