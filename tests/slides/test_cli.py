"""``bcd slide from-patches`` and ``bcd slide analyze`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bcd.cli.main import build_app, exit_code_for
from bcd.errors import BcdError
from bcd.testing.models import write_tiny_model


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), list(args))
    if isinstance(result.exception, BcdError):
        return exit_code_for(result.exception), result.exception.message
    return result.exit_code, result.output


def test_from_patches_then_analyze(shared_data: Path, tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path / "model")
    code, output = _run(
        "slide", "from-patches", str(shared_data / "12933"), "--out", str(tmp_path / "s")
    )
    assert code == 0, output
    assert (tmp_path / "s" / "slide.png").is_file() and "next: bcd slide analyze" in output
    out = tmp_path / "analysis"
    code, output = _run(
        "slide", "analyze", str(tmp_path / "s" / "slide.png"), "--model-dir", str(model),
        "--truth", str(tmp_path / "s" / "truth.npy"), "--out", str(out), "--top-k", "4",
    )  # fmt: skip
    assert code == 0, output
    assert "against ground truth" in output
    assert "(each tile alone)" in output  # the tiny model has no slide context
    report = json.loads((out / "report.json").read_text())
    assert len(report["top_tiles"]) == 4 and report["ground_truth"]["auc"] is not None
    assert (out / "report.pdf").is_file() and (out / "heatmap.png").is_file()
    # A model with a slide context uses it, unless told not to.
    context = {"radius": 1, "weights": [0.5, 0.5], "bias": 0.0, "decision_threshold": 0.4}
    with_context = write_tiny_model(tmp_path / "ctx", extra={"slide_context": context})
    for flag, expected in (("--context", "0.400 (slide context, radius 1)"),
                           ("--no-context", "0.500 (each tile alone)")):  # fmt: skip
        code, output = _run(
            "slide", "analyze", str(tmp_path / "s" / "slide.png"), "--model-dir",
            str(with_context), "--out", str(tmp_path / flag), flag,
        )  # fmt: skip
        assert code == 0, output
        assert expected in output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["slide", "analyze", "/etc/hostname", "--model-dir", "x", "--out", "o"],
            2,
            "not an image",
        ),
        (
            ["slide", "analyze", "missing.png", "--model-dir", "x", "--out", "o"],
            4,
            "does not exist",
        ),
        (["slide", "from-patches", "nowhere", "--out", "o"], 4, "does not exist"),
    ],
    ids=["not-an-image", "missing-slide", "missing-folder"],
)
def test_bad_input_exits_with_a_message(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    model = write_tiny_model(tmp_path / "x")
    args = [
        str(model) if value == "x" else str(tmp_path / value) if value == "o" else value
        for value in args
    ]
    exit_code, output = _run(*args)
    assert exit_code == code and message in output


def test_analyze_writes_geojson_and_csv_where_asked(tmp_path: Path) -> None:
    import csv

    import numpy as np
    from PIL import Image

    from tests.slides.conftest import synthetic_slide

    model = write_tiny_model(tmp_path / "model")
    slide = tmp_path / "slide.png"
    Image.fromarray(synthetic_slide()).save(slide, dpi=(6350, 6350))
    geojson, table = tmp_path / "qupath" / "case.geojson", tmp_path / "case.csv"
    code, output = _run(
        "slide", "analyze", str(slide), "--model-dir", str(model), "--out", str(tmp_path / "out"),
        "--geojson", str(geojson), "--csv", str(table),
    )  # fmt: skip
    assert code == 0, output
    assert geojson.read_bytes() == (tmp_path / "out" / "regions.geojson").read_bytes()
    collection = json.loads(geojson.read_text())
    assert collection["type"] == "FeatureCollection" and collection["features"]
    assert collection["features"][0]["properties"]["classification"]["name"] == "IDC"
    rows = list(csv.DictReader(table.open()))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(rows) == report["tiles"]["tissue"]
    assert np.isclose(
        max(float(row["probability"]) for row in rows), report["top_tiles"][0]["probability"]
    )
