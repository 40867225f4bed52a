"""Scanner-format slide files written at test time from one synthetic pyramid.

Every writer stores the same pixels (:func:`scanner_levels`: 0.25 µm/px, a 40x
scan, with levels at 4x and 16x, the last at the model's 4 µm/px) in one
format: a PNG with its resolution in ``pHYs``, a pyramidal JPEG-tiled TIFF
with resolution tags, an Aperio-style SVS, and a DICOM VL Whole Slide
Microscopy series written with wsidicom. Each file stays near 1 MB.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

#: Microns per level-0 pixel of the synthetic scan (40x).
SCAN_MPP = 0.25
#: Level-0 size ``(width, height)`` and the downsample of every level.
SCAN_SIZE = (4096, 3072)
SCAN_DOWNSAMPLES = (1, 4, 16)
_TILE = 256
_GLASS, _TISSUE, _TUMOUR = (250, 250, 250), (220, 150, 200), (110, 50, 140)


def scanner_levels() -> list[np.ndarray]:
    """The synthetic scan's pyramid, level 0 first, each level box-averaged from the last.

    At 4 µm/px (level 2, 256x192) it is a 5x3 grid of 50 px tiles: glass at
    the border, stroma, and a dark tumour block; level 0 adds a fine texture
    so that the levels differ in detail, as a real scan's do.
    """
    width, height = SCAN_SIZE
    coarse = np.empty((height // 16, width // 16, 3), np.uint8)
    coarse[:] = _GLASS
    coarse[30:160, 30:220] = _TISSUE
    coarse[60:120, 80:160] = _TUMOUR
    rows, cols = np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32)
    texture = np.outer(8 * np.cos(rows / 7), np.sin(cols / 5)).astype(np.int16)
    level0 = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1).astype(np.int16)
    levels = [np.clip(level0 + texture[..., None], 0, 255).astype(np.uint8)]
    for previous, factor in itertools.pairwise(SCAN_DOWNSAMPLES):
        levels.append(np.asarray(Image.fromarray(levels[-1]).reduce(factor // previous)))
    return levels


def write_png(path: Path, levels: list[np.ndarray]) -> Path:
    """Level 0 as a PNG whose ``pHYs`` says 0.25 µm/px (101,600 dpi)."""
    dpi = 25_400 / SCAN_MPP
    Image.fromarray(levels[0]).save(path, dpi=(dpi, dpi), compress_level=6)
    return path


_JPEG_TILES: dict[str, Any] = {
    "tile": (_TILE, _TILE),
    "compression": "jpeg",
    "compressionargs": {"level": 90},
    "photometric": "rgb",
    "metadata": None,
}


def write_pyramid_tiff(path: Path, levels: list[np.ndarray]) -> Path:
    """A generic pyramidal TIFF: JPEG tiles, reduced pages after level 0, resolution tags."""
    pixels_per_cm = 10_000 / SCAN_MPP
    with tifffile.TiffWriter(path) as writer:
        writer.write(
            levels[0],
            resolution=(pixels_per_cm, pixels_per_cm),
            resolutionunit="CENTIMETER",
            **_JPEG_TILES,
        )
        for level in levels[1:]:
            writer.write(level, subfiletype=1, **_JPEG_TILES)
    return path


def write_svs(path: Path, levels: list[np.ndarray]) -> Path:
    """An Aperio-style SVS: tiled JPEG levels, a stripped thumbnail second, ``MPP`` in the text.

    OpenSlide recognises it as ``aperio`` by the first ImageDescription, which
    starts with "Aperio Image Library" and holds ``|MPP = 0.25``.
    """
    width, height = SCAN_SIZE

    def description(level: np.ndarray) -> str:
        size = f"{width}x{height}"
        shape = f"{level.shape[1]}x{level.shape[0]}"
        head = (
            f"{size} [0,0 {size}] ({_TILE}x{_TILE}) JPEG/RGB Q=90"
            if shape == size
            else (f"{size} -> {shape} - ")
        )
        return f"Aperio Image Library v12.0.15 \r\n{head}|AppMag = 40|MPP = {SCAN_MPP}"

    with tifffile.TiffWriter(path) as writer:
        writer.write(levels[0], description=description(levels[0]), **_JPEG_TILES)
        thumbnail = levels[-1]
        writer.write(
            thumbnail,
            description=description(thumbnail),
            compression="jpeg",
            photometric="rgb",
            metadata=None,
        )
        for level in levels[1:]:
            writer.write(level, description=description(level), **_JPEG_TILES)
    return path


def write_dicom(folder: Path, levels: list[np.ndarray]) -> list[Path]:
    """A DICOM VL Whole Slide Microscopy series, one JPEG-tiled file per level, via wsidicom.

    Returns:
        The written files, level 0 first.
    """
    import pydicom
    from wsidicom import WsiDicom

    folder.mkdir(parents=True, exist_ok=True)
    with WsiDicom(_array_source(levels)) as slide:
        written = slide.save(folder, workers=1, include_labels=False, include_overviews=False)
    files = [Path(str(path)) for path in written]

    def width(path: Path) -> int:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        return int(header.TotalPixelMatrixColumns)

    return sorted(files, key=width, reverse=True)


def _source_classes() -> tuple[type, type]:
    """wsidicom's ``ImageData`` and ``Source`` adapters, defined only when wsidicom is there."""
    from pydicom.uid import JPEGBaseline8Bit, generate_uid
    from wsidicom.codec import Encoder
    from wsidicom.geometry import Size, SizeMm
    from wsidicom.instance import ImageData, WsiDataset, WsiInstance
    from wsidicom.metadata import (
        Equipment,
        Label,
        Patient,
        Pyramid,
        Series,
        Slide,
        Study,
        WsiMetadata,
    )
    from wsidicom.metadata import Image as ImageMetadata
    from wsidicom.metadata.image import ImageType
    from wsidicom.metadata.sample import SlideSample
    from wsidicom.metadata.schema.dicom import WsiMetadataDicomSchema
    from wsidicom.source import Source

    photometric = "YBR_FULL_422"

    class ArrayTiles(ImageData):  # type: ignore[misc]
        """One level held in memory, cut into JPEG tiles on request."""

        def __init__(self, pixels: np.ndarray, mpp: float) -> None:
            self._pixels, self._mpp = pixels, mpp
            super().__init__(Encoder.create(JPEGBaseline8Bit, 8, photometric))

        transfer_syntax = property(lambda self: JPEGBaseline8Bit)
        image_size = property(lambda self: Size(self._pixels.shape[1], self._pixels.shape[0]))
        tile_size = property(lambda self: Size(_TILE, _TILE))
        pixel_spacing = property(lambda self: SizeMm(self._mpp / 1000, self._mpp / 1000))
        imaged_size = property(lambda self: None)
        samples_per_pixel = property(lambda self: 3)
        bits = property(lambda self: 8)
        photometric_interpretation = property(lambda self: photometric)
        image_coordinate_system = property(lambda self: None)
        thread_safe = property(lambda self: True)
        lossy_compression = property(lambda self: None)
        transcoder = property(lambda self: None)

        def get_decoded_tile(
            self, tile_point: Any, z: float, path: str, cache: bool = True
        ) -> np.ndarray:
            tile = np.full((_TILE, _TILE, 3), 255, np.uint8)
            top, left = tile_point.y * _TILE, tile_point.x * _TILE
            part = self._pixels[top : top + _TILE, left : left + _TILE]
            tile[: part.shape[0], : part.shape[1]] = part
            return tile

        def get_encoded_tile(self, tile: Any, z: float, path: str) -> bytes:
            return bytes(self.encoder.encode(self.get_decoded_tile(tile, z, path)))

    class ArraySource(Source):  # type: ignore[misc]
        """The levels as wsidicom instances of one series, with minimal slide metadata."""

        def __init__(self, levels: list[np.ndarray]) -> None:
            super().__init__()
            metadata = WsiMetadata(
                study=Study(uid=generate_uid()),
                series=Series(uid=generate_uid()),
                patient=Patient(),
                equipment=Equipment(),
                slide=Slide(
                    identifier="synthetic",
                    samples=[SlideSample(identifier="sample", uid=generate_uid())],
                ),
                pyramid=Pyramid(image=ImageMetadata(), optical_paths=[], uid=generate_uid()),
                label=Label(),
                frame_of_reference_uid=generate_uid(),
                dimension_organization_uids=[generate_uid()],
            )
            dataset = WsiMetadataDicomSchema().dump(metadata, ImageType.VOLUME, True)
            self._base = WsiDataset(dataset)
            self._levels = [
                WsiInstance.create_instance(
                    ArrayTiles(level, SCAN_MPP * levels[0].shape[1] / level.shape[1]),
                    copy.deepcopy(dataset),
                    ImageType.VOLUME,
                    index,
                )
                for index, level in enumerate(levels)
            ]

        base_dataset = property(lambda self: self._base)
        level_instances = property(lambda self: self._levels)
        label_instances = property(lambda self: [])
        overview_instances = property(lambda self: [])
        thumbnail_instances = property(lambda self: [])
        annotation_instances = property(lambda self: [])

        def close(self) -> None:
            pass

    return ArrayTiles, ArraySource


def _array_source(levels: list[np.ndarray]) -> Any:
    """A wsidicom ``Source`` over in-memory levels (what wsidicom's writer reads from)."""
    return _source_classes()[1](levels)
