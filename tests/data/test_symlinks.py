"""Import sources with symlinked patient folders: followed, loops and repeats refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcd.config import Settings
from bcd.data import import_dataset, list_datasets, open_split
from bcd.data._sources import FolderSource
from bcd.errors import InvalidInputError
from bcd.testing import make_synthetic_tree


@pytest.fixture
def linked_tree(tmp_path: Path) -> Path:
    """A source folder whose second patient folder is a symlink to a folder elsewhere."""
    make_synthetic_tree(tmp_path / "elsewhere", n_patients=2, patches_per_patient=6)
    root = tmp_path / "source"
    root.mkdir()
    first, second = sorted((tmp_path / "elsewhere").iterdir())
    first.rename(root / first.name)
    (root / second.name).symlink_to(second, target_is_directory=True)
    return root


def test_a_symlinked_patient_folder_is_imported(linked_tree: Path, settings: Settings) -> None:
    listed = FolderSource(linked_tree).list_files()
    linked = next(p for p in linked_tree.iterdir() if p.is_symlink()).name
    assert len(listed) == 12
    assert sum(path.startswith(f"{linked}/") for path in listed) == 6

    report = import_dataset(linked_tree, "linked", settings=settings, split=None)
    assert (report.imported, report.patients, report.rejected) == (12, 2, [])
    patients = set(open_split("linked", "all", settings=settings).patient_ids)
    assert patients == {p.name for p in linked_tree.iterdir()}


def test_a_symlink_loop_is_refused_with_a_message(linked_tree: Path, settings: Settings) -> None:
    patient = next(p for p in linked_tree.iterdir() if not p.is_symlink())
    (patient / "0" / "loop").symlink_to(linked_tree, target_is_directory=True)
    with pytest.raises(InvalidInputError, match="symlink loop") as caught:
        import_dataset(linked_tree, "loop", settings=settings, split=None)
    assert f"{patient.name}/0/loop" in str(caught.value)
    assert "the source folder itself" in str(caught.value)
    assert list_datasets(settings=settings) == []


def test_a_folder_linked_twice_is_refused(linked_tree: Path) -> None:
    linked = next(p for p in linked_tree.iterdir() if p.is_symlink())
    (linked_tree / "again").symlink_to(linked.resolve(), target_is_directory=True)
    with pytest.raises(InvalidInputError, match=r"linked\s+twice"):
        FolderSource(linked_tree).list_files()
