"""REST: POST /slides streams the upload and answers at once; results come by polling."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bcd.config import Settings
from bcd.serving import EndpointSpec, InMemoryEndpointSource, VariantSpec, create_app
from bcd.testing.models import write_tiny_model
from tests.slides.test_readers import DAMAGED_SLIDES


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _client(settings: Settings, tiny_model: Path) -> TestClient:
    spec = EndpointSpec(
        name="ep",
        status="InService",
        config_name="ep-config",
        version=1,
        variants=(VariantSpec("main", "tiny", tiny_model, 1, 1.0),),
    )
    app = create_app(settings, source=InMemoryEndpointSource([spec]), poll_interval_s=0.05)
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    assert app.state.router.wait_ready(10)
    return client


@pytest.fixture
def client(tmp_path: Path, tiny_model: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path / "home", default_endpoint="ep", max_slide_bytes=2_000_000)
    client = _client(settings, tiny_model)
    yield client
    client.__exit__(None, None, None)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", dpi=(6350, 6350))
    return buffer.getvalue()


def _wait(client: TestClient, analysis_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        described = client.get(f"/slides/{analysis_id}").json()
        if described["status"] != "InProgress":
            return described
        time.sleep(0.1)
    raise AssertionError("analysis did not finish")


def test_multipart_upload_with_truth_end_to_end(
    client: TestClient, slide_image: np.ndarray, truth_map: np.ndarray
) -> None:
    truth = io.BytesIO()
    np.save(truth, truth_map)
    answer = client.post(
        "/slides",
        files={
            "slide": ("case.png", _png(slide_image), "image/png"),
            "truth": ("truth.npy", truth.getvalue()),
        },
        data={"threshold": "0.4", "top_k": "5"},
    )
    assert answer.status_code == 202, answer.text
    created = answer.json()
    assert answer.headers["location"] == f"/slides/{created['id']}"
    assert created["status"] == "InProgress" and created["options"]["threshold"] == 0.4
    done = _wait(client, created["id"])
    assert done["status"] == "Completed", done["failure_reason"]
    report = done["report"]
    assert report["model"] == {
        "endpoint": "ep",
        "variant": "main",
        "model": "tiny",
        "decision_threshold": 0.5,
        "slide_context": None,
    }
    assert report["analysis"]["threshold"] == 0.4  # the upload's choice beats the model's
    assert len(report["top_tiles"]) == 5
    assert report["ground_truth"]["annotated_tiles"] == 96
    assert report["ground_truth"]["auc"] > 0.9  # dark tumour: the tiny model sees it
    heatmap = client.get(f"/slides/{created['id']}/heatmap.png")
    assert heatmap.status_code == 200 and heatmap.headers["content-type"] == "image/png"
    pdf = client.get(f"/slides/{created['id']}/report.pdf", params={"download": "true"})
    assert pdf.content.startswith(b"%PDF") and "attachment" in pdf.headers["content-disposition"]
    probabilities = np.load(
        io.BytesIO(client.get(f"/slides/{created['id']}/probabilities.npy").content)
    )
    assert probabilities.shape == (12, 16)
    tile = client.get(f"/slides/{created['id']}/tiles/5/6.png")
    assert Image.open(io.BytesIO(tile.content)).size == (50, 50)
    assert client.get(f"/slides/{created['id']}/tiles/50/6.png").status_code == 400
    assert client.get(f"/slides/{created['id']}/secrets.txt").status_code == 404
    assert [item["id"] for item in client.get("/slides").json()["slides"]] == [created["id"]]
    assert client.delete(f"/slides/{created['id']}").status_code == 204
    assert client.get(f"/slides/{created['id']}").status_code == 404


def test_raw_body_upload(client: TestClient, slide_image: np.ndarray) -> None:
    answer = client.post(
        "/slides",
        content=_png(slide_image),
        headers={"Content-Type": "application/octet-stream"},
        params={"filename": "raw.png", "stride": "25"},
    )
    assert answer.status_code == 202
    done = _wait(client, answer.json()["id"])
    assert done["filename"] == "raw.png" and done["report"]["analysis"]["stride"] == 25


BIG = b"\0" * 2_100_000
SMALL = ("x.png", b"123")


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"files": {"slide": ("big.png", BIG)}}, 413, "payload_too_large"),
        ({"content": BIG, "headers": {"Content-Type": "image/png"}}, 413, "payload_too_large"),
        ({"files": {"other": SMALL}}, 400, "invalid_input"),
        ({"files": {"slide": SMALL}, "data": {"threshold": "high"}}, 400, "invalid_input"),
        ({"files": {"slide": SMALL}, "data": {"stride": "0"}}, 400, "invalid_input"),
        ({"files": {"slide": SMALL}, "data": {"context": "maybe"}}, 400, "invalid_input"),
        ({"files": {"slide": SMALL}, "data": {"endpoint": "no spaces"}}, 400, "invalid_input"),
        ({"files": {"slide": SMALL, "truth": ("t.npy", b"junk")}}, 400, "invalid_input"),
    ],
    ids=["too-big-multipart", "too-big-raw", "no-slide-part", "bad-threshold", "bad-stride",
         "bad-context", "bad-endpoint", "bad-truth"],
)  # fmt: skip
def test_bad_uploads_get_clear_errors(
    client: TestClient, kwargs: dict[str, Any], status: int, code: str
) -> None:
    answer = client.post("/slides", **kwargs)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    uploads = Path(client.app.state.settings.home) / "slides" / ".uploads"  # type: ignore[attr-defined]
    assert not list(uploads.glob("*"))


def test_corrupt_slide_fails_with_a_reason(client: TestClient) -> None:
    answer = client.post("/slides", files={"slide": ("broken.png", b"\x89PNG\r\n\x1a\n garbage")})
    done = _wait(client, answer.json()["id"])
    assert done["status"] == "Failed"
    assert "broken.png could not be decoded" in done["failure_reason"]
    assert client.get(f"/slides/{done['id']}/heatmap.png").status_code == 409


def test_keys_are_required_when_the_server_requires_them(tmp_path: Path, tiny_model: Path) -> None:
    settings = Settings(home=tmp_path / "home", default_endpoint="ep", require_api_key=True)
    client = _client(settings, tiny_model)
    try:
        assert client.get("/slides").status_code == 401
        assert client.post("/slides", content=b"x").status_code == 401
        some = "0" * 32
        for path in ("dzi", "dzi_files/0/0_0.jpeg", "overlay.dzi", "viewer", "tiles/0/0.json"):
            assert client.get(f"/slides/{some}/{path}").status_code == 401, path
    finally:
        client.__exit__(None, None, None)


def test_the_web_app_is_served_at_root(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "not a diagnostic device" in page.text
    for asset in ("app.css", "js/app.js", "js/viewer.js", "legend.svg"):
        assert client.get(f"/{asset}").status_code == 200
    assert "https://" not in page.text  # no CDN: every asset is local


@pytest.mark.parametrize(
    ("suffix", "content", "reason"),
    [case[1:] for case in DAMAGED_SLIDES],
    ids=[case[0] for case in DAMAGED_SLIDES],
)
def test_slides_with_impossible_headers_fail_with_a_reason(
    client: TestClient, suffix: str, content: bytes, reason: str
) -> None:
    answer = client.post("/slides", files={"slide": (f"upload{suffix}", content)})
    assert answer.status_code == 202, answer.text
    done = _wait(client, answer.json()["id"])
    assert done["status"] == "Failed"
    assert reason in done["failure_reason"]
    assert done["failure_reason"].startswith(f"upload{suffix} ")  # the upload's own name
    assert "internal error" not in done["failure_reason"]


BOUNDARY = "slideBoundary42"
PART_HEAD = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="slide"; filename="a.png"'


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=" + "B" * 300, b"x"),
        ("multipart/form-data; boundary=" + "B" * 71, b"x"),
        ("multipart/form-data", b"--x\r\n\r\n--x--\r\n"),
        (f"multipart/form-data; boundary={BOUNDARY}", b"hello, a body without its boundary"),
        (f"multipart/form-data; boundary={BOUNDARY}",
         PART_HEAD.replace("form-data", "form\0data").encode() + b"\r\n\r\nslide\r\n"
         + f"--{BOUNDARY}--\r\n".encode()),
        (f"multipart/form-data; boundary={BOUNDARY}",
         PART_HEAD.replace("\r\n", "\n").encode() + b"\n\nslide\n" + f"--{BOUNDARY}--\n".encode()),
        (f"multipart/form-data; boundary={BOUNDARY}",
         PART_HEAD.encode() + b"\r\n\r\n" + b"slide bytes, then the body ends" * 5000),
    ],
    ids=["boundary-300", "boundary-71", "no-boundary-parameter", "no-boundary-in-body",
         "nul-in-part-header", "lf-only", "truncated"],
)  # fmt: skip
def test_malformed_multipart_is_refused_with_400(
    client: TestClient, content_type: str, body: bytes
) -> None:
    answer = client.post("/slides", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_input"
    uploads = Path(client.app.state.settings.home) / "slides" / ".uploads"  # type: ignore[attr-defined]
    assert not list(uploads.glob("*"))
    assert client.get("/slides").json()["slides"] == []


def test_a_client_that_disconnects_mid_upload_logs_one_line(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    import anyio

    app = client.app
    head = f"{PART_HEAD}\r\nContent-Type: image/png\r\n\r\n".encode()
    messages = [
        {"type": "http.request", "body": head + b"\x89PNG" + b"\0" * 5000, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/slides", "raw_path": b"/slides", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
        "headers": [(b"host", b"testserver"),
                    (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
                    (b"content-length", b"500000")],
    }  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        anyio.run(app, scope, receive, send)  # raises nothing to the server
    assert sent[0]["status"] == 400
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not [record for record in caplog.records if record.exc_info]
    disconnects = [record for record in caplog.records if "disconnected" in record.getMessage()]
    assert len(disconnects) == 1
    uploads = Path(app.state.settings.home) / "slides" / ".uploads"  # type: ignore[attr-defined]
    assert not list(uploads.glob("*"))


@pytest.mark.parametrize("name", ["a.p\x00ng", "case\n.png", "\x1b[31m.png"], ids=repr)
def test_file_names_with_control_characters_are_refused(
    client: TestClient, slide_image: np.ndarray, name: str
) -> None:
    raw = client.post(
        "/slides",
        content=_png(slide_image),
        headers={"Content-Type": "image/png"},
        params={"filename": name},
    )
    assert raw.status_code == 400, raw.text
    assert "control characters" in raw.json()["error"]["message"]
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="slide"; filename="{name}"'
    body = head.encode() + b"\r\n\r\n" + _png(slide_image) + f"\r\n--{BOUNDARY}--\r\n".encode()
    form = client.post(
        "/slides",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert form.status_code == 400, form.text
    uploads = Path(client.app.state.settings.home) / "slides" / ".uploads"  # type: ignore[attr-defined]
    assert not list(uploads.glob("*"))
    assert client.get("/slides").json()["slides"] == []


# -- deep zoom, exports ------------------------------------------------------

PYRAMID_MPP = 1.0  # µm per level-0 pixel: one 50 px model tile is 200 level-0 pixels


def write_pyramidal_tiff(path: Path, image: np.ndarray, upscale: int = 4) -> Path:
    """A JPEG-tiled pyramidal TIFF (SubIFDs, 1 µm/px) of ``image`` enlarged ``upscale`` times.

    Levels: full size, /4 (the model's 4 µm/px) and /16.
    """
    import tifffile

    full = np.repeat(np.repeat(image, upscale, axis=0), upscale, axis=1)
    options: dict[str, Any] = {"tile": (256, 256), "compression": "jpeg", "photometric": "rgb"}
    with tifffile.TiffWriter(path) as writer:
        writer.write(
            full,
            subifds=2,
            resolution=(10_000 / PYRAMID_MPP, 10_000 / PYRAMID_MPP),
            resolutionunit="CENTIMETER",
            **options,
        )
        for factor in (4, 16):
            reduced = Image.fromarray(full).reduce(factor)
            writer.write(np.asarray(reduced), subfiletype=1, **options)
    return path


@pytest.fixture
def pyramid_analysis(
    client: TestClient, slide_image: np.ndarray, truth_map: np.ndarray, tmp_path: Path
) -> str:
    """A completed analysis of a 3200 x 2400 pyramidal TIFF, with ground truth."""
    path = write_pyramidal_tiff(tmp_path / "case.tif", slide_image)
    client.app.state.settings.max_slide_bytes = 50_000_000  # type: ignore[attr-defined]
    truth = io.BytesIO()
    np.save(truth, np.repeat(np.repeat(truth_map, 4, axis=0), 4, axis=1))  # 50 level-0 px cells
    answer = client.post(
        "/slides",
        files={"slide": ("case.tif", path.read_bytes()), "truth": ("truth.npy", truth.getvalue())},
    )
    assert answer.status_code == 202, answer.text
    done = _wait(client, answer.json()["id"])
    assert done["status"] == "Completed", done["failure_reason"]
    return str(done["id"])


def _image(answer: Any) -> Image.Image:
    return Image.open(io.BytesIO(answer.content))


def test_deep_zoom_descriptors_tiles_and_caching(
    client: TestClient, pyramid_analysis: str, slide_image: np.ndarray
) -> None:
    import xml.etree.ElementTree as ET

    base = f"/slides/{pyramid_analysis}"
    described = client.get(base + "/dzi")
    assert described.status_code == 200 and "xml" in described.headers["content-type"]
    assert described.headers["cache-control"] == "private, max-age=86400"
    root = ET.fromstring(described.text)
    assert root.tag == "{http://schemas.microsoft.com/deepzoom/2008}Image"
    assert root.attrib == {"Format": "jpeg", "Overlap": "1", "TileSize": "254"}
    assert root[0].attrib == {"Width": "3200", "Height": "2400"}
    # 2^12 = 4096 >= 3200: level 12 is full size, 13 x 10 tiles of 254 px plus overlap.
    first = client.get(base + "/dzi_files/12/0_0.jpeg")
    assert first.headers["content-type"] == "image/jpeg"
    assert first.headers["cache-control"] == "private, max-age=86400"
    assert _image(first).size == (255, 255)  # overlap on the right and bottom only
    assert _image(client.get(base + "/dzi_files/12/1_1.jpeg")).size == (256, 256)
    assert _image(client.get(base + "/dzi_files/12/12_9.jpeg")).size == (3200 - 3047, 2400 - 2285)
    assert _image(client.get(base + "/dzi_files/0/0_0.jpeg")).size == (1, 1)
    assert _image(client.get(base + "/dzi_files/8/0_0.jpeg")).size == (200, 150)
    # Full resolution shows the slide's pixels: the tumour (rows 200-400, cols 250-500
    # of the synthetic slide, x4) is dark purple where glass is white.
    tumour = np.asarray(_image(client.get(base + "/dzi_files/12/5_4.jpeg")), dtype=float)
    expected = slide_image[254:318, 317:381].astype(float)  # its box x 1269-1525, y 1015-1271
    assert abs(tumour.mean(axis=(0, 1)) - expected.mean(axis=(0, 1))).max() < 4
    glass = np.asarray(_image(client.get(base + "/dzi_files/12/0_0.jpeg")), dtype=float)
    assert glass.mean() > 240
    views = client.app.state.deep_zoom_views  # type: ignore[attr-defined]
    cached = len(views.cache)
    assert client.get(base + "/dzi_files/12/0_0.jpeg").content == first.content
    assert len(views.cache) == cached  # answered from the cache


def test_overlay_and_truth_layers(client: TestClient, pyramid_analysis: str) -> None:
    import xml.etree.ElementTree as ET

    base = f"/slides/{pyramid_analysis}"
    for layer in ("overlay", "truth"):
        root = ET.fromstring(client.get(f"{base}/{layer}.dzi").text)
        assert root.attrib["Format"] == "png"
        assert root[0].attrib == {"Width": "3200", "Height": "2400"}
    whole = _image(client.get(base + "/overlay_files/8/0_0.png"))
    assert whole.mode == "RGBA" and whole.size == (200, 150)
    pixels = np.asarray(whole)
    # One grid cell is 200 level-0 px, 12.5 px at level 8 (16x smaller).
    assert pixels[5, 5, 3] == 0  # glass border: not scored, transparent
    tumour = pixels[int(5.5 * 12.5), int(7.5 * 12.5)]
    assert tumour[3] == 255 and tumour[0] > tumour[2]  # scored, red (IDC)
    stroma = pixels[int(2.5 * 12.5), int(2.5 * 12.5)]
    assert stroma[3] == 255 and stroma[2] > stroma[0]  # scored, blue
    strict = np.asarray(_image(client.get(base + "/overlay_files/8/0_0.png?threshold=0.9")))
    assert strict[int(2.5 * 12.5), int(2.5 * 12.5), 3] == 0  # below the threshold: hidden
    assert (strict[..., 3] > 0).sum() < (pixels[..., 3] > 0).sum()
    truth = np.asarray(_image(client.get(base + "/truth_files/8/0_0.png")))
    assert tuple(truth[int(5.5 * 12.5), int(7.5 * 12.5)]) == (215, 25, 28, 255)
    assert tuple(truth[int(2.5 * 12.5), int(2.5 * 12.5)]) == (44, 123, 182, 255)
    assert truth[5, 5, 3] == 0  # not annotated
    full = _image(client.get(base + "/overlay_files/12/4_3.png"))
    assert full.size == (256, 256)


def test_viewer_facts_and_tile_scores(client: TestClient, pyramid_analysis: str) -> None:
    base = f"/slides/{pyramid_analysis}"
    facts = client.get(base + "/viewer").json()
    assert facts["width"] == 3200 and facts["height"] == 2400 and facts["max_level"] == 12
    assert facts["grid"] == {"rows": 12, "cols": 16, "cell": 200.0, "footprint": 200}
    assert facts["truth"] == base + "/truth.dzi" and facts["slide"] == base + "/dzi"
    tumour = client.get(base + "/tiles/5/7.json").json()
    assert tumour["x"] == 1400 and tumour["y"] == 1000 and tumour["width"] == 200
    assert tumour["tissue"] and tumour["idc"] and tumour["truth"] == 1
    assert tumour["probability"] >= tumour["threshold"]
    assert tumour["tile_probability"] == tumour["probability"]  # no slide context
    glass = client.get(base + "/tiles/0/0.json").json()
    assert not glass["tissue"] and glass["probability"] is None and glass["truth"] is None


def test_regions_geojson_and_tiles_csv(client: TestClient, pyramid_analysis: str) -> None:
    import csv

    base = f"/slides/{pyramid_analysis}"
    answer = client.get(base + "/regions.geojson", params={"download": "true"})
    assert answer.headers["content-type"] == "application/geo+json"
    assert "attachment" in answer.headers["content-disposition"]
    collection = answer.json()
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) >= 1
    biggest = max(collection["features"], key=lambda f: f["properties"]["measurements"]["Tiles"])
    properties = biggest["properties"]
    assert properties["objectType"] == "annotation"
    assert properties["classification"] == {"name": "IDC", "color": [215, 25, 28]}
    assert biggest["geometry"]["type"] in ("Polygon", "MultiPolygon")
    # The tumour: grid rows 4-7, cols 5-9, in level-0 pixels (200 px cells).
    points = np.array(biggest["geometry"]["coordinates"][0])
    assert points[:, 0].min() >= 1000 and points[:, 0].max() <= 2000
    assert points[:, 1].min() >= 800 and points[:, 1].max() <= 1600
    measured = properties["measurements"]
    assert measured["Area µm^2"] == pytest.approx(measured["Tiles"] * 200 * 200, rel=1e-6)
    table = client.get(base + "/tiles.csv")
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    report = client.get(base).json()["report"]
    assert len(rows) == report["tiles"]["tissue"]
    assert sum(int(row["idc"]) for row in rows) == report["tiles"]["idc_positive"]
    tumour = next(row for row in rows if (row["row"], row["col"]) == ("5", "7"))
    assert tumour["x"] == "1400" and tumour["truth"] == "1"


def test_deep_zoom_errors(client: TestClient, pyramid_analysis: str) -> None:
    unknown = "0" * 32
    for path in (
        "/dzi", "/dzi_files/12/0_0.jpeg", "/overlay.dzi", "/overlay_files/8/0_0.png",
        "/viewer", "/tiles/5/7.json", "/regions.geojson", "/tiles.csv",
    ):  # fmt: skip
        answer = client.get(f"/slides/{unknown}{path}")
        assert answer.status_code == 404, path
        assert answer.json()["error"]["code"] == "not_found"
    base = f"/slides/{pyramid_analysis}"
    for path in (
        "/dzi_files/13/0_0.jpeg",  # past the full-resolution level
        "/dzi_files/-1/0_0.jpeg",
        "/dzi_files/12/13_0.jpeg",  # level 12 has 13 columns: 0..12
        "/dzi_files/12/0_10.jpeg",
        "/dzi_files/x/0_0.jpeg",
        "/overlay_files/8/1_0.png",  # level 8 is a single tile
        "/overlay_files/8/0_0.png?threshold=2",
        "/tiles/12/0.json",
        "/tiles/0/-1.json",
    ):
        answer = client.get(base + path)
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["error"]["code"] == "invalid_input"
    assert client.get(base + "/contours.dzi").status_code == 404
    assert client.get(base + "/contours_files/8/0_0.png").status_code == 404
    assert client.delete(base).status_code == 204
    assert client.get(base + "/dzi").status_code == 404
    assert client.get(base + "/dzi_files/12/0_0.jpeg").status_code == 404
