"""Refactor check: the same seed and data must give byte-identical metrics and model files.

Run: .venv/bin/python benchmarks/identity_check.py --out before.json   (on the old code)
     .venv/bin/python benchmarks/identity_check.py --out after.json    (on the new code)
     diff before.json after.json
Trains the default XGBoost and the penalised logistic model, and runs a small tune, on a
SYNTHETIC cohort (n = 1,000, seed 0), tracking in a temporary SQLite store; prints and writes
every logged metric and the SHA-256 of every fitted-model file (the booster's bytes, the
skops parts' arrays).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

MODEL_FILES = (".ubj", ".skops")  # fitted parts; settings files may change format


# Module paths the layered tree moved; a skops schema names them.
MOVED = {"inflamrx.features": "inflamrx.modeling.features"}


def _fitted_state(node: Any) -> Any:
    """A skops schema without what is not fitted state: object ids (and the array file names
    made from them), and module paths a refactor moved."""
    if isinstance(node, dict):
        kept = {k: _fitted_state(v) for k, v in node.items() if k not in ("__id__", "file")}
        if kept.get("__module__") in MOVED:
            kept["__module__"] = MOVED[kept["__module__"]]
        return kept
    if isinstance(node, list):
        return [_fitted_state(v) for v in node]
    return node


def content_hash(path: Path) -> str:
    """SHA-256 of a booster file; for a skops file, of its fitted state (its schema and
    arrays): a skops zip is not byte-stable (entry times, entry names from object ids)."""
    if path.suffix != ".skops":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    with zipfile.ZipFile(path) as z:
        schema = _fitted_state(json.loads(z.read("schema.json")))
        arrays = sorted(
            hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist() if n.endswith(".npy")
        )
    text = json.dumps(schema, sort_keys=True) + "".join(arrays)
    return hashlib.sha256(text.encode()).hexdigest()


def model_file_hashes(model_uri: str, tmp: Path) -> dict[str, str]:
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(tmp)))
    return {p.name: content_hash(p) for p in sorted(local.rglob("*")) if p.suffix in MODEL_FILES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import inflamrx
    from inflamrx import load_config

    try:
        from inflamrx.data.simulate import simulate_cohort, write_cohort
    except ImportError:  # the release before the layered tree
        from inflamrx.simulate import simulate_cohort, write_cohort  # type: ignore[no-redef]

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
        write_cohort(simulate_cohort(1000, 0), tmp / "synthetic.csv")
        quick = {
            "data.path": str(tmp / "synthetic.csv"),
            "report.enabled": False,
            "evaluation.n_bootstrap": 200,
            "registry.enabled": False,
        }
        from inflamrx.config import SplitConfig

        if "strategy" in SplitConfig.model_fields:  # releases with validation modes
            quick["split.strategy"] = "holdout"  # the mode the releases before them had
        for kind in ("xgboost", "logistic"):
            result = inflamrx.train(load_config(None, quick | {"model.kind": kind}))
            out[f"train-{kind}"] = {
                "metrics": result.evaluation.to_mlflow_metrics(),
                "cv_auroc": result.cv_auroc,
                "files": model_file_hashes(result.model_uri, tmp / f"m-{kind}"),
            }
        tuned = inflamrx.tune(
            load_config(
                None,
                quick
                | {
                    "tuning.n_trials": 4,
                    "tuning.nested_folds": 2,
                    "tuning.nested_trials": 2,
                    "tuning.cv_folds": 3,
                },
            )
        )
        assert tuned.train is not None
        out["tune-xgboost"] = {
            "best_params": tuned.best_params,
            "best_cv_auroc": tuned.best_cv_auroc,
            "nested": tuned.nested.summary() if tuned.nested else None,
            "metrics": tuned.train.evaluation.to_mlflow_metrics(),
            "files": model_file_hashes(tuned.train.model_uri, tmp / "m-tune"),
        }
    text = json.dumps(out, indent=1, sort_keys=True, default=str)
    args.out.write_text(text)
    print(text[:2000])


if __name__ == "__main__":
    main()
