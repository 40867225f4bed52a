"""What lets an analysis into the queue, and how queued analyses share the model.

- :func:`planned_grid` lays the tile grid of a stored slide from its header
  (PNG and JPEG are not decoded), so an upload whose grid is over the tile
  limit is refused before it is queued.
- :class:`FairTurns` hands the model to the running analyses one batch of
  tiles at a time, in the order they asked: analyses that run at once take
  turns, so a small slide submitted behind a large one finishes after a few
  of the large one's batches, not after all of them.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bcd.errors import BcdError
from bcd.slides._analysis import AnalysisOptions, Predict
from bcd.slides._grid import TileGrid, plan_grid
from bcd.slides.readers import BaseSlideReader


class _ImageHeader(BaseSlideReader):
    """A PNG's or JPEG's size and resolution, read from its header: enough to plan a grid."""

    format = "image"

    def __init__(self, path: Path) -> None:
        from PIL import Image

        from bcd.slides.readers._pillow import _mpp_from_dpi

        self.path = str(path)
        with Image.open(path) as image:
            self._size = image.size
            self._mpp = _mpp_from_dpi(image.info.get("dpi"))

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return (self._size,)

    @property
    def mpp(self) -> float | None:
        return self._mpp

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        raise NotImplementedError("a header holds no pixels")


def planned_grid(path: Path, options: AnalysisOptions) -> TileGrid | None:
    """The tile grid an analysis of ``path`` will use, or ``None`` if the file cannot be read.

    An unreadable file is left for the analysis to fail with the reader's own reason.
    """
    from PIL import Image

    from bcd.slides.readers import open_slide
    from bcd.slides.readers._factory import sniff_format
    from bcd.slides.readers._openslide import OPENSLIDE_SUFFIXES

    unreadable = (BcdError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)
    try:
        if path.suffix.lower() not in OPENSLIDE_SUFFIXES and sniff_format(path) in ("png", "jpeg"):
            reader: BaseSlideReader = _ImageHeader(path)
        else:
            reader = open_slide(path)
        with reader:
            return plan_grid(
                reader, stride=options.stride, mpp=options.mpp, target_mpp=options.model_mpp
            )
    except unreadable:
        return None


class FairTurns:
    """One caller at a time, in the order they asked (a FIFO lock).

    A caller that finishes its turn and asks again queues behind everyone
    already waiting, so callers that keep asking take turns round-robin.
    Thread-safe.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._waiting: deque[object] = deque()
        self._busy = False

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for this caller's turn and hold it for the ``with`` block."""
        ticket = object()
        with self._condition:
            self._waiting.append(ticket)
            while self._busy or self._waiting[0] is not ticket:
                self._condition.wait()
            self._waiting.popleft()
            self._busy = True
        try:
            yield
        finally:
            with self._condition:
                self._busy = False
                self._condition.notify_all()

    def wrap(self, predict: Predict) -> Predict:
        """``predict``, called in turn with every other wrapped classifier of these turns."""

        def in_turn(tiles: np.ndarray) -> np.ndarray:
            with self.turn():
                return predict(tiles)

        return in_turn
