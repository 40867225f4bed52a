"""A ``kill -9`` of an import: its workers die with it, its partial folder is cleaned.

The import runs in a real child process with a real decode pool; the test
SIGKILLs it while the pool is up.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bcd._process import is_alive, process_start_time
from bcd.cli.main import main
from bcd.config import Settings
from bcd.data import _catalog, collect_garbage, import_dataset, list_datasets
from bcd.data._lifeline import die_with_parent
from bcd.testing import make_synthetic_tree

# Imports with two decode workers and stalls once the first chunk is back, after
# writing the workers' pids to MARKER, so the test can SIGKILL it there.
_IMPORT_THEN_STALL = """
import json, sys, time
from pathlib import Path
import psutil
from bcd.data import import_dataset

tree, name, marker = sys.argv[1:4]

def progress(done, total):
    workers = [child.pid for child in psutil.Process().children()]
    Path(marker).write_text(json.dumps(workers))
    time.sleep(120)

import_dataset(tree, name, workers=2, progress=progress, split=None)
"""

# Starts a process that ties itself to this one, writes its pid, and waits.
_PARENT_OF_A_TIED_CHILD = """
import multiprocessing, os, sys, time
from pathlib import Path
from bcd.data._lifeline import die_with_parent

def child(parent, use_prctl, marker):
    die_with_parent(parent, use_prctl=use_prctl, interval_s=0.1)
    Path(marker).write_text(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    marker, use_prctl = sys.argv[1], sys.argv[2] == "1"
    context = multiprocessing.get_context("fork")
    context.Process(target=child, args=(os.getpid(), use_prctl, marker)).start()
    time.sleep(120)
"""


def _start_and_wait(arguments: list[str], marker: Path) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(
        [sys.executable, "-c", *arguments], env=dict(os.environ), stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not marker.exists() or not marker.read_text():
        if child.poll() is not None:
            assert child.stderr is not None
            raise AssertionError(f"child ended early: {child.stderr.read().decode()}")
        assert time.monotonic() < deadline, "child never reached the kill point"
        time.sleep(0.05)
    return child


def _kill(child: subprocess.Popen[bytes]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def _all_gone(pids: list[tuple[int, float | None]], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(is_alive(pid, started) for pid, started in pids):
            return True
        time.sleep(0.05)
    return False


def _partials(settings: Settings, name: str) -> list[Path]:
    folder = Path(settings.resolved_dataset_root) / name
    return sorted(folder.glob(f"{_catalog.PARTIAL_PREFIX}*")) if folder.is_dir() else []


def test_a_killed_import_takes_its_workers_along_and_the_next_import_cleans_up(
    tmp_path: Path, settings: Settings
) -> None:
    tree = make_synthetic_tree(tmp_path / "tree", n_patients=4, patches_per_patient=20, seed=3)
    marker = tmp_path / "workers.json"
    child = _start_and_wait([_IMPORT_THEN_STALL, str(tree), "killed", str(marker)], marker)
    workers = [(pid, process_start_time(pid)) for pid in json.loads(marker.read_text())]
    assert len(workers) == 2 and all(is_alive(*worker) for worker in workers)
    (partial,) = _partials(settings, "killed")
    assert json.loads((partial / _catalog.WRITER_FILE).read_text())["pid"] == child.pid
    _kill(child)
    assert _all_gone(workers), "decode workers outlived the killed import"
    assert list_datasets(settings) == []
    report = import_dataset(tree, "next", settings=settings, split=None)  # another dataset
    assert report.imported == 80
    assert not partial.exists()
    assert _partials(settings, "next") == []
    assert not (Path(settings.resolved_dataset_root) / "next" / _catalog.WRITER_FILE).exists()
    location = Path(settings.resolved_dataset_root) / list_datasets(settings)[0]["location"]
    assert not (location / _catalog.WRITER_FILE).exists()  # published data carries no marker


@pytest.mark.parametrize("use_prctl", [True, False], ids=["prctl", "polling"])
def test_a_tied_process_ends_when_its_parent_is_killed(tmp_path: Path, use_prctl: bool) -> None:
    marker = tmp_path / "child.pid"
    parent = _start_and_wait([_PARENT_OF_A_TIED_CHILD, str(marker), str(int(use_prctl))], marker)
    tied = int(marker.read_text())
    started = process_start_time(tied)
    assert is_alive(tied, started)
    _kill(parent)
    assert _all_gone([(tied, started)])


def test_die_with_parent_reports_how_it_is_tied() -> None:
    # This process's parent is alive, so neither way ends it.
    expected = "prctl" if sys.platform.startswith("linux") else "poll"
    assert die_with_parent(os.getppid()) in (expected, "poll")
    assert die_with_parent(os.getppid(), use_prctl=False, interval_s=60) == "poll"


def _dead_pid() -> tuple[int, float | None]:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process_start_time(finished.pid)
    finished.wait()
    return finished.pid, started


def _partial(root: Path, name: str, pid: int, started: float | None) -> Path:
    folder = root / name / f"{_catalog.PARTIAL_PREFIX}{pid}"
    (folder / "all").mkdir(parents=True)
    (folder / "all" / "images.u8").write_bytes(b"\0" * 5000)
    writer = {"pid": pid, "start_time": started, "host": socket.gethostname()}
    (folder / _catalog.WRITER_FILE).write_text(json.dumps(writer))
    return folder


@pytest.fixture
def leftovers(settings: Settings) -> dict[str, Path]:
    """One folder of each kind under the dataset store."""
    root = Path(settings.resolved_dataset_root)
    old = root / "ds" / "import-20200101T000000-abcdef"
    old.mkdir(parents=True)
    (old / "dataset.json").write_text("{}")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    young = root / "ds" / "import-20990101T000000-abcdef"
    young.mkdir(parents=True)
    return {
        "dead": _partial(root, "ds", *_dead_pid()),
        "running": _partial(root, "other", os.getpid(), process_start_time()),
        "old": old,
        "young": young,
    }


def test_gc_removes_dead_partials_and_old_orphans_only(
    leftovers: dict[str, Path], settings: Settings
) -> None:
    dry = collect_garbage(settings, dry_run=True)
    assert sorted(item.key for item in dry.leftovers) == [
        f"ds/{leftovers['dead'].name}",
        f"ds/{leftovers['old'].name}",
    ]
    assert all(path.exists() for path in leftovers.values())
    dead = next(item for item in dry.leftovers if item.key.endswith(leftovers["dead"].name))
    assert dead.size_bytes >= 5000 and "process is gone" in dead.reason
    removed = collect_garbage(settings)
    assert len(removed.leftovers) == 2
    assert not leftovers["dead"].exists() and not leftovers["old"].exists()
    assert leftovers["running"].exists() and leftovers["young"].exists()
    assert collect_garbage(settings).leftovers == []


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().out


def test_bcd_data_gc_dry_run_then_remove(
    leftovers: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(capsys, "data", "gc", "--help")
    assert code == 0 and "--dry-run" in out
    code, out = _run(capsys, "data", "gc", "--dry-run")
    assert code == 0 and re.search(r"would remove 2 folder\(s\), 5\.\d kB", out)
    assert leftovers["dead"].exists()
    code, out = _run(capsys, "data", "gc")
    assert code == 0 and re.search(r"removed 2 folder\(s\), 5\.\d kB", out)
    assert leftovers["dead"].name in out
    assert not leftovers["dead"].exists() and leftovers["running"].exists()
    code, out = _run(capsys, "data", "gc")
    assert code == 0 and "nothing to remove" in out
