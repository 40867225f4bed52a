"""The bundled default models, one folder per production variant of the default endpoint.

``bcd/bundled/`` (``model.onnx``, ``model.json``, ``model.pt``) is the ``fast``
variant, model ``bcd-bundled``; ``bcd/bundled/accurate/`` (the same three files)
is the ``accurate`` variant, model ``bcd-bundled-accurate``. ``MODEL_CARD.md``
describes both. They are produced by the project's own pipeline (``bcd
quickstart`` for the fast one); ``model.pt`` holds the torch weights that
Grad-CAM explanations need (the fast one was rebuilt from its ``model.onnx`` by
``examples/analysis/bundled_model_pt.py``). They are registered by
:func:`bcd.registry.ensure_bundled_endpoint`, which ``bcd serve --bundled`` and
``make run`` call.
"""

from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent
ACCURATE_SUBFOLDER = "accurate"
#: The ``accurate`` variant's folder, inside :data:`MODEL_DIR`.
ACCURATE_MODEL_DIR = MODEL_DIR / ACCURATE_SUBFOLDER
