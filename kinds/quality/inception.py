"""InceptionV3's pooled features at 299 pixels with ImageNet weights: the standard FID's
features, so figures compare with published ones (within the bias of a few hundred
images rather than 50,000).

The metric uses the weights only when they are in Keras' cache (~/.keras/models/): it
never downloads them itself, so a training job's metrics never wait on, or depend on,
the network. A deepdream job with `backbone_weights=imagenet` fetches the same file, or
`python -c "import keras; keras.applications.InceptionV3(include_top=False)"`. On two
CPU cores the network reads about 5 to 15 images a second (a GPU: hundreds): the FID of
500 generated images costs about a minute there. Imports TensorFlow: loaded by the
kinds' `run` only.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kinds.backbones import IMAGENET, IMAGENET_FILES, INCEPTION_V3, keras_models_dir
from kinds.contract import ModelCache

NAME = INCEPTION_V3
"""How events name these features (notes: fid_features)."""
SIDE = 299
READ_BATCH = 32


class InceptionFeatures:
    """The headless network with global average pooling: (n, 2048) features of images in
    [0, 1] of any size and 1 or 3 channels (grey is repeated into three)."""

    name = NAME

    def __init__(self) -> None:
        self.model = keras.applications.InceptionV3(
            include_top=False, pooling="avg", weights=IMAGENET
        )

    def __call__(self, images: np.ndarray) -> np.ndarray:
        features = []
        for begin in range(0, len(images), READ_BATCH):
            chunk = tf.convert_to_tensor(images[begin : begin + READ_BATCH], tf.float32)
            if chunk.shape[-1] == 1:
                chunk = tf.repeat(chunk, 3, axis=-1)
            chunk = tf.image.resize(chunk, (SIDE, SIDE), method="bilinear")
            # keras.applications.inception_v3.preprocess_input: [0, 255] to [-1, 1].
            features.append(np.asarray(self.model(chunk * 2.0 - 1.0, training=False)))
        return np.concatenate(features)


def inception_features(cache: ModelCache) -> InceptionFeatures | None:
    """The process' InceptionV3 features, or None when its weights are not in Keras'
    cache."""
    filename, _ = IMAGENET_FILES[INCEPTION_V3]
    if not (keras_models_dir() / filename).is_file():
        return None
    extractor: InceptionFeatures = cache.get_or_build(
        ("quality", NAME, IMAGENET), InceptionFeatures
    )
    return extractor
