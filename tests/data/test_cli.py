"""``bcd data …`` commands: output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bcd.cli.main import main
from bcd.data import ImportReport, describe_dataset
from bcd.testing import make_bad_files


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_import_prints_summary_splits_and_rejections(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_bad_files(tree)
    report = tmp_path / "report.json"
    code, out, _ = _run(
        capsys, "data", "import", str(tree), "--name", "cli", "--split", "0.5,0.25,0.25",
        "--seed", "3", "--report", str(report),
    )  # fmt: skip
    assert code == 0
    assert "imported patches" in out and "160" in out and "validation" in out
    assert "rejected files (6)" in out and "0 bytes" in out
    assert len(json.loads(report.read_text())["rejected"]) == 6
    assert describe_dataset("cli")["split_config"]["seed"] == 3


def test_reimport_exits_with_conflict(
    imported: ImportReport, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "data", "import", str(tree), "--name", "syn")
    assert code == 5 and "--replace" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["data", "stats", "nope"], 4, "does not exist"),
        (["data", "import", "/no/such/tree", "--name", "x"], 4, "does not exist"),
        (["data", "import", ".", "--name", "bad name"], 2, "dataset name"),
        (["data", "import", ".", "--name", "x", "--split", "0.9,0.9"], 2, "sum to 1"),
        (["data", "import", ".", "--name", "x", "--on-small", "crop"], 2, "on_small"),
    ],
    ids=["unknown-dataset", "missing-source", "bad-name", "bad-split", "bad-on-small"],
)
def test_bad_input_gives_a_clear_error(
    args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    got, _, err = _run(capsys, *args)
    assert got == code and message in err and "Traceback" not in err


def test_stats_grid_mosaic_export_list_show(
    imported: ImportReport, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys, "data", "stats", "syn", "--grid", str(tmp_path / "g.png"), "--per-patient"
    )
    assert code == 0 and (tmp_path / "g.png").is_file()
    assert "normalization (train split" in out and "90001" in out and "50x50" in out
    code, out, _ = _run(capsys, "data", "mosaic", "syn", "90001", "--out", str(tmp_path / "m.png"))
    assert code == 0 and (tmp_path / "m.png").is_file()
    code, out, _ = _run(capsys, "data", "export", "syn", str(tmp_path / "loose"), "--format", "lst")
    assert code == 0 and (tmp_path / "loose" / "train.lst").is_file()
    code, out, _ = _run(capsys, "data", "list", "--json")
    assert code == 0 and json.loads(out)[0]["name"] == "syn"
    code, out, _ = _run(capsys, "data", "show", "syn")
    assert code == 0 and "fingerprint" in out


def test_split_and_delete(imported: ImportReport, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "data", "split", "syn", "--split", "0.75,0.25", "--seed", "1")
    assert code == 0 and "train" in out and "test" not in out
    code, _, _ = _run(capsys, "data", "delete", "syn", "--yes")
    assert code == 0
    code, _, _err = _run(capsys, "data", "show", "syn")
    assert code == 4
