"""Test helpers other packages import: synthetic IDC data (and tiny models in ``models``).

Stable API::

    make_synthetic_tree(root, n_patients=10, patches_per_patient=30, seed=0, ...) -> Path
    make_synthetic_dataset(name="synthetic", settings=None, ...) -> ImportReport
    synthetic_patch(label, rng) -> (50, 50, 3) uint8
    make_bad_files(root) -> {relative path: reason phrase}
    zip_tree(tree, archive) -> Path
    copy_real_patients(source_tree, root, patient_ids) -> Path

Synthetic patches carry a class signal a small CNN learns in a few epochs: IDC
(label 1) is darker, more purple and denser in nuclei than no-IDC (label 0).
"""

from __future__ import annotations

from bcd.testing._synthetic import (
    copy_real_patients,
    make_bad_files,
    make_synthetic_dataset,
    make_synthetic_tree,
    synthetic_patch,
    zip_tree,
)

__all__ = [
    "copy_real_patients",
    "make_bad_files",
    "make_synthetic_dataset",
    "make_synthetic_tree",
    "synthetic_patch",
    "zip_tree",
]
