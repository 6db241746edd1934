"""Find a logged model before the modelling stack is imported.

A model URI that does not exist is refused in about the time of the registry look-up: the
command line asks here first, and imports scikit-learn, XGBoost and the contract only after.
"""

from __future__ import annotations

from mlflow.models import Model

from inflamrx.errors import InputError
from inflamrx.tracking.store import use_store


def model_info(model_uri: str) -> Model:
    """The MLmodel file behind ``model_uri`` (runs:/, models:/, a folder); InputError if none.

    The MLmodel file itself: get_model_info would also look the model up in the tracking
    store, which an exported folder on another machine is not in."""
    use_store()
    try:
        return Model.load(model_uri)
    except Exception as err:  # an unknown URI, a missing run or version, no MLmodel file
        raise InputError(f"cannot load the model {model_uri!r}: {err}") from None
