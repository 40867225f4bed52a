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
