"""``bcd train`` and ``bcd jobs …`` through the CLI entry point (exit codes included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcd.cli.main import main

SCRIPTS = Path(__file__).resolve().parents[1] / "jobs" / "scripts"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def train_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "part-0.txt").write_text("0")
    return folder


def test_train_wait_then_inspect_the_job(
    train_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        [
            "train",
            "--algorithm", "script",
            "--entry-point", "train_ok.py",
            "--source-dir", str(SCRIPTS),
            "--train", str(train_dir),
            "--hp", "epochs=3",
            "--metric", r"train:loss=train:loss=([0-9.]+)",
            "--metric", r"validation:accuracy=validation:accuracy=([0-9.]+)",
            "--name", "cli-job",
            "--wait",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "training job cli-job started" in out
    assert "epoch=3 train:loss=" in out  # the log, streamed
    assert "Completed" in out

    code, out, _ = _run(["jobs", "list"], capsys)
    assert code == 0 and "cli-job" in out and "Completed" in out

    code, out, _ = _run(["jobs", "describe", "cli-job"], capsys)
    assert code == 0
    for expected in ("Downloading", "Training", "Uploading", "epochs", "train:loss"):
        assert expected in out

    code, out, _ = _run(["jobs", "describe", "cli-job", "--json"], capsys)
    assert code == 0 and '"TrainingJobStatus": "Completed"' in out

    code, out, _ = _run(["jobs", "metrics", "cli-job"], capsys)
    assert code == 0 and "validation:accuracy" in out and "0.8" in out

    code, out, _ = _run(["jobs", "logs", "cli-job", "--tail", "2"], capsys)
    assert code == 0 and "epoch=1" not in out

    png = tmp_path / "curves.png"
    code, out, _ = _run(["jobs", "plot", "cli-job", "--out", str(png)], capsys)
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"

    code, _, err = _run(["jobs", "stop", "cli-job"], capsys)
    assert code == 5 and "only InProgress jobs can be stopped" in err

    code, out, _ = _run(["jobs", "wait", "cli-job"], capsys)
    assert code == 0 and "Completed" in out


def test_train_without_wait_returns_and_a_failed_job_exits_6(
    train_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "-a", "script", "--entry-point", "crash.py", "--source-dir", str(SCRIPTS),
            "--train", str(train_dir), "--name", "cli-crash"]  # fmt: skip
    code, out, _ = _run(argv, capsys)
    assert code == 0 and "bcd jobs logs cli-crash -f" in out
    code, _, err = _run(["jobs", "wait", "cli-crash", "--timeout", "60"], capsys)
    assert code == 6
    assert "exploded" in err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["train", "-a", "cnn", "--dataset", "no-such-data"], 4, "no-such-data"),
        (["train", "-a", "resnet", "--dataset", "x"], 2, "valid algorithms"),
        (["train", "-a", "cnn", "--dataset", "x", "--hp", "epochs"], 2, "KEY=VALUE"),
        (["train", "-a", "cnn", "--dataset", "x", "--hp", "bogus=1"], 2, "valid ones"),
        (["train", "-a", "cnn", "--dataset", "x", "--hp", "epochs=-3"], 2, "out of range"),
        (["train", "-a", "cnn", "--hp", "epochs=2"], 2, "needs the channel"),
        (["train", "-a", "script", "--dataset", "x"], 2, "--entry-point"),
        (["jobs", "describe", "ghost"], 4, "does not exist"),
        (["jobs", "logs", "ghost"], 4, "does not exist"),
    ],
    ids=[
        "unknown-dataset",
        "unknown-algorithm",
        "bad-hp",
        "unknown-hp",
        "hp-range",
        "no-channels",
        "script-no-entry",
        "describe-missing",
        "logs-missing",
    ],
)
def test_bad_input_gets_a_clear_error_and_exit_code(
    argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    actual, _, err = _run(argv, capsys)
    assert actual == code, err
    assert message in err
    assert "Traceback" not in err
