"""Saving and loading fitted scikit-learn parts without pickle: skops with a trust policy.

A skops file names the types it holds; loading instantiates them. Only types under the prefixes
below are loaded, so a file holding anything else is refused before any of it is built.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from inflamrx.errors import InputError

# Types a saved model part may contain; anything else is refused rather than trusted.
TRUSTED_PREFIXES = ("inflamrx.", "sklearn.", "xgboost.", "numpy.", "builtins.", "collections.")


class UntrustedTypesError(TypeError):
    """An object about to be saved holds types outside ``TRUSTED_PREFIXES``."""


class UntrustedArtifactError(InputError):
    """A saved artifact holds types outside the trusted list: loading it could run code."""


def allowed_types(untrusted: Iterable[str], what: str) -> list[str]:
    """The types skops reports as untrusted, when all fall under ``TRUSTED_PREFIXES``."""
    found = sorted(untrusted)
    refused = [t for t in found if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise UntrustedTypesError(
            f"{what} holds types that are not trusted for loading: {refused}. Trusted are "
            f"types under {', '.join(TRUSTED_PREFIXES)}; loading others could run their code."
        )
    return found


def dump_trusted(obj: object, path: Path) -> None:
    """Save ``obj`` with skops, refusing to write what ``allowed_types`` would not load back
    (serialised once: the bytes checked are the bytes written)."""
    import skops.io

    data = skops.io.dumps(obj)
    allowed_types(skops.io.get_untrusted_types(data=data), type(obj).__name__)
    path.write_bytes(data)


def load_trusted(path: str | Path) -> Any:
    """Load a skops file only when every type in it passes ``allowed_types``."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=path)
    try:
        trusted = allowed_types(untrusted, Path(path).name)
    except UntrustedTypesError as err:
        raise UntrustedArtifactError(str(err)) from None
    return skops.io.load(path, trusted=trusted)
