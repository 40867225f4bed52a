"""REST routes, one module per resource; each exposes ``router`` (an ``APIRouter``).

:func:`bcd.serving.create_app` includes the modules in :data:`ROUTE_MODULES`
that exist, in order, so a module added later (``slides``) only needs its name here.
"""

from __future__ import annotations

ROUTE_MODULES = (
    "health",
    "metrics",
    "endpoints",
    "invocations",
    "predict",
    "deepzoom",
    "explanations",
    "slides",
)
