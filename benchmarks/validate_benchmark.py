"""Benchmark: the cohort contract (``validate_frame``) on one record and on a large batch.

Run: .venv/bin/python benchmarks/validate_benchmark.py [--repeat 200] [--rows 100000]

1. One typed record (what a served model receives): ``validate_frame`` and its parts
   (``table_from_frame``, parsing, the contract's checks), side by side with the same
   ``validate_frame`` running the pandera schema's checks instead of
   ``schema.contract_failures`` (the per-request aim of issue 14), then the fitted feature step
   (``ClinicalFeatures.transform``) and ``XGBClassifier.predict_proba`` on that record.
2. ``--rows`` typed records (the synthetic cohort repeated, unique patient ids):
   ``validate_frame`` once per repeat (best of 3).

Figures are medians in milliseconds (single record) and seconds (batch). Needs
data/synthetic.csv (``inflamrx simulate``); runs from the repository root.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from xgboost import XGBClassifier

import inflamrx.data.validate as validate_module
from inflamrx.config import DataConfig, load_config
from inflamrx.data.ingest import table_from_frame
from inflamrx.data.schema import contract_failures, pandera_failures
from inflamrx.data.validate import _Checker, _parse, validate_cohort, validate_frame
from inflamrx.modeling.features import ClinicalFeatures

_DROP = ("madrs_week", "hamd17_week", "response", "remission")


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm up (imports, caches)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _cohort() -> pd.DataFrame:
    accepted = validate_cohort(load_config("configs/default.yaml").data).accepted
    return accepted.drop(columns=[c for c in accepted.columns if c.startswith(_DROP)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()

    cohort = _cohort()
    one = cohort.iloc[[0]].reset_index(drop=True)
    data = DataConfig()
    print(f"one record: {one.shape[1]} columns")
    result = validate_frame(one)
    assert len(result.accepted) == 1 and not result.problems, result.problems

    source = table_from_frame(one, keep_numbers=True)

    def parse() -> object:
        return _parse(source.raw, _Checker(source.raw, source.rows), data)

    def with_pandera() -> object:
        validate_module.contract_failures = pandera_failures  # type: ignore[assignment]
        try:
            return validate_frame(one)
        finally:
            validate_module.contract_failures = contract_failures

    parts = {
        "validate_frame": lambda: validate_frame(one),
        "validate_frame, pandera checks": with_pandera,
        "  table_from_frame": lambda: table_from_frame(one, keep_numbers=True),
        "  _parse": parse,
        "  contract_failures": lambda: contract_failures(result.accepted),
        "  pandera_failures": lambda: pandera_failures(result.accepted),
    }
    ms = {name: _median_ms(fn, args.repeat) for name, fn in parts.items()}
    for name, value in ms.items():
        print(f"{name:32s} {value:8.2f} ms")
    print(
        f"pandera checks / contract_failures: {ms['  pandera_failures'] / ms['  contract_failures']:.1f}x; "
        f"validate_frame with pandera / without: "
        f"{ms['validate_frame, pandera checks'] / ms['validate_frame']:.2f}x"
    )

    features = ClinicalFeatures().fit(cohort)
    matrix = features.transform(cohort)
    rng = np.random.default_rng(0)
    model = XGBClassifier(n_estimators=200, max_depth=3).fit(
        matrix, rng.integers(0, 2, len(matrix))
    )
    row = features.transform(result.accepted)
    print(
        f"{'ClinicalFeatures.transform':32s} {_median_ms(lambda: features.transform(result.accepted), args.repeat):8.2f} ms"
    )
    print(
        f"{'XGBClassifier.predict_proba':32s} {_median_ms(lambda: model.predict_proba(row), args.repeat):8.2f} ms"
    )

    big = cohort.iloc[np.arange(args.rows) % len(cohort)].reset_index(drop=True)
    big["patient_id"] = [f"P{i:07d}" for i in range(len(big))]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        out = validate_frame(big)
        times.append(time.perf_counter() - start)
    assert len(out.accepted) == len(big), len(out.rejected)
    print(f"validate_frame, {len(big):,} rows: {min(times):.3f} s (best of 3)")


if __name__ == "__main__":
    main()
