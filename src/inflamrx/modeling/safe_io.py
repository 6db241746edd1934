"""Saving and loading fitted scikit-learn parts without pickle: skops with a trust policy.

A skops file names the types it holds; loading instantiates them (and a function it names,
such as ``builtins.exec``, is called later by the estimator holding it). skops itself trusts a
set of scikit-learn and numpy types; every other type it reports must be listed here by its
exact name. Namespaces are never trusted: ``builtins.exec`` and ``numpy.load`` sit under
prefixes that look safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from inflamrx.errors import InputError

# Exact types a saved model part may hold beyond skops' own trusted set; anything else is
# refused rather than trusted.
TRUSTED_TYPES = frozenset(
    {
        "inflamrx.modeling.features.ClinicalFeatures",
        "inflamrx.features.ClinicalFeatures",  # the module path of release 0.1.0
        "numpy.dtype",  # LogisticRegression's classes_ dtype
        "inflamrx.modeling.kinds.logistic.MarkerSplines",  # smooth terms for log markers
        # the benefit learners (their XGBoost parts are saved apart, as UBJ)
        "inflamrx.modeling.benefit.learners.InteractionBenefit",
        "inflamrx.modeling.benefit.learners.RiskBenefit",
        "inflamrx.modeling.benefit.learners.TLearnerBenefit",
        "inflamrx.modeling.benefit.learners.XLearnerBenefit",
        "inflamrx.modeling.benefit.learners.DRLearnerBenefit",
    }
)
# Types skops leaves untrusted for a reason (they hold arrays it cannot audit): admitted only
# when the caller has checked the files against the model's SHA-256 manifest.
VERIFIED_ONLY_TYPES = frozenset(
    {"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"}
)


class UntrustedTypesError(TypeError):
    """An object about to be saved holds types outside the trusted lists."""


class UntrustedArtifactError(InputError):
    """A saved artifact holds types outside the trusted list: loading it could run code."""


def allowed_types(untrusted: Iterable[str], what: str, verified: bool = False) -> list[str]:
    """The types skops reports as untrusted, when every one is trusted by its exact name
    (``VERIFIED_ONLY_TYPES`` too when ``verified``: the files matched their manifest)."""
    found = sorted(untrusted)
    trusted = TRUSTED_TYPES | VERIFIED_ONLY_TYPES if verified else TRUSTED_TYPES
    refused = [t for t in found if t not in trusted]
    if refused:
        held = [t for t in refused if t in VERIFIED_ONLY_TYPES]
        why = (
            f" ({', '.join(held)} only once the model's files match its SHA-256 manifest: "
            "load it with `inflamrx predict` or `inflamrx serve`)"
            if held
            else ""
        )
        raise UntrustedTypesError(
            f"{what} holds types that are not trusted for loading: {refused}{why}. Trusted are "
            f"skops' own and {sorted(TRUSTED_TYPES)}; loading others could run their code."
        )
    return found


def dump_trusted(obj: object, path: Path) -> None:
    """Save ``obj`` with skops, refusing to write what a verified load would not read back
    (serialised once: the bytes checked are the bytes written)."""
    import skops.io

    data = skops.io.dumps(obj)
    allowed_types(skops.io.get_untrusted_types(data=data), type(obj).__name__, verified=True)
    path.write_bytes(data)


def load_trusted(path: str | Path, verified: bool = False) -> Any:
    """Load a skops file only when every type in it passes ``allowed_types``."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=path)
    try:
        trusted = allowed_types(untrusted, Path(path).name, verified)
    except UntrustedTypesError as err:
        raise UntrustedArtifactError(str(err)) from None
    return skops.io.load(path, trusted=trusted)
