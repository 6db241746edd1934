"""Benchmark: who benefits from the drug, against ranking by CRP alone and the oracle.

Run: .venv/bin/python benchmarks/benefit_benchmark.py [--seeds 0 1 2] [--n 1500] [--n-test 4000]
On each seed, a SYNTHETIC two-arm trial (`inflamrx simulate --two-arm`, 1:1) of ``--n``
patients trains every benefit learner, and the default model is chosen as `inflamrx train`
chooses it (cross-fitted C-for-benefit, ``jobs.benefit.SELECTION_RULE``). A separate large
two-arm cohort is the test set; its truth file gives each patient's true benefit
(p_drug - p_placebo). Printed per seed and learner: the mean true benefit among the 30%
ranked highest, the Spearman correlation with the true benefit, the C-for-benefit on the test
patients' realised outcomes (95% bootstrap CI) and the fit's wall time, beside ranking by CRP
alone and the oracle (the true benefit). Last: the pooled bootstrap CI (test patients resampled
within each seed) of (default model - CRP ranking) top-30% mean true benefit; done when it is
above 0. That CI holds each seed's training trial fixed (the spread between seeds shows how
much a new trial would move the figures). Tracking is not used (no MLflow run); only fits, predictions and the validation.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from inflamrx.config import Config, build_config
from inflamrx.data.arms import requirement
from inflamrx.data.simulate import simulate_cohort, write_cohort
from inflamrx.data.validate import validate_cohort
from inflamrx.jobs.benefit import (
    SELECTION_BOOTSTRAP,
    choose,
    validate_predictions,
)
from inflamrx.modeling.benefit.cohort import (
    TwoArmCohort,
    crossfit,
    prepare_two_arm,
    supported_learners,
)
from inflamrx.modeling.kinds.benefit import BENEFIT, fit_benefit

TOP = 0.3


def _cohort(n: int, seed: int, folder: Path, config: Config) -> tuple[TwoArmCohort, np.ndarray]:
    sim = simulate_cohort(n, seed, two_arm=True)
    path = folder / f"trial-{seed}-{n}.csv"
    write_cohort(sim, path)
    assert config.treatment is not None
    validated = validate_cohort(
        config.data.model_copy(update={"path": str(path)}), require=requirement(config.treatment)
    )
    data = prepare_two_arm(validated, config)
    truth = sim.truth.set_index("patient_id").loc[data.cohort["patient_id"]]
    return data, (truth["p_response_drug"] - truth["p_response_placebo"]).to_numpy()


def top_mean(score: np.ndarray, truth: np.ndarray) -> float:
    k = round(TOP * len(score))
    return float(truth[np.argsort(-score, kind="stable")[:k]].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--n-test", type=int, default=4000)
    parser.add_argument("--n-boot", type=int, default=200, help="C-for-benefit CI resamples")
    parser.add_argument("--set", dest="sets", nargs="*", default=[], help="config key=value")
    args = parser.parse_args()
    overrides = dict(s.split("=", 1) for s in args.sets)
    config = build_config({"treatment": {}, "data": {"synthetic": True}}, overrides)
    rows, pooled = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            train, _ = _cohort(args.n, seed, Path(tmp), config)
            test, truth = _cohort(args.n_test, 10_000 + seed, Path(tmp), config)
            learners, _notes = supported_learners(config, train)
            chosen_by: dict[str, float] = {}
            scores: dict[str, np.ndarray] = {}
            for name in learners:
                oof = crossfit(config, name, train)
                quick = validate_predictions(train, oof, config, SELECTION_BOOTSTRAP)
                chosen_by[name] = float(quick.as_metrics().get("c_for_benefit", np.nan))
                start = time.perf_counter()
                fitted = fit_benefit(config, name, train.x, train.y, train.treated)
                seconds = time.perf_counter() - start
                predicted = fitted.predict(test.x)
                scores[name] = predicted[BENEFIT].to_numpy()
                valid = validate_predictions(test, predicted, config, args.n_boot).as_metrics()
                rows.append(
                    {
                        "seed": seed,
                        "ranking": name,
                        "top30_true_benefit": top_mean(scores[name], truth),
                        "spearman": float(spearmanr(scores[name], truth)[0]),
                        "c_for_benefit": valid.get("c_for_benefit", np.nan),
                        "c_ci_low": valid.get("c_for_benefit_ci_low", np.nan),
                        "c_ci_high": valid.get("c_for_benefit_ci_high", np.nan),
                        "fit_seconds": seconds,
                        "crossfit_c_for_benefit": chosen_by[name],
                    }
                )
            default = choose(chosen_by)
            crp = test.crp
            for name, score in (("CRP alone", np.log(np.maximum(crp, 1e-3))), ("oracle", truth)):
                row = {
                    "seed": seed,
                    "ranking": name,
                    "top30_true_benefit": top_mean(score, truth),
                    "spearman": float(spearmanr(score, truth)[0]),
                }
                if name == "CRP alone":  # the validation ranks CRP alone beside each model
                    row |= {
                        "c_for_benefit": valid.get("crp_alone_c_for_benefit", np.nan),
                        "c_ci_low": valid.get("crp_alone_c_for_benefit_ci_low", np.nan),
                        "c_ci_high": valid.get("crp_alone_c_for_benefit_ci_high", np.nan),
                    }
                rows.append(row)
            rows.append({"seed": seed, "ranking": f"default = {default}"})
            pooled.append((scores[default], np.log(np.maximum(crp, 1e-3)), truth))
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("SYNTHETIC two-arm cohorts: mean true benefit among the top 30% ranked")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        summary = table.dropna(subset=["top30_true_benefit"]).groupby("ranking")[
            ["top30_true_benefit", "spearman", "c_for_benefit", "fit_seconds"]
        ]
        print("\nmean over seeds")
        print(summary.mean().to_string(float_format=lambda v: f"{v:.3f}"))
    estimate, low, high = pooled_difference(pooled, n_boot=1000, seed=0)
    verdict = "above 0: done" if low > 0 else "NOT above 0"
    print(
        f"\ndefault model - CRP ranking, top-30% mean true benefit, pooled over "
        f"{len(pooled)} seeds: {estimate:+.4f} (95% bootstrap CI {low:+.4f} to {high:+.4f}; "
        f"{verdict})"
    )


def pooled_difference(
    seeds: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_boot: int, seed: int
) -> tuple[float, float, float]:
    """Mean over seeds of (model - CRP) top-30% mean true benefit, with a percentile CI from
    resampling each seed's test patients."""
    rng = np.random.default_rng(seed)

    def diff(index: list[np.ndarray]) -> float:
        return float(
            np.mean(
                [
                    top_mean(m[i], t[i]) - top_mean(c[i], t[i])
                    for (m, c, t), i in zip(seeds, index, strict=True)
                ]
            )
        )

    estimate = diff([np.arange(len(t)) for _, _, t in seeds])
    boots = [diff([rng.integers(0, len(t), len(t)) for _, _, t in seeds]) for _ in range(n_boot)]
    low, high = np.percentile(boots, [2.5, 97.5])
    return estimate, float(low), float(high)


if __name__ == "__main__":
    main()
