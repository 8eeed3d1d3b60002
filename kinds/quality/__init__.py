"""Quality metrics of the image generators (dcgan, cgan, vae): `fid` and `label_accuracy`.

- `frechet`: the Fréchet distance of two feature sets (numpy).
- `glyph_classifier`: the small digit classifier, trained once per machine on glyphs.
- `inception`: InceptionV3's ImageNet features, when the weights can be had.
- `features`: which of the two an FID uses.
- `meter`: the fixed real and generated sets, and the evaluation a kind gives its loop.

This package's `__init__` is light; its modules but `frechet` import TensorFlow.
"""
