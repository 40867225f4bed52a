"""``bcd serve`` and ``bcd predict``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from bcd import registry
from bcd.cli.main import build_app
from bcd.config import Settings
from bcd.serving import close_local_services
from tests.serving.conftest import _free_port, deploy_tiny, png_bytes

runner = CliRunner()


@pytest.fixture
def deployed(settings: Settings, tiny_model: Path):  # type: ignore[no-untyped-def]
    deploy_tiny(settings, tiny_model)
    yield settings
    close_local_services()


@pytest.fixture
def patches(tmp_path: Path) -> list[Path]:
    paths = []
    for name, colour in (("purple.png", (110, 50, 140)), ("pale.png", (235, 235, 235))):
        path = tmp_path / name
        path.write_bytes(png_bytes(np.full((50, 50, 3), colour, np.uint8)))
        paths.append(path)
    batch = tmp_path / "batch.npy"
    np.save(batch, np.stack([np.full((50, 50, 3), 235, np.uint8)] * 2))
    return [*paths, batch]


def test_predict_in_process_prints_a_verdict_per_image(
    deployed: Settings, patches: list[Path]
) -> None:
    result = runner.invoke(
        build_app(), ["predict", *map(str, patches), "--endpoint", "ep", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.strip().splitlines()]
    assert len(rows) == 4
    verdicts = {row["image"].rsplit("/", 1)[-1]: row["message"] for row in rows}
    assert verdicts["purple.png"] == "Cancer detected"
    assert verdicts["pale.png"] == "Cancer not detected"
    assert verdicts["batch.npy[1]"] == "Cancer not detected"

    table = runner.invoke(build_app(), ["predict", str(patches[0]), "--endpoint", "ep"])
    assert table.exit_code == 0 and "Cancer detected" in table.output


def test_predict_pins_a_variant(
    settings: Settings, tiny_model: Path, always_idc_model: Path, patches: list[Path]
) -> None:
    registry.create_model("tiny", model_data=str(tiny_model), settings=settings)
    registry.create_model("idc", model_data=str(always_idc_model), settings=settings)
    variants = [
        {"VariantName": "accurate", "ModelName": "tiny", "InitialVariantWeight": 1.0},
        {"VariantName": "fast", "ModelName": "idc", "InitialVariantWeight": 0.0},
    ]
    registry.create_endpoint_config("two", variants, settings=settings)
    registry.create_endpoint("two", "two", settings=settings)
    try:
        pale = str(patches[1])

        def predict(*extra: str) -> list[dict[str, object]]:
            result = runner.invoke(
                build_app(), ["predict", pale, "--endpoint", "two", "--json", *extra]
            )
            assert result.exit_code == 0, result.output
            return [json.loads(line) for line in result.output.strip().splitlines()]

        (unpinned,) = predict()
        assert (unpinned["variant"], unpinned["model"]) == ("accurate", "tiny")
        assert unpinned["message"] == "Cancer not detected"
        (pinned,) = predict("--variant", "fast")
        assert (pinned["variant"], pinned["model"]) == ("fast", "idc")
        assert pinned["message"] == "Cancer detected"  # the always-IDC model answered
        table = runner.invoke(
            build_app(), ["predict", pale, "--endpoint", "two", "--variant", "fast"]
        )
        assert table.exit_code == 0 and "variant fast" in table.output

        from bcd.cli.main import main

        with pytest.raises(SystemExit) as unknown:
            main(["predict", pale, "--endpoint", "two", "--variant", "AllTraffic"])
        assert unknown.value.code == 4
    finally:
        close_local_services()


def test_predict_help_explains_the_variants() -> None:
    result = runner.invoke(build_app(), ["predict", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for fragment in ("--variant", "X-Target-Variant", "'fast'", "'accurate'"):
        assert fragment in result.output


def test_predict_missing_file_and_unknown_endpoint(deployed: Settings, patches: list[Path]) -> None:
    from bcd.cli.main import main

    with pytest.raises(SystemExit) as missing:
        main(["predict", "/no/such.png", "--endpoint", "ep"])
    assert missing.value.code == 2
    with pytest.raises(SystemExit) as unknown:
        main(["predict", str(patches[0]), "--endpoint", "nope"])
    assert unknown.value.code == 4


def test_serve_bundled_binds_the_default_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    seen: dict[str, object] = {}
    monkeypatch.setattr(registry, "ensure_bundled_endpoint", lambda settings=None: "bundled-ep")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(app=app, **kwargs))
    result = runner.invoke(build_app(), ["serve", "--bundled", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert seen["port"] == 8123 and seen["host"] == "127.0.0.1"
    assert seen["app"].state.settings.default_endpoint == "bundled-ep"  # type: ignore[attr-defined]
    assert seen["app"].state.keys_required is False  # type: ignore[attr-defined]

    result = runner.invoke(build_app(), ["serve", "--host", "0.0.0.0", "--default-endpoint", "x"])
    assert seen["app"].state.keys_required is True  # type: ignore[attr-defined]
    assert seen["app"].state.settings.default_endpoint == "x"  # type: ignore[attr-defined]


def test_bcd_serve_process_answers_and_stops_cleanly(
    deployed: Settings, patches: list[Path]
) -> None:
    port = _free_port()
    env = {**os.environ, "BCD_HOME": str(deployed.home), "BCD_DEFAULT_ENDPOINT": "ep"}
    bcd_bin = Path(sys.executable).with_name("bcd")
    process = subprocess.Popen(
        [str(bcd_bin), "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            while True:
                assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "bcd serve did not become ready"
                time.sleep(0.1)
            response = http.post(
                "/predict-breast-cancer",
                content=patches[0].read_bytes(),
                headers={"Content-Type": "application/x-image", "Accept": "text/plain"},
            )
            assert response.text == "Cancer detected"
            result = runner.invoke(
                build_app(),
                [
                    "predict",
                    str(patches[1]),
                    "--url",
                    f"http://127.0.0.1:{port}",
                    "--endpoint",
                    "ep",
                    "--variant",
                    "main",
                    "--json",
                ],
            )
            assert result.exit_code == 0, result.output
            answered = json.loads(result.output)
            assert (answered["message"], answered["variant"]) == ("Cancer not detected", "main")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    assert process.returncode == 0
