"""Fixtures of the data-layer tests: synthetic trees and imported datasets.

Building a tree and importing it is done once per session; each test gets its
own copy (a tree folder, or a whole ``BCD_HOME``), so tests stay independent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bcd import db
from bcd.config import Settings
from bcd.data import ImportReport, SplitSpec, import_dataset
from bcd.testing import make_synthetic_tree


@pytest.fixture(scope="session")
def _tree_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "IDC_regular_ps50_idx5"
    return make_synthetic_tree(root, n_patients=8, patches_per_patient=20)


@pytest.fixture(scope="session")
def _imported_template(
    _tree_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, ImportReport]:
    home = tmp_path_factory.mktemp("imported-home")
    report = import_dataset(
        _tree_template, "syn", settings=Settings(home=home), split=SplitSpec((0.5, 0.25, 0.25), 7)
    )
    db.dispose_engines()
    return home, report


@pytest.fixture
def tree(_tree_template: Path, tmp_path: Path) -> Path:
    """A synthetic IDC tree (a fresh copy): 8 patients × 20 patches, 3 smaller than 50×50."""
    return Path(shutil.copytree(_tree_template, tmp_path / "IDC_regular_ps50_idx5"))


@pytest.fixture
def imported(_imported_template: tuple[Path, ImportReport], bcd_home: Path) -> ImportReport:
    """The tree imported as dataset ``syn``, split 0.5/0.25/0.25 by patient (seed 7)."""
    home, report = _imported_template
    shutil.copytree(home, bcd_home, dirs_exist_ok=True)
    return report
