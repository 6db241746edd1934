"""inflamrx: predict response to anti-inflammatory treatment for depression.

The Python API mirrors the command line::

    from inflamrx import load_config, simulate_cohort, validate_cohort, train, predict

A config with a treatment section (two arms) goes to ``train_benefit`` / ``tune_benefit``.

``predict`` and ``explain`` take a pandas DataFrame, a file path or a ``DataConfig``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Imported on first use: `import inflamrx` must stay cheap (no MLflow/XGBoost at import).
_API = {
    "load_config": "inflamrx.config",
    "Config": "inflamrx.config",
    "simulate_cohort": "inflamrx.data.simulate",
    "write_cohort": "inflamrx.data.simulate",
    "validate_cohort": "inflamrx.data.validate",
    "validate_frame": "inflamrx.data.validate",
    "train": "inflamrx.jobs.train",
    "TrainResult": "inflamrx.jobs.train",
    "tune": "inflamrx.jobs.tune.job",
    "TuneResult": "inflamrx.jobs.tune.job",
    "train_benefit": "inflamrx.jobs.benefit",
    "BenefitTrainResult": "inflamrx.jobs.benefit",
    "tune_benefit": "inflamrx.jobs.benefit_tune",
    "predict": "inflamrx.serving.batch",
    "explain": "inflamrx.jobs.explain",
    "PredictResult": "inflamrx.serving.batch",
    "InputError": "inflamrx.errors",
}
__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from inflamrx.config import Config, load_config
    from inflamrx.data.simulate import simulate_cohort, write_cohort
    from inflamrx.data.validate import validate_cohort, validate_frame
    from inflamrx.errors import InputError
    from inflamrx.jobs.benefit import BenefitTrainResult, train_benefit
    from inflamrx.jobs.benefit_tune import tune_benefit
    from inflamrx.jobs.explain import explain
    from inflamrx.jobs.train import TrainResult, train
    from inflamrx.jobs.tune.job import TuneResult, tune
    from inflamrx.serving.batch import PredictResult, predict


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'inflamrx' has no attribute {name!r}")
