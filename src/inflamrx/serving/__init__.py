"""Serving: the MLflow pyfunc, its artifacts and trust policy, batch scoring, export/serve/promote.

``ResponseModel`` is importable from here because models logged by release 0.1.0 name it so in
their model code (``from inflamrx.serving import ResponseModel``). Resolved on first use, so
importing a serving submodule does not load MLflow's pyfunc machinery.
"""

from importlib import import_module
from typing import Any


def __getattr__(name: str) -> Any:
    if name == "ResponseModel":
        return import_module("inflamrx.serving.pyfunc").ResponseModel
    raise AttributeError(f"module 'inflamrx.serving' has no attribute {name!r}")
