"""A killed import or split leaves the store consistent: all or nothing is visible."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bcd.config import Settings
from bcd.data import (
    SplitSpec,
    _catalog,
    describe_dataset,
    import_dataset,
    list_datasets,
    open_split,
)
from bcd.testing import make_synthetic_tree

# Runs an import (or split) in a child process and stalls at a chosen point,
# after writing MARKER, so the test can SIGKILL it there.
_CHILD = """
import sys, time
from pathlib import Path
import bcd.data._importer as importer
import bcd.data._split as splitting
from bcd.data import import_dataset, split_dataset, SplitSpec

tree, name, phase, marker, replace = sys.argv[1:6]

def stall(*args, **kwargs):
    Path(marker).write_text("stalled")
    time.sleep(120)

if phase == "decode":
    importer._CHUNK = 32
    def progress(done, total):
        if done >= 64:
            stall()
    import_dataset(tree, name, progress=progress, replace=replace == "1", workers=0)
elif phase == "commit":
    importer._catalog.commit_record = stall
    import_dataset(tree, name, replace=replace == "1", workers=0)
elif phase == "split":
    original = splitting.write_subset
    calls = []
    def write_then_stall(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            stall()
        return original(*args, **kwargs)
    splitting.write_subset = write_then_stall
    split_dataset(name, SplitSpec((0.6, 0.2, 0.2), 99))
"""


@pytest.fixture
def big_tree(tmp_path: Path) -> Path:
    return make_synthetic_tree(tmp_path / "tree", n_patients=6, patches_per_patient=40, seed=5)


def _kill_at(phase: str, tree: Path, name: str, marker: Path, replace: bool = False) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(tree),
            name,
            phase,
            str(marker),
            "1" if replace else "0",
        ],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if child.poll() is not None:
            raise AssertionError(f"child ended before stalling: {child.stderr.read().decode()}")
        assert time.monotonic() < deadline, "child never reached the kill point"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def test_killed_first_import_leaves_no_dataset(
    big_tree: Path, tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _kill_at("decode", big_tree, "killed", tmp_path / "marker")
    assert list_datasets() == []
    leftovers = list((Path(settings.resolved_dataset_root) / "killed").iterdir())
    assert leftovers, "the child wrote nothing aside; the kill point is wrong"
    # The same name imports fine afterwards (no --replace needed), and old
    # leftovers are cleaned away.
    monkeypatch.setattr(_catalog, "ORPHAN_AGE_S", 0.0)
    report = import_dataset(big_tree, "killed", split=None)
    assert report.imported == 240
    folders = sorted(p.name for p in (Path(settings.resolved_dataset_root) / "killed").iterdir())
    assert folders == [describe_dataset("killed")["location"].split("/")[1]]


def test_killed_replace_keeps_the_old_dataset(
    big_tree: Path, tmp_path: Path, settings: Settings
) -> None:
    small = make_synthetic_tree(tmp_path / "small", n_patients=3, patches_per_patient=10, seed=9)
    import_dataset(small, "kept", settings=settings, split=SplitSpec((0.34, 0.33, 0.33), 1))
    before = describe_dataset("kept")
    # Killed after the new data is in place but before the catalog commit.
    _kill_at("commit", big_tree, "kept", tmp_path / "marker", replace=True)
    after = describe_dataset("kept")
    assert after == before
    everything = open_split("kept", "all")
    assert len(everything) == 30 and everything.fingerprint == before["fingerprint"]
    assert len(open_split("kept", "train")) == before["splits"]["train"]["patches"]


def test_killed_resplit_keeps_the_old_splits(tmp_path: Path, big_tree: Path) -> None:
    import_dataset(big_tree, "resplit", split=SplitSpec((0.5, 0.25, 0.25), 3))
    before = describe_dataset("resplit")
    train = np.asarray(open_split("resplit", "train").images)
    _kill_at("split", big_tree, "resplit", tmp_path / "marker")
    assert describe_dataset("resplit") == before
    np.testing.assert_array_equal(np.asarray(open_split("resplit", "train").images), train)
