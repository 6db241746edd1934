"""Is the cohort large enough for the model? Riley et al.'s minimum sample size criteria for a
prediction model of a binary outcome (Riley et al., Stat Med 2019;38:1276; BMJ 2020;368:m441;
the method of the ``pmsampsize`` package):

(i) expected uniform shrinkage >= 0.9: n >= P / ((S - 1) ln(1 - R2cs / S));
(ii) optimism in Nagelkerke's R2 <= 0.05: criterion (i) with S = R2cs / (R2cs + 0.05 max R2cs);
(iii) the overall outcome proportion within +/- 0.05: n >= (1.96 / 0.05)^2 phi (1 - phi).

P is the number of candidate predictor parameters, phi the outcome proportion, R2cs the
anticipated Cox-Snell R2 (adjusted), max R2cs = 1 - (phi^phi (1 - phi)^(1 - phi))^2. The job
takes R2cs from the model's own validated C-statistic (``r2cs_from_c``, the conversion of Riley
et al. 2021 that pmsampsize's ``cstatistic`` option uses) and reports the shrinkage to expect
at the cohort's size (van Houwelingen's heuristic, the relation criterion (i) inverts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

TARGET_SHRINKAGE = 0.9
R2_OPTIMISM = 0.05
MARGIN = 0.05
CONSERVATIVE = 0.15


def max_r2cs(prevalence: float) -> float:
    phi = prevalence
    return 1.0 - (phi**phi * (1.0 - phi) ** (1.0 - phi)) ** 2


def _n_for_shrinkage(parameters: int, r2cs: float, shrinkage: float) -> int:
    return math.ceil(parameters / ((shrinkage - 1.0) * math.log(1.0 - r2cs / shrinkage)))


def r2cs_from_c(c_statistic: float, prevalence: float) -> float:
    """Cox-Snell R2 of a logistic model with this C-statistic: the linear predictor normal
    with equal variance in events and non-events (Riley et al., Diagn Progn Res 2021), the
    likelihood ratio integrated exactly instead of simulated."""
    c = min(max(c_statistic, 0.5), 0.999)
    mu = math.sqrt(2.0) * norm.ppf(c)
    grid = np.linspace(-8.0, 8.0 + mu, 4001)
    dx = grid[1] - grid[0]
    f1, f0 = norm.pdf(grid, mu), norm.pdf(grid)
    # The exact log odds for two equal-variance normals: linear in the predictor.
    p = 1.0 / (1.0 + np.exp(-(math.log(prevalence / (1 - prevalence)) + mu * grid - mu**2 / 2)))
    ll = (
        prevalence * np.sum(f1 * np.log(p)) * dx
        + (1 - prevalence) * np.sum(f0 * np.log(1 - p)) * dx
    )
    ll_null = prevalence * math.log(prevalence) + (1 - prevalence) * math.log(1 - prevalence)
    return float(1.0 - math.exp(-2.0 * (ll - ll_null)))


def expected_shrinkage(n: int, parameters: int, r2cs: float) -> float:
    """The S with S = 1 + P / (n ln(1 - R2cs / S)): the uniform shrinkage to expect."""

    def gap(s: float) -> float:
        return 1.0 + parameters / (n * math.log(1.0 - r2cs / s)) - s

    # gap > 0 just above R2cs and < 0 at 1: the largest root, found from 1 downwards.
    grid = np.linspace(1.0, r2cs + 1e-9, 2001)
    values = np.array([gap(s) for s in grid])
    above = np.flatnonzero(values >= 0)
    if len(above) == 0 or above[0] == 0:
        return float("nan")
    return float(brentq(gap, grid[above[0]], grid[above[0] - 1]))


@dataclass(frozen=True)
class SampleSize:
    n: int
    events: int
    parameters: int
    prevalence: float
    r2cs: float  # anticipated Cox-Snell R2 used
    c_statistic: float | None  # where R2cs came from
    n_shrinkage: int  # criterion (i)
    n_r2_optimism: int  # criterion (ii)
    n_prevalence: int  # criterion (iii)
    shrinkage: float  # expected at n

    @property
    def n_required(self) -> int:
        return max(self.n_shrinkage, self.n_r2_optimism, self.n_prevalence)

    @property
    def met(self) -> bool:
        return self.n >= self.n_required

    @property
    def epp(self) -> float:
        return min(self.events, self.n - self.events) / self.parameters

    def text(self) -> str:
        source = (
            f" (from the validated C-statistic {self.c_statistic:.3f})" if self.c_statistic else ""
        )
        head = (
            f"Sample size (Riley et al. criteria, {self.parameters} candidate parameters, "
            f"outcome proportion {self.prevalence:.2f}, anticipated Cox-Snell R2 "
            f"{self.r2cs:.3f}{source}): needs {self.n_required} patients "
            f"(shrinkage >= 0.9: {self.n_shrinkage}; R2 optimism <= 0.05: {self.n_r2_optimism}; "
            f"outcome proportion +/- 0.05: {self.n_prevalence}); the cohort has {self.n}"
        )
        if self.met:
            return f"{head}: met. Expected shrinkage {self.shrinkage:.2f}."
        return (
            f"{head}: NOT met. Expected shrinkage {self.shrinkage:.2f}: predictions will be too "
            "extreme on new patients unless shrunk; prefer a penalised model, fewer candidate "
            "predictors, and check the validated calibration slope."
        )


def riley_criteria(
    n: int,
    events: int,
    parameters: int,
    *,
    r2cs: float | None = None,
    c_statistic: float | None = None,
) -> SampleSize:
    """The three criteria for ``parameters`` candidate parameters, from an anticipated
    Cox-Snell ``r2cs`` or from a ``c_statistic``."""
    if parameters < 1:
        raise ValueError("parameters must be at least 1")
    phi = events / n
    if r2cs is None:
        # No C-statistic: 15% of the largest possible R2cs, Riley et al.'s conservative choice.
        r2cs = (
            CONSERVATIVE * max_r2cs(phi) if c_statistic is None else r2cs_from_c(c_statistic, phi)
        )
    r2cs = min(r2cs, 0.999 * max_r2cs(phi))
    s_r2 = r2cs / (r2cs + R2_OPTIMISM * max_r2cs(phi))
    return SampleSize(
        n=n,
        events=events,
        parameters=parameters,
        prevalence=phi,
        r2cs=r2cs,
        c_statistic=c_statistic,
        n_shrinkage=_n_for_shrinkage(parameters, r2cs, TARGET_SHRINKAGE),
        n_r2_optimism=_n_for_shrinkage(parameters, r2cs, s_r2),
        n_prevalence=math.ceil((1.96 / MARGIN) ** 2 * phi * (1 - phi)),
        shrinkage=expected_shrinkage(n, parameters, r2cs),
    )
