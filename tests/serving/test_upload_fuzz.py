"""Fuzzing both upload routes with generated multipart bodies: never a server error.

``POST /predict-breast-cancer`` and ``POST /slides`` get a few thousand bodies
from a seeded generator: well-formed forms, then the same forms broken the
ways clients and attackers break them (overlong, empty or missing boundaries,
NUL bytes in part headers, LF-only line endings, truncation, flipped bytes,
images that declare huge sizes, thousands of parts, many small files that
decode to 4096×4096 each), and raw slide uploads with random file names and
options. Every answer must be a success or a JSON refusal with a stable code.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bcd.config import Settings
from tests.serving.conftest import png_bytes
from tests.serving.test_decode import flat_png
from tests.serving.test_fuzz import png_with_header

SEED = 20261203
BODIES_PER_ROUTE = 1000
ROUTES = ("/predict-breast-cancer", "/slides")


@dataclass
class Part:
    """One form part: header lines and data."""

    headers: list[bytes]
    data: bytes


@dataclass
class Form:
    """A multipart body under construction, and what was done to it."""

    boundary: bytes
    parts: list[Part]
    steps: list[str] = field(default_factory=list)


class BodyGenerator:
    """Seeded multipart bodies for the upload routes: valid ones, then broken ones."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        colours = np.random.default_rng(seed).integers(0, 256, size=(50, 50, 3), dtype=np.uint8)
        self.patch = png_bytes(colours)
        self.big_file = flat_png(4096, 4096)  # ~49 KB that decode to 48 MiB

    def file_data(self, many: bool) -> tuple[str, bytes]:
        kinds = ["patch", "truncated", "huge-header", "zero-header", "random", "empty"]
        if many:
            kinds.append("big-file")
        kind = self.rng.choice(kinds)
        rng = self.rng
        if kind == "patch":
            return kind, self.patch
        if kind == "truncated":
            return kind, self.patch[: rng.randrange(1, len(self.patch))]
        if kind == "huge-header":
            side = rng.choice([4097, 100_000, 2**31 - 1, 2**32 - 1])
            return kind, png_with_header(side, side, b"\x00\x00\x00\x00IDAT")
        if kind == "zero-header":
            return kind, png_with_header(0, 0)
        if kind == "random":
            return kind, rng.randbytes(rng.randrange(1, 600))
        if kind == "big-file":
            return kind, self.big_file
        return kind, b""

    def form(self, route: str) -> Form:
        rng = self.rng
        boundary = "".join(rng.choices("abcdefXYZ0123456789-_'()+,./:=?", k=rng.randrange(1, 40)))
        many = rng.random() < 0.2
        count = rng.choice([2, 5, 40, 400, 5000]) if many else 1
        name = "slide" if route == "/slides" else "files"
        kind, data = self.file_data(many)
        if kind == "big-file":
            count = min(count, 40)  # 2 MB of files that decode to 1.9 GB
        form = Form(boundary.encode(), [], [f"{count} part(s)", kind])
        for index in range(count):
            disposition = f'Content-Disposition: form-data; name="{name}"; filename="p{index}.png"'
            form.parts.append(Part([disposition.encode(), b"Content-Type: image/png"], data))
        if route == "/slides" and rng.random() < 0.3:
            field_part = Part([b'Content-Disposition: form-data; name="stride"'], b"50")
            form.parts.insert(0, field_part)
        return form

    def header_damage(self, form: Form) -> None:
        rng = self.rng
        part = rng.choice(form.parts)
        choice = rng.randrange(6)
        if choice == 0:
            line = rng.randrange(len(part.headers))
            cut = rng.randrange(len(part.headers[line]) + 1)
            part.headers[line] = part.headers[line][:cut] + b"\x00" + part.headers[line][cut:]
            form.steps.append("NUL in a part header")
        elif choice == 1:
            part.headers = part.headers[1:]
            form.steps.append("no Content-Disposition")
        elif choice == 2:
            part.headers.append(b"X-Long: " + b"v" * rng.choice([100, 10_000, 200_000]))
            form.steps.append("long header")
        elif choice == 3:
            part.headers.append(bytes(rng.randrange(0x80, 0x100) for _ in range(20)))
            form.steps.append("non-ASCII header line")
        elif choice == 4:
            part.headers[0] = part.headers[0].replace(b'filename="', b'filename="' + b"\\" * 50)
            form.steps.append("odd filename")
        else:
            part.headers = [b"Content-Disposition: form-data; name=slide; filename=" + b'"' * 3]
            form.steps.append("unbalanced quotes")

    def content_type(self, form: Form) -> str:
        rng = self.rng
        boundary = form.boundary.decode()
        choice = rng.randrange(10)
        if choice == 0:
            form.boundary = b"B" * rng.choice([71, 256, 257, 300, 5000])
            form.steps.append(f"{len(form.boundary)}-character boundary")
            return f"multipart/form-data; boundary={form.boundary.decode()}"
        if choice == 1:
            form.steps.append("no boundary parameter")
            return "multipart/form-data"
        if choice == 2:
            form.steps.append("empty boundary")
            return "multipart/form-data; boundary="
        if choice == 3:
            form.steps.append("quoted boundary")
            return f'multipart/form-data; boundary="{boundary}"'
        if choice == 4:
            form.steps.append("boundary that the body does not use")
            return f"multipart/form-data; boundary={boundary}x"
        return f"multipart/form-data; boundary={boundary}"

    def serialise(self, form: Form) -> bytes:
        pieces = []
        for part in form.parts:
            head = b"\r\n".join([b"--" + form.boundary, *part.headers])
            pieces.append(head + b"\r\n\r\n" + part.data + b"\r\n")
        return b"".join(pieces) + b"--" + form.boundary + b"--\r\n"

    def body_damage(self, form: Form, body: bytes) -> bytes:
        rng = self.rng
        choice = rng.randrange(7)
        if choice == 0:
            form.steps.append("LF-only line endings")
            return body.replace(b"\r\n", b"\n")
        if choice == 1:
            form.steps.append("truncated")
            return body[: rng.randrange(len(body))]
        if choice == 2:
            form.steps.append("no closing boundary")
            return body[: body.rfind(b"--" + form.boundary + b"--")]
        if choice == 3:
            form.steps.append("flipped bytes")
            damaged = bytearray(body)
            for _ in range(rng.randrange(1, 20)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            return bytes(damaged)
        if choice == 4:
            form.steps.append("garbage before the first boundary")
            return rng.randbytes(rng.randrange(1, 200)) + body
        if choice == 5:
            form.steps.append("body without its boundary")
            return body.replace(b"--" + form.boundary, b"")
        form.steps.append("CR-only line endings")
        return body.replace(b"\r\n", b"\r")

    def raw_upload(self) -> tuple[str, bytes, dict[str, str], list[str]]:
        """A raw-body slide upload with random query parameters (file name, options)."""
        rng = self.rng
        kind, data = self.file_data(many=False)
        characters = "abc.png/\\ \x00\n\r\x1b\x7féü\u202e"
        params = {"filename": "".join(rng.choices(characters, k=rng.randrange(0, 12)))}
        if rng.random() < 0.5:
            params[rng.choice(["stride", "threshold", "context", "endpoint"])] = rng.choice(
                ["", "0", "-1", "1e309", "nan", "true", "maybe", "ep", "x" * 300]
            )
        content_type = rng.choice(["image/png", "application/octet-stream", "text/plain", ""])
        return content_type, data, params, ["raw body", kind, repr(params)]

    def body(self, route: str) -> tuple[str, bytes, dict[str, str], list[str]]:
        """A content type, body, query parameters and the steps that made them."""
        if route == "/slides" and self.rng.random() < 0.15:
            return self.raw_upload()
        form = self.form(route)
        if self.rng.random() < 0.4:
            self.header_damage(form)
        content_type = self.content_type(form)
        body = self.serialise(form)
        if self.rng.random() < 0.6:
            body = self.body_damage(form, body)
        return content_type, body, {}, form.steps


@pytest.fixture
def client(make_client: Callable[..., TestClient], serving_settings: Settings) -> TestClient:
    # A slide limit a little over the body limit: both routes see the same bodies.
    settings = serving_settings.model_copy(update={"max_slide_bytes": 8 * 1024**2})
    return make_client(settings)


def test_generated_multipart_bodies_never_get_a_server_error(client: TestClient) -> None:
    generator = BodyGenerator(SEED)
    statuses: Counter[tuple[str, int]] = Counter()
    codes: Counter[str] = Counter()
    failures = []
    for route in ROUTES:
        for number in range(BODIES_PER_ROUTE):
            content_type, body, params, steps = generator.body(route)
            answer = client.post(
                route, content=body, params=params, headers={"Content-Type": content_type}
            )
            statuses[route, answer.status_code] += 1
            if answer.status_code >= 500:
                failures.append((route, number, steps, answer.text[:200]))
            elif answer.status_code >= 400:
                error = answer.json()["error"]
                assert isinstance(error["code"], str) and error["message"], answer.text
                codes[error["code"]] += 1
    assert not failures, failures[:10]
    assert sum(statuses.values()) >= 2000
    # The generator reaches every kind of answer on both routes, not one refusal.
    assert statuses["/predict-breast-cancer", 200] and statuses["/slides", 202], statuses
    assert {"invalid_input", "payload_too_large"} <= set(codes), codes


def multipart_body(files: list[bytes], boundary: str = "fuzzB", name: str = "files") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="p{index}.png"'
        f"\r\nContent-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for index, data in enumerate(files)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


GOOD = multipart_body([flat_png(50, 50)])
ISSUE_CASES = [
    ("boundary-300", "multipart/form-data; boundary=" + "B" * 300, b"x", 400),
    ("no-boundary-parameter", "multipart/form-data", GOOD, 400),
    ("no-boundary-in-body", "multipart/form-data; boundary=fuzzB", b"just some bytes", 400),
    ("nul-in-part-header", "multipart/form-data; boundary=fuzzB",
     GOOD.replace(b"Content-Type", b"Content\0Type"), 400),
    ("lf-only", "multipart/form-data; boundary=fuzzB", GOOD.replace(b"\r\n", b"\n"), 400),
    ("truncated", "multipart/form-data; boundary=fuzzB", GOOD[:-12], 400),
    ("huge-declared-size", "multipart/form-data; boundary=fuzzB",
     multipart_body([png_with_header(2**31 - 1, 2**31 - 1)]), 413),
    ("many-big-files", "multipart/form-data; boundary=fuzzB",
     multipart_body([flat_png(4096, 4096)] * 40), 413),
    ("over-4096-parts", "multipart/form-data; boundary=fuzzB", multipart_body([b""] * 4097), 413),
]  # fmt: skip


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [case[1:] for case in ISSUE_CASES],
    ids=[case[0] for case in ISSUE_CASES],
)
def test_the_reported_bodies_are_refused_on_the_scoring_route(
    client: TestClient, content_type: str, body: bytes, status: int
) -> None:
    answer = client.post(
        "/predict-breast-cancer", content=body, headers={"Content-Type": content_type}
    )
    assert answer.status_code == status, answer.text
    expected = "invalid_input" if status == 400 else "payload_too_large"
    assert answer.json()["error"]["code"] == expected


def test_the_request_pixel_budget_is_a_setting(
    make_client: Callable[..., TestClient],
    serving_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make_client(serving_settings.model_copy(update={"max_request_pixels": 5000}))
    two, three = multipart_body([flat_png(50, 50)] * 2), multipart_body([flat_png(50, 50)] * 3)
    headers = {"Content-Type": "multipart/form-data; boundary=fuzzB"}
    answer = client.post("/predict-breast-cancer", content=two, headers=headers)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 2
    answer = client.post("/predict-breast-cancer", content=three, headers=headers)
    assert answer.status_code == 413
    assert "BCD_MAX_REQUEST_PIXELS" in answer.json()["error"]["message"]
    big = client.post("/predict-breast-cancer", content=png_bytes(np.zeros((80, 80, 3), np.uint8)),
                      headers={"Content-Type": "image/png"})  # fmt: skip
    assert big.status_code == 413  # one image is held to the budget too
    monkeypatch.setenv("BCD_MAX_REQUEST_PIXELS", "7")
    assert Settings().max_request_pixels == 7
