"""TensorBoard records of one run, held until a checkpoint publishes them.

TensorBoard shows a resumed job correctly only if no step is logged twice and none is
missing. A run therefore keeps its records in memory and publishes them as one event
file (a segment) together with each checkpoint, in the same transaction: the segments
of a job cover exactly the steps its checkpoints cover, and the steps a crashed run
logged after its last checkpoint are never published; the run that resumes logs them
again. A run that ends the job publishes what it still holds with the final status.

Segments are named by their first step, zero-padded, so TensorBoard (which reads the
files of a run folder in name order) reads them in step order.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.plugins.hparams.summary_v2 import hparams_pb
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.util.tensor_util import make_tensor_proto

ROLE = "tensorboard"
"""The output role of a job's event files."""
SEGMENT_PREFIX = "events.out.tfevents."
STEP_DIGITS = 12
STEP_TAG_PREFIX = "step/"
"""Per-step values (a train step's losses) go under step/<name>; a metrics event's
values (epoch means, quality metrics) under their own name."""
FILE_VERSION = "brain.Event:2"


def segment_name(first_step: int) -> str:
    return f"{SEGMENT_PREFIX}{first_step:0{STEP_DIGITS}d}.atelier"


@dataclass(frozen=True)
class Segment:
    name: str
    data: bytes
    records: int
    """How many held records it holds (the first `records` are dropped once recorded)."""
    last_step: int


class Summaries:
    """The records a run has logged and not yet published, in the order logged."""

    def __init__(self) -> None:
        self._records: list[tuple[int, bytes]] = []

    def clear(self) -> None:
        self._records.clear()

    def scalars(self, values: Mapping[str, float], step: int, *, per_step: bool = False) -> None:
        prefix = STEP_TAG_PREFIX if per_step else ""
        summary = Summary(
            value=[
                Summary.Value(tag=f"{prefix}{name}", simple_value=float(value))
                for name, value in values.items()
            ]
        )
        if summary.value:
            self._add(step, summary)

    def image(self, tag: str, png: bytes, step: int) -> None:
        width, height = struct.unpack(">II", png[16:24])  # the PNG's IHDR chunk
        colour_type = png[25]
        channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour_type, 3)
        image = Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=png
        )
        self._add(step, Summary(value=[Summary.Value(tag=tag, image=image)]))

    def text(self, tag: str, text: str, step: int) -> None:
        value = Summary.Value(
            tag=tag,
            metadata=text_metadata.create_summary_metadata(display_name=tag, description=""),
            tensor=make_tensor_proto([text.encode()], shape=[1]),
        )
        self._add(step, Summary(value=[value]))

    def hparams(self, spec: Mapping[str, Any], trial: str) -> None:
        """The spec as TensorBoard's hyperparameters (lists and objects as JSON text)."""
        values = {
            name: value if isinstance(value, bool | int | float | str) else json.dumps(value)
            for name, value in spec.items()
            if value is not None
        }
        self._add(0, hparams_pb(values, trial_id=trial))

    def _add(self, step: int, summary: Summary) -> None:
        event = Event(wall_time=time.time(), step=step, summary=summary)
        self._records.append((step, event.SerializeToString()))

    def segment(self) -> Segment | None:
        """An event file of every record held, or None when none is."""
        if not self._records:
            return None
        steps = [step for step, _ in self._records]
        head = Event(wall_time=time.time(), step=min(steps), file_version=FILE_VERSION)
        data = b"".join(
            _framed(record) for record in [head.SerializeToString(), *(r for _, r in self._records)]
        )
        return Segment(segment_name(min(steps)), data, len(self._records), max(steps))

    def published(self, segment: Segment) -> None:
        """Drop the records `segment` holds: they are recorded now."""
        del self._records[: segment.records]


def _framed(data: bytes) -> bytes:
    """One record of TensorFlow's record file format, as event files hold them."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )
