"""The bundled default model: ``model.onnx``, ``model.json``, ``model.pt`` and ``MODEL_CARD.md``.

They are produced by the project's own pipeline (``bcd quickstart``);
``model.pt``, the torch weights that Grad-CAM explanations need, was rebuilt
from ``model.onnx`` by ``examples/analysis/bundled_model_pt.py``. They are
registered by :func:`bcd.registry.ensure_bundled_endpoint`, which ``bcd serve
--bundled`` and ``make run`` call.
"""

from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent
