"""Headless ImageNet convnets as feature extractors: VGG19 and InceptionV3.

`backbone_weights` of a kind's spec chooses the weights:

- `imagenet`: Keras' pretrained weights, read from ~/.keras/models/ (or $KERAS_HOME/models/)
  and downloaded there on first use. Offline without the file, the job fails at once
  (JobError "weights_unavailable") naming the setting and the file.
- a path to a Keras weights file of the headless backbone (`.weights.h5`, a legacy `.h5`
  such as Keras' own ImageNet file, or a `.keras` model), for air-gapped clusters.
- `none`: random initialisation (tests, benchmarks), redrawn from the job's seed.

Importing this module is light (no TensorFlow): the spec validators use the static layer
tables below at submit; Keras is imported only when a model is built.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from core.errors import detail
from kinds.contract import JobError, ModelCache
from kinds.paths import kind_of, shown
from kinds.seeds import Stream

VGG19 = "vgg19"
INCEPTION_V3 = "inception_v3"
IMAGENET, NO_WEIGHTS = "imagenet", "none"
WEIGHTS_SUFFIXES = (".h5", ".keras")  # .weights.h5 ends with .h5

# The layer names Keras gives these architectures. All of VGG19's are explicit; of
# InceptionV3's only the "mixed" blocks are: its convolutions, batch norms and activations
# get automatic names ("conv2d_57") that depend on how many layers the process built
# before, so they cannot name a layer in a spec.
VGG19_LAYERS: tuple[str, ...] = tuple(
    f"block{block}_{name}"
    for block, convs in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
    for name in [*(f"conv{index}" for index in range(1, convs + 1)), "pool"]
)
INCEPTION_V3_LAYERS: tuple[str, ...] = (
    *(f"mixed{index}" for index in range(9)),
    "mixed9_0",
    "mixed9",
    "mixed9_1",
    "mixed10",
)

# Keras' pretrained headless weights: file name in ~/.keras/models/ and where it comes from.
IMAGENET_FILES: dict[str, tuple[str, str]] = {
    VGG19: (
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/",
    ),
    INCEPTION_V3: (
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/",
    ),
}


def validate_backbone_weights(value: str) -> str:
    """`imagenet`, `none`, or an existing weights file (returned as an absolute path).

    Raises ValueError with a one-line message otherwise. A file path is checked where the
    job is submitted and again where it runs, so every worker must be able to read it.
    """
    if value in (IMAGENET, NO_WEIGHTS):
        return value
    if not value.endswith(WEIGHTS_SUFFIXES):
        raise ValueError(
            f"backbone_weights must be 'imagenet', 'none' or a Keras weights file "
            f"(.weights.h5, .h5 or .keras), got {shown(value)}"
        )
    path, found = kind_of(value, "backbone_weights file")
    if found != "file":
        raise ValueError(f"backbone_weights file {shown(value)} does not exist")
    return str(path)


def weights_identity(weights: str) -> tuple[Hashable, ...]:
    """Cache-key part for `weights`: a file counts as changed when its size or mtime does."""
    if weights in (IMAGENET, NO_WEIGHTS):
        return (weights,)
    try:
        stat = os.stat(weights)
    except OSError:
        return (weights,)  # load_backbone reports the problem
    return (weights, stat.st_size, stat.st_mtime_ns)


def keras_models_dir() -> Path:
    """Where keras.utils.get_file keeps the applications' weights (cache_subdir "models")."""
    if "KERAS_HOME" in os.environ:
        base = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        home = Path.home()
        base = (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"
    if not os.access(base, os.W_OK):  # get_file's own fallback
        base = Path("/tmp/.keras")
    return base / "models"


def inception_v3_feature_side(side: int, layer: str) -> int:
    """Side of `layer`'s activations for an input side of `side` pixels (0: none at all).

    The "valid" convolutions and poolings of InceptionV3's stem and of the reductions in
    mixed3 and mixed8 shrink the input; every other layer keeps its size.
    """

    def reduce(size: int) -> int:  # 3x3, stride 2, valid padding
        return max((size - 3) // 2 + 1, 0)

    size = reduce(side) - 2  # stride-2 conv, then a valid 3x3 conv
    size = reduce(size) - 2  # max pool, then a 1x1 and a valid 3x3 conv
    size = reduce(size)  # max pool: mixed0..mixed2
    index = INCEPTION_V3_LAYERS.index(layer)
    if index >= INCEPTION_V3_LAYERS.index("mixed3"):
        size = reduce(size)
    if index >= INCEPTION_V3_LAYERS.index("mixed8"):
        size = reduce(size)
    return max(size, 0)


def layer_names(backbone: str) -> tuple[str, ...]:
    return {VGG19: VGG19_LAYERS, INCEPTION_V3: INCEPTION_V3_LAYERS}[backbone]


def check_layers(backbone: str, names: Sequence[str], what: str = "layer") -> None:
    """ValueError (one line) naming the first unknown layer and the usable names."""
    known = layer_names(backbone)
    for name in names:
        if name not in known:
            raise ValueError(f"unknown {what} {name!r} for {backbone} (usable: {', '.join(known)})")


# --- building (imports Keras) ---------------------------------------------------------


class FeatureExtractor:
    """A headless backbone and a model giving the activations of `layers` as a list in
    that order. Cached per process by (backbone, weights, layers); the weights are never
    trained, only read."""

    def __init__(self, backbone: str, weights: str, layers: Sequence[str]) -> None:
        import keras

        check_layers(backbone, layers)
        self.backbone_name = backbone
        self.weights = weights
        self.layers = tuple(layers)
        self.backbone = _build_backbone(backbone, weights)
        self.backbone.trainable = False
        outputs = [self.backbone.get_layer(name).output for name in self.layers]
        self.model = keras.Model(self.backbone.input, outputs, name=f"{backbone}_features")
        self.drawn_from: int | None = None  # `none` weights: their seed

    def __call__(self, images: Any) -> list[Any]:
        return self.model(images, training=False)

    def reinitialize(self, seed: int) -> None:
        """For `none` weights: draw every weight from (seed, Stream.BACKBONE), so cold and
        warm jobs of a seed compute the same thing. The weights are never trained: drawn
        once for a seed, they stay valid for the next job with that seed."""
        from kinds import keras_state

        if self.weights == NO_WEIGHTS and self.drawn_from != seed:
            keras_state.reinitialize(self.model, (seed, Stream.BACKBONE))
            self.drawn_from = seed


def job_extractor(
    cache: ModelCache, backbone: str, weights: str, layers: Sequence[str], seed: int
) -> FeatureExtractor:
    """The worker's extractor of `layers` for these weights (built on first use), its
    random weights, if any, drawn from the job's `seed`."""
    extractor: FeatureExtractor = cache.get_or_build(
        cache_key(backbone, weights, layers),
        lambda: FeatureExtractor(backbone, weights, layers),
    )
    extractor.reinitialize(seed)
    return extractor


def cache_key(backbone: str, weights: str, layers: Sequence[str]) -> tuple[Hashable, ...]:
    return ("backbone", backbone, *weights_identity(weights), tuple(layers))


def _build_backbone(backbone: str, weights: str) -> Any:
    import keras

    constructor = {
        VGG19: keras.applications.VGG19,
        INCEPTION_V3: keras.applications.InceptionV3,
    }[backbone]
    if weights == IMAGENET:
        filename, _ = IMAGENET_FILES[backbone]
        try:
            return constructor(include_top=False, weights=IMAGENET)
        except Exception as exc:  # get_file raises a bare Exception on a failed download
            raise JobError(
                "weights_unavailable",
                f"backbone_weights='imagenet' needs {filename} in {keras_models_dir()}/, "
                f"which is missing and could not be downloaded ({detail(exc)}); copy the "
                f"file there or set backbone_weights to the path of a weights file",
            ) from None
    model = constructor(include_top=False, weights=None)
    if weights != NO_WEIGHTS:
        try:
            model.load_weights(weights)
        except Exception as exc:  # file errors, wrong architecture, shape mismatches
            raise JobError(
                "weights_invalid",
                f"backbone_weights {weights!r} cannot be loaded into a headless {backbone} "
                f"({detail(exc)})",
            ) from None
    return model
