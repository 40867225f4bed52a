"""Parsing IDC patch paths."""

from __future__ import annotations

import pytest

from bcd.data import parse_patch_path
from bcd.data._patch_names import BadPatchName, is_ignorable, patch_file_name


@pytest.mark.parametrize(
    "path",
    [
        "8863/1/8863_idx5_x1001_y1501_class1.png",
        "IDC_regular_ps50_idx5/8863/1/8863_idx5_x1001_y1501_class1.png",
        "a/b/8863/1/8863_idx5_x1001_y1501_class1.PNG",
    ],
)
def test_valid_paths_parse(path: str) -> None:
    name = parse_patch_path(path)
    assert (name.patient_id, name.x, name.y, name.label) == ("8863", 1001, 1501, 1)
    assert name.key.lower() == "8863/1/8863_idx5_x1001_y1501_class1.png"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("8863/1/scan.png", "does not match"),
        ("8863/1/8863_idx5_x1001_y1501_class2.png", "does not match"),
        ("8863/1/8863_idx5_x1001_y1501_class1.jpg", "does not match"),
        ("8863/1/8863_idx5_xA_y1501_class1.png", "does not match"),
        ("8863_idx5_x1001_y1501_class1.png", "not inside"),
        ("8863/0/8863_idx5_x1001_y1501_class1.png", "disagrees with class1"),
        ("8863/x/8863_idx5_x1001_y1501_class1.png", "not 0 or 1"),
        ("9999/1/8863_idx5_x1001_y1501_class1.png", "patient folder"),
    ],
    ids=[
        "no-pattern",
        "class-2",
        "jpg",
        "non-numeric-x",
        "no-folders",
        "label-folder",
        "odd-label-folder",
        "patient-folder",
    ],
)
def test_bad_paths_give_a_reason(path: str, reason: str) -> None:
    with pytest.raises(BadPatchName, match=reason):
        parse_patch_path(path)


def test_file_name_round_trips() -> None:
    name = patch_file_name("12933", 51, 101, 0)
    parsed = parse_patch_path(f"12933/0/{name}")
    assert (parsed.patient_id, parsed.x, parsed.y, parsed.label) == ("12933", 51, 101, 0)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".DS_Store", True),
        ("__MACOSX/8863/1/x.png", True),
        ("8863/.hidden/a.png", True),
        ("8863/1/8863_idx5_x1_y1_class1.png", False),
    ],
)
def test_clutter_is_recognised(path: str, expected: bool) -> None:
    assert is_ignorable(path) is expected
