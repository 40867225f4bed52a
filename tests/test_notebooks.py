"""The example notebooks run top to bottom on real patches, and are stored without outputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "examples" / "notebooks"
NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))
TIMEOUT_S = 300


def test_both_journeys_are_there() -> None:
    assert [path.name for path in NOTEBOOK_FILES] == [
        "high_level_sdk.ipynb",
        "low_level_client.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda path: path.stem)
def test_notebooks_are_stored_without_outputs(path: Path) -> None:
    notebook = json.loads(path.read_text())
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code_cells
    for cell in code_cells:
        assert cell.get("outputs") == [], f"{path.name}: a cell keeps its outputs"
        assert cell.get("execution_count") is None, f"{path.name}: a cell keeps its count"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda path: path.stem)
def test_notebook_runs_on_real_patients(
    path: Path, shared_data: Path, bcd_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbclient = pytest.importorskip("nbclient", reason="notebook tests need nbclient (bcd[dev])")
    nbformat = pytest.importorskip("nbformat", reason="notebook tests need nbformat (bcd[dev])")
    pytest.importorskip("ipykernel", reason="notebook tests need ipykernel (bcd[dev])")
    # The kernel inherits this process's environment: a fresh BCD_HOME, the data.
    monkeypatch.setenv("BCD_SAMPLE_DATA", str(shared_data))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    started = time.monotonic()
    client.execute()
    seconds = time.monotonic() - started
    outputs = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert f"BCD_HOME: {bcd_home}" in outputs
    assert "patients, 0 rejected" in outputs
    assert "true class 1: Cancer" in outputs and "true class 0: Cancer" in outputs
    assert (bcd_home / "bcd.db").is_file()
    if path.stem == "high_level_sdk":
        assert "trials 2/2 ended (2 completed" in outputs
        assert "best training job: notebook-tune-" in outputs
    else:
        assert "validation:accuracy" in outputs and "endpoints left: []" in outputs
    assert seconds < TIMEOUT_S
