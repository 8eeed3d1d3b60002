"""The registry of job kinds: kind name -> module with `Spec`, `DEFAULT_QUEUE`, `run`.

Importing a kind module must stay cheap (no TensorFlow at import time): the CLI
imports it to validate specs. Extra kinds (tests, benchmarks, plugins) are added with
`ATELIER_EXTRA_KINDS="name=package.module,other=pkg.mod"` in every process's environment.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

BUILTIN_KINDS: dict[str, str] = {
    "dcgan": "kinds.dcgan",
    "cgan": "kinds.cgan",
    "vae": "kinds.vae",
    "denoising-ae": "kinds.denoising_ae",
    "pix2pix": "kinds.pix2pix",
    "cyclegan": "kinds.cyclegan",
    "text-lm": "kinds.text_lm",
    "gan-sample": "kinds.gan_sample",
    "vae-sample": "kinds.vae_sample",
    "text-generate": "kinds.text_generate",
    "translate": "kinds.translate",
    "style-transfer": "kinds.style_transfer",
    "deepdream": "kinds.deepdream",
}


class UnknownKind(ValueError):
    pass


def kind_modules() -> dict[str, str]:
    kinds = dict(BUILTIN_KINDS)
    for entry in filter(None, os.environ.get("ATELIER_EXTRA_KINDS", "").split(",")):
        name, _, module = entry.partition("=")
        kinds[name.strip()] = module.strip()
    return kinds


def load_kind(name: str) -> ModuleType:
    kinds = kind_modules()
    if name not in kinds:
        known = ", ".join(sorted(kinds))
        raise UnknownKind(f"unknown job kind {name!r} (known: {known})")
    try:
        return importlib.import_module(kinds[name])
    except ModuleNotFoundError as error:
        if error.name and kinds[name].startswith(error.name):
            raise UnknownKind(f"job kind {name!r} is not available here ({error.name})") from None
        raise
