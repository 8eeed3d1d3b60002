"""A small digit classifier trained on rendered glyphs: the features of the offline FID
and the reader of `label_accuracy`.

InceptionV3's ImageNet features say little about 28-pixel digits and need weights a
machine without internet does not have. This network needs nothing but the built-in
glyphs: two strided convolutions, a 64-unit dense layer (its output, after the ReLU, is
the feature vector) and ten logits. It is trained once per machine, in 4 s on two idle
CPU cores (8 on busy ones), on glyphs rendered at 28, 16 and 64 pixels (brought to 28 as
every input is, so other image sizes read as well), and saved under
`<cache_dir>/features/<VERSION>.npz`; every later job on that machine loads it in 0.1 s
(and a worker process keeps it in its model cache). It reads held-out glyphs at 99.6%
(28 px), 98% (16 px) and 99.7% (64 px).

Its training is a pure function of VERSION: fixed seeds and op determinism, so every
machine trains the same weights, and a job resumed on another machine measures what the
uninterrupted one did. Change the network or its training and VERSION must change too.
Imports TensorFlow: loaded by the kinds' `run` only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kinds import keras_state
from kinds.contract import ModelCache
from kinds.datasets import render_glyphs
from kinds.reproducibility import build_reproducibly, set_op_determinism

NAME = "glyph_classifier"
"""How events name these features (notes: fid_features)."""
VERSION = "glyph_classifier_v1"
SIDE = 28
CLASSES = 10
FEATURES = 64
TRAINING_GLYPHS = ((28, 2048), (16, 512), (64, 256))
"""(render size, count) of the training glyphs."""
EPOCHS, BATCH, LEARNING_RATE = 3, 64, 3e-3
SEED = 0x671F
"""Of the training glyphs, the initial weights and the order of the batches; the jobs'
own glyphs come from their seeds (0 by default), so held-out glyphs use other seeds."""
READ_BATCH = 500


class GlyphClassifier:
    """The trained network: `features` (n, 64) and `classes` (n,) of images in [0, 1] of
    any size and 1 or 3 channels. `trained` is True where this process trained it."""

    name = NAME

    def __init__(self, model: keras.Model, *, trained: bool) -> None:
        self.model = model
        self.trained = trained

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.read(images)[1]

    def classes(self, images: np.ndarray) -> np.ndarray:
        return self.read(images)[0]

    def read(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The class of each image and its feature vector, in one pass."""
        classes, features = [], []
        for begin in range(0, len(images), READ_BATCH):
            chunk = to_input(images[begin : begin + READ_BATCH])
            logits, vectors = self.model(chunk, training=False)
            classes.append(np.argmax(np.asarray(logits), axis=1))
            features.append(np.asarray(vectors))
        return np.concatenate(classes), np.concatenate(features)


def to_input(images: np.ndarray) -> tf.Tensor:
    """Images in [0, 1] (n, h, w, 1 or 3) as the classifier's grey 28-pixel input: colour
    by luminance, other sizes resized with antialiasing."""
    pixels = tf.convert_to_tensor(images, tf.float32)
    if pixels.shape[-1] == 3:
        pixels = tf.image.rgb_to_grayscale(pixels)
    if tuple(pixels.shape[1:3]) != (SIDE, SIDE):
        pixels = tf.image.resize(pixels, (SIDE, SIDE), antialias=True)
    return pixels


def glyph_classifier(cache: ModelCache, cache_dir: Path) -> GlyphClassifier:
    """The machine's classifier, from this process' cache, else its file in `cache_dir`,
    else trained now (and saved there)."""
    key = ("quality", VERSION, str(cache_dir))
    classifier: GlyphClassifier = cache.get_or_build(key, lambda: load_or_train(cache_dir))
    return classifier


def load_or_train(cache_dir: Path) -> GlyphClassifier:
    """Load the saved weights, or train and save them. Worker processes of one machine
    take turns (a file lock), so only the first trains; the file is written whole
    (temp file, then rename), so a reader never sees half of it."""
    folder = cache_dir / "features"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{VERSION}.npz"
    with _locked(folder / f"{VERSION}.lock"):
        model = build_reproducibly(build)
        if _load(model, path):
            return GlyphClassifier(model, trained=False)
        train(model)
        _save(model, path)
    return GlyphClassifier(model, trained=True)


def build() -> keras.Model:
    layers = keras.layers
    images = keras.Input((SIDE, SIDE, 1), name="glyph")
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(images)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    features = layers.Dense(FEATURES, activation="relu", name="features")(layers.Flatten()(x))
    logits = layers.Dense(CLASSES, name="logits")(features)
    return keras.Model(images, [logits, features], name=VERSION)


def training_glyphs() -> tuple[np.ndarray, np.ndarray]:
    """The training glyphs at the classifier's input size, and their digits."""
    parts = [render_glyphs(count, size, seed=SEED + size) for size, count in TRAINING_GLYPHS]
    images = np.concatenate([to_input(pixels).numpy() for pixels, _ in parts])
    return images, np.concatenate([labels for _, labels in parts]).astype(np.int32)


def train(model: keras.Model) -> None:
    """Adam on cross-entropy, under op determinism (then put back as the job had it)."""
    from tensorflow.python.framework import config as tf_config

    images, labels = training_glyphs()
    keras_state.reinitialize(model, (SEED, 0))
    optimizer = keras.optimizers.Adam(LEARNING_RATE)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables

    @tf.function
    def step(batch: tf.Tensor, targets: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            logits, _ = model(batch, training=True)
            loss = loss_fn(targets, logits)
        optimizer.apply(tape.gradient(loss, variables), variables)

    rng = np.random.default_rng(SEED)
    was_deterministic = tf_config.is_op_determinism_enabled()
    set_op_determinism(True)
    try:
        for _ in range(EPOCHS):
            order = rng.permutation(len(images))
            for begin in range(0, len(order) - BATCH + 1, BATCH):
                rows = order[begin : begin + BATCH]
                step(tf.constant(images[rows]), tf.constant(labels[rows]))
    finally:
        set_op_determinism(was_deterministic)


def _load(model: keras.Model, path: Path) -> bool:
    """Put the saved weights into `model`; False if there are none (or unreadable ones)."""
    try:
        with np.load(path) as saved:
            keras_state.load_model_arrays(NAME, model, {key: saved[key] for key in saved.files})
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        return False  # none yet, damaged, or of another shape: train (again)
    return True


def _save(model: keras.Model, path: Path) -> None:
    arrays: dict[str, Any] = keras_state.model_arrays(NAME, model)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}", suffix=".npz")
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.savez(file, **arrays)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would keep other users' workers out
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` between processes (where fcntl exists)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: two processes may both train, and both write whole
        yield
        return
    with open(path, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)
