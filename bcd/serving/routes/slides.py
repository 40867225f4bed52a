"""``/slides``: whole-slide analysis, asynchronous like SageMaker's async inference.

``POST /slides`` streams the upload to disk (up to ``BCD_MAX_SLIDE_BYTES``),
unpacks a zipped DICOM series (:mod:`bcd.slides._archives`), queues the
analysis and answers ``202`` with its id at once; ``GET
/slides/{id}`` reports status, progress and, when done, the report; the
outputs (heatmap, overlay, report PDF/PNG/JSON, probability map) and single
tiles are served from there; ``DELETE /slides/{id}`` removes everything (and
stops a running analysis). The work itself is :class:`bcd.slides.SlideAnalysisService`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from bcd.errors import InvalidInputError, PayloadTooLargeError
from bcd.serving.deps import ApiKeyDep, SettingsDep

if TYPE_CHECKING:
    # Imported when first used: the slide pipeline is not needed to start
    # the server or to answer the scoring routes.
    from bcd.serving._multipart import MultipartStream
    from bcd.slides import AnalysisOptions, SlideAnalysisService

logger = logging.getLogger(__name__)
router = APIRouter(tags=["slides"])

_service_lock = threading.Lock()
_MAX_TRUTH_BYTES = 16 * 1024**2
_MAX_FIELD_BYTES = 1024
_MEDIA = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".pdf": "application/pdf",
    ".json": "application/json",
    ".npy": "application/octet-stream",
    ".geojson": "application/geo+json",
    ".csv": "text/csv; charset=utf-8",
}


def _predictor_factory(app: Any) -> Any:
    """Score tiles through the app's loaded endpoints: the same runtime as the API."""
    endpoints = app.state.router

    def predictor_for(endpoint: str) -> tuple[Any, dict[str, Any]]:
        if not endpoints.has(endpoint) and endpoints.needs_refresh(endpoint):
            endpoints.refresh(endpoint)
        with endpoints.use(endpoint) as loaded:
            variant = endpoints.choose_for_slides(loaded)
            variant_name, model_name = variant.name, variant.model_name
            decision_threshold = variant.runtime.spec.decision_threshold
            context = variant.runtime.spec.slide_context
            model_dir = str(variant.runtime.spec.directory)

        def predict(tiles: Any) -> Any:
            with endpoints.use(endpoint) as loaded:
                chosen = loaded.variants.get(variant_name) or endpoints.choose_for_slides(loaded)
                return chosen.runtime.predict(list(tiles))

        return predict, {
            "endpoint": endpoint,
            "variant": variant_name,
            "model": model_name,
            "decision_threshold": decision_threshold,
            "slide_context": context.to_json() if context else None,
            # For Grad-CAM of the report's top tiles; the service keeps it out of the report.
            "model_dir": model_dir,
        }

    return predictor_for


def get_slide_service(request: Request) -> SlideAnalysisService:
    """The app's slide service, started on first use (it marks interrupted analyses Failed)."""
    app = request.app
    service = getattr(app.state, "slide_service", None)
    if service is None:
        with _service_lock:
            service = getattr(app.state, "slide_service", None)
            if service is None:
                from bcd.slides import SlideAnalysisService

                service = SlideAnalysisService(app.state.settings, _predictor_factory(app))
                app.state.slide_service = service
    return service


SlideServiceDep = Annotated[Any, Depends(get_slide_service)]


class _Upload:
    """Streams a ``multipart/form-data`` body: the slide part to disk, small parts to memory."""

    def __init__(self, staged: Path, limit: int) -> None:
        self.staged = staged
        self.limit = limit
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.content_type = ""
        self.truth: bytes | None = None
        self._handle: Any = None
        self._headers: dict[bytes, bytes] = {}
        self._field = self._value = b""
        self._name = ""
        self._buffer = bytearray()
        self.written = 0
        self._target = ""

    def parser(self, boundary: bytes) -> MultipartStream:
        """A streaming parser feeding this upload (malformed bodies: ``InvalidInputError``)."""
        from bcd.serving._multipart import MultipartStream

        return MultipartStream(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
                "on_part_end": self._end,
            },
        )

    def _begin(self) -> None:
        self._headers, self._field, self._value = {}, b"", b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        self._buffer = bytearray()
        if self._name in ("slide", "file") and filename is not None:
            if self._handle is not None:
                raise InvalidInputError("send one slide per request")
            self.filename = _upload_filename(filename.decode("utf-8", "replace"))
            media, _ = parse_options_header(self._headers.get(b"content-type", b""))
            self.content_type = media.decode("latin-1").lower()
            self._handle = open(self.staged, "wb")  # noqa: SIM115 - closed in _end / close()
            self._target = "slide"
        elif self._name == "truth":
            self._target = "truth"
        else:
            self._target = "field"

    def _data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._target == "slide":
            self.written += len(chunk)
            if self.written > self.limit:
                raise PayloadTooLargeError(_too_large(self.limit))
            self._handle.write(chunk)
            return
        self._buffer += chunk
        cap = _MAX_TRUTH_BYTES if self._target == "truth" else _MAX_FIELD_BYTES
        if len(self._buffer) > cap:
            raise PayloadTooLargeError(f"form part {self._name!r} is over {cap} bytes")

    def _end(self) -> None:
        if self._target == "slide":
            self._handle.close()
        elif self._target == "truth":
            self.truth = bytes(self._buffer) or None
        elif len(self.fields) < 32:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")
        self._target = ""

    def close(self) -> None:
        if self._handle is not None and not self._handle.closed:
            self._handle.close()


def _upload_filename(name: str) -> str:
    """An upload's file name, as the client sent it, refused if it holds control characters.

    Raises:
        InvalidInputError: The name holds NUL or another control character.
    """
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in name):
        raise InvalidInputError(
            "the slide's file name holds control characters; rename the file and upload it again"
        )
    return name


def _too_large(limit: int) -> str:
    return (
        f"the slide is over the {limit / 1024**3:.2f} GB upload limit (BCD_MAX_SLIDE_BYTES); "
        "raise the limit on the server or analyse it with `bcd slide analyze`"
    )


async def _receive(request: Request, service: SlideAnalysisService, limit: int) -> _Upload:
    """Stream the request body into a staged file; raw bodies and multipart forms alike."""
    from python_multipart.multipart import parse_options_header
    from starlette.requests import ClientDisconnect

    from bcd.serving._multipart import boundary_of

    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 1024**2:
        raise PayloadTooLargeError(_too_large(limit))
    upload = _Upload(service.staging_path(), limit)
    content_type, _ = parse_options_header(request.headers.get("content-type", ""))
    try:
        if content_type == b"multipart/form-data":
            parser = upload.parser(boundary_of(request.headers.get("content-type", "")))
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finish()
            if upload.filename is None:
                raise InvalidInputError(
                    "no slide in the form; send the file in a part named 'slide'"
                )
        else:
            upload.filename = _upload_filename(request.query_params.get("filename") or "slide")
            upload.content_type = content_type.decode("latin-1").lower()
            with open(upload.staged, "wb") as handle:
                async for chunk in request.stream():
                    upload.written += len(chunk)
                    if upload.written > limit:
                        raise PayloadTooLargeError(_too_large(limit))
                    handle.write(chunk)
    except ClientDisconnect as error:
        upload.close()
        upload.staged.unlink(missing_ok=True)
        # Nobody is left to answer: one line in the log, no traceback.
        logger.info("slide upload abandoned: the client disconnected mid-upload")
        raise InvalidInputError("the client disconnected before the upload finished") from error
    except BaseException:
        upload.close()
        upload.staged.unlink(missing_ok=True)
        raise
    return upload


def _unpack_series(upload: _Upload, settings: Any) -> Path:
    """The staged slide, or the folder its zipped DICOM series unpacks to (the zip deleted).

    A zip is what the client declared (``application/zip``, a ``*.zip`` name) or
    what the body starts as.

    Raises:
        InvalidArchiveError: A zip that is not a readable, single DICOM WSI series.
        ArchiveTooLargeError: Over ``BCD_MAX_ARCHIVE_ENTRIES`` / ``BCD_MAX_ARCHIVE_BYTES``.
    """
    from bcd.slides._archives import (
        ZIP_MEDIA_TYPES,
        ArchiveLimits,
        extract_dicom_series,
        is_zip_name,
        looks_like_zip,
    )

    declared = upload.content_type in ZIP_MEDIA_TYPES or is_zip_name(upload.filename)
    if not declared and not looks_like_zip(upload.staged):
        return upload.staged
    folder = upload.staged.with_suffix(".series")
    try:
        return extract_dicom_series(
            upload.staged,
            folder,
            ArchiveLimits.from_settings(settings),
            name=f"the upload {Path(upload.filename or 'slide').name!r}",
        )
    finally:
        upload.staged.unlink(missing_ok=True)


def _options(values: dict[str, str]) -> AnalysisOptions:
    """Analysis options from form fields or query parameters (strings)."""
    numbers = {
        "stride": int,
        "threshold": float,
        "mpp": float,
        "model_mpp": float,
        "min_tissue_fraction": float,
        "tissue_threshold": float,
        "top_k": int,
    }
    chosen: dict[str, Any] = {}
    for name, kind in numbers.items():
        raw = (values.get(name) or "").strip()
        if raw:
            try:
                chosen[name] = kind(raw)
            except ValueError as error:
                raise InvalidInputError(f"{name}={raw!r} is not a number") from error
    for name in ("detect_tissue", "context"):
        flag = (values.get(name) or "").strip().lower()
        if flag:
            if flag not in ("true", "false", "1", "0"):
                raise InvalidInputError(f"{name}={flag!r} must be true or false")
            chosen[name] = flag in ("true", "1")
    from bcd.slides import AnalysisOptions

    return AnalysisOptions(**chosen).validate()


@router.post("/slides", status_code=202, summary="Upload a slide and start its analysis")
async def create_slide_analysis(
    request: Request,
    service: SlideServiceDep,
    settings: SettingsDep,
    _key: ApiKeyDep,
) -> JSONResponse:
    """Upload a slide (raw body, or ``multipart/form-data`` with parts ``slide`` and
    optionally ``truth``); the analysis runs in the background.

    A DICOM whole-slide series comes as one zip of its files (``application/zip``,
    or a part named ``*.zip``); an unsafe, damaged or mixed archive is refused with
    ``400`` (``invalid_archive``, ``unsafe_archive``) and one over the archive limits
    with ``413`` (``archive_too_large``), and nothing of it is kept.

    Options come as form fields or query parameters: ``endpoint`` (default: the
    server's default endpoint), ``stride``, ``threshold``, ``mpp``, ``model_mpp``,
    ``detect_tissue``, ``context``, ``min_tissue_fraction``, ``tissue_threshold``,
    ``top_k``; ``filename`` names a raw-body upload. Answers ``202`` with the analysis id;
    poll ``GET /slides/{id}``. The upload must arrive within ``slide_upload_timeout_s``
    (``504`` otherwise); a slide whose tile grid is over ``max_slide_tiles`` is refused
    (``413``).
    """
    import asyncio

    from bcd.errors import BcdTimeoutError
    from bcd.serving._deadlines import CancelAfter

    try:
        async with CancelAfter(settings.slide_upload_timeout_s):
            upload = await _receive(request, service, settings.max_slide_bytes)
    except TimeoutError as error:
        raise BcdTimeoutError(
            f"the slide upload did not arrive within {settings.slide_upload_timeout_s:g} s "
            "(BCD_SLIDE_UPLOAD_TIMEOUT_S); send it over a faster link or analyse it with "
            "`bcd slide analyze`"
        ) from error
    values = {**dict(request.query_params), **upload.fields}
    try:
        options = _options(values)
    except BaseException:
        upload.staged.unlink(missing_ok=True)
        raise
    endpoint = (values.get("endpoint") or "").strip() or settings.default_endpoint
    # Off the event loop: unpacking a zip, and submitting hashes the whole slide.
    staged = await asyncio.to_thread(_unpack_series, upload, settings)
    described = await asyncio.to_thread(
        service.submit, staged, upload.filename or "slide", endpoint, options, upload.truth
    )
    return JSONResponse(
        described, status_code=202, headers={"Location": f"/slides/{described['id']}"}
    )


@router.get("/slides", summary="List slide analyses, newest first")
def list_slide_analyses(
    service: SlideServiceDep,
    _key: ApiKeyDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Status and summary of recent analyses (no full reports)."""
    return {"slides": service.list(limit)}


@router.get("/slides/{analysis_id}", summary="Status, progress and report of an analysis")
def describe_slide_analysis(
    analysis_id: str, service: SlideServiceDep, _key: ApiKeyDep
) -> dict[str, Any]:
    """``status`` is ``InProgress``, ``Completed`` or ``Failed`` (with ``failure_reason``)."""
    return service.describe(analysis_id)


@router.delete("/slides/{analysis_id}", status_code=204, summary="Delete an analysis")
def delete_slide_analysis(
    analysis_id: str, request: Request, service: SlideServiceDep, _key: ApiKeyDep
) -> Response:
    """Remove the slide, its outputs and its record; stops it if still running."""
    service.delete(analysis_id)
    views = getattr(request.app.state, "deep_zoom_views", None)
    if views is not None:
        views.forget(analysis_id)
    return Response(status_code=204)


@router.get(
    "/slides/{analysis_id}/tiles/{row}/{col}.png",
    summary="One tile of the slide, as the model saw it",
    response_class=Response,
)
def slide_tile(
    analysis_id: str,
    row: int,
    col: int,
    service: SlideServiceDep,
    _key: ApiKeyDep,
) -> Response:
    """The 50x50 tile at grid ``row``, ``col`` (see ``top_tiles`` in the report)."""
    return Response(
        service.tile_png(analysis_id, row, col),
        media_type="image/png",
        headers={"Cache-Control": "private, max-age=3600"},
    )


@router.get(
    "/slides/{analysis_id}/{output}",
    summary="An output: heatmap.png, overlay.png, thumbnail.jpg, report.pdf, report.png, "
    "report.json, probabilities.npy, comparison.png, truth.npy, tile_probabilities.npy, "
    "regions.geojson, tiles.csv",
    response_class=FileResponse,
)
def slide_output(
    analysis_id: str,
    output: str,
    service: SlideServiceDep,
    _key: ApiKeyDep,
    download: Annotated[bool, Query(description="Send as an attachment")] = False,
) -> FileResponse:
    """A file produced by a completed analysis."""
    path = service.output_path(analysis_id, output)
    filename = f"slide-{analysis_id[:8]}-{output}" if download else None
    return FileResponse(
        path,
        media_type=_MEDIA.get(path.suffix, "application/octet-stream"),
        filename=filename,
        headers={"Cache-Control": "private, max-age=3600"},
    )
