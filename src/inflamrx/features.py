"""Import path kept for models saved by release 0.1.0: their ``features.skops`` names the
fitted feature step ``inflamrx.features.ClinicalFeatures``. New code imports it from
``inflamrx.modeling.features``."""

from inflamrx.modeling.features import ClinicalFeatures

__all__ = ["ClinicalFeatures"]
