"""Two-arm benefit learners: p(response | treated), p(response | control) and their difference.

Each learner is a scikit-learn style estimator on the clinical feature matrix (the output of
the pipeline's fitted ``features`` step, NaN where a value is missing), fitted with
``fit(matrix, y, treated=...)``. The arm is a fitting input only: a prediction gives every
patient both arms' probabilities. The learners (PATH statement, Kent et al. 2020; meta-learners,
Kuenzel et al. 2019 and Kennedy 2023):

- ``interaction`` (effect modelling): L2-penalised logistic regression on all features plus the
  arm and arm x prespecified modifiers (CRP as a restricted cubic spline of log CRP: the
  logistic kind's ``MarkerSplines``, 4 knots at Harrell's quantiles; IL-6 linear in log),
  arm coded -1/2, +1/2 so the penalty treats both arms alike. Median imputation.
- ``risk`` (risk modelling): a penalised logistic baseline-risk model fitted blind to the arm,
  then the arm x linear-predictor interaction (weakly penalised, so tiny trials do not diverge).
- ``t_learner``: one tree model per arm.
- ``x_learner``: imputed individual effects from cross-fitted outcome models per arm, regressed
  per arm, combined with the known randomisation share.
- ``dr_learner``: doubly robust pseudo-outcomes from cross-fitted per-arm outcome models (the
  propensity is the known randomisation share), regressed on the features.

Tree learners use XGBoost or scikit-learn's histogram boosting (``model.kind``) with missing
values handled natively (no imputation step). ``explain`` returns exact SHAP values of the
predicted benefit on the learner's ``scale``: the log odds ratio (difference of the two arms'
log-odds explanations) for interaction, risk and T-learner; the risk difference (TreeSHAP of the
effect regressors) for X- and DR-learner. Base value + row sum equals the explained benefit.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from xgboost import XGBRegressor

from inflamrx.config import MODEL_CONFIGS, HistGBConfig, XGBoostConfig
from inflamrx.errors import InputError
from inflamrx.modeling.kinds._trees import tree_shap
from inflamrx.modeling.kinds.base import ShapValues, kind_of
from inflamrx.modeling.kinds.logistic import MarkerSplines

LOG_ODDS_RATIO = "log odds ratio"
RISK_DIFFERENCE = "risk difference"
TREE_KINDS = ("xgboost", "histgb")
EFFECT_PENALTY_C = 100.0  # the risk model's second stage: nearly unpenalised, never divergent


def _arrays(x: npt.ArrayLike, y: npt.ArrayLike | None, treated: npt.ArrayLike | None) -> Any:
    matrix = np.asarray(x, dtype=float)
    out = [matrix]
    for values, name in ((y, "y"), (treated, "treated")):
        if values is None:
            continue
        arr = np.asarray(values).astype(int).ravel()
        if len(arr) != len(matrix) or not np.isin(arr, (0, 1)).all():
            raise ValueError(f"'{name}' must hold one 0/1 value per row of X ({len(matrix)})")
        out.append(arr)
    return out


class BenefitLearner(BaseEstimator):
    """Shared interface: ``fit(X, y, treated)``, ``predict_arms``, ``benefit``, ``explain``."""

    learner: ClassVar[str]
    label: ClassVar[str]
    scale: ClassVar[str]
    models_: dict[str, Any]

    def fit(
        self,
        X: npt.ArrayLike,
        y: npt.ArrayLike,
        treated: npt.ArrayLike,
        feature_names: list[str] | None = None,
    ) -> BenefitLearner:
        matrix, y_arr, t_arr = _arrays(X, y, treated)
        if t_arr.min() == t_arr.max():
            raise InputError("a benefit model needs patients in both arms")
        self.n_features_in_ = matrix.shape[1]
        self.propensity_ = float(t_arr.mean())  # randomisation share: known in a trial
        self._fit(matrix, y_arr, t_arr, feature_names or [f"x{i}" for i in range(matrix.shape[1])])
        return self

    def _fit(self, x: np.ndarray, y: np.ndarray, t: np.ndarray, names: list[str]) -> None:
        raise NotImplementedError

    def predict_arms(self, X: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(p(response | treated), p(response | control)) per row."""
        raise NotImplementedError

    def benefit(self, X: npt.ArrayLike) -> np.ndarray:
        p1, p0 = self.predict_arms(X)
        return p1 - p0

    def explain(self, X: npt.ArrayLike) -> ShapValues:
        """Exact SHAP values of the predicted benefit on ``scale`` (base + sum = margin)."""
        raise NotImplementedError


# --- linear learners -------------------------------------------------------------------------


def _standardise(x: np.ndarray) -> tuple[SimpleImputer, StandardScaler]:
    # Missing-value indicators are features already (the features step adds them).
    imputer = SimpleImputer(strategy="median", keep_empty_features=True).fit(x)
    return imputer, StandardScaler().fit(imputer.transform(x))


class InteractionBenefit(BenefitLearner):
    learner = "interaction"
    label = "effect model (penalised logistic, arm x CRP spline and IL-6)"
    scale = LOG_ODDS_RATIO

    def __init__(
        self,
        *,
        modifiers: tuple[str, ...] = (),
        spline: str | None = None,
        C: float = 1.0,
        n_knots: int = 4,
        seed: int = 0,
    ) -> None:
        self.modifiers = modifiers  # feature names (the features step's clinical names)
        self.spline = spline  # the modifier modelled with a spline (log CRP)
        self.C = C
        self.n_knots = n_knots
        self.seed = seed

    def _fit(self, x: np.ndarray, y: np.ndarray, t: np.ndarray, names: list[str]) -> None:
        imputer, scaler = _standardise(x)
        self.models_ = {"impute": imputer, "scale": scaler}
        present = [m for m in self.modifiers if m in names]
        self.absent_modifiers_ = [m for m in self.modifiers if m not in names]
        self.modifier_columns_ = [names.index(m) for m in present]
        spline_at = names.index(self.spline) if self.spline in present else None
        self.spline_column_ = -1 if spline_at is None else spline_at
        imputed = imputer.transform(x)
        if spline_at is not None:
            # The logistic kind's restricted cubic spline (knots at Harrell's quantiles).
            self.models_["splines"] = MarkerSplines(self.n_knots, (spline_at,)).fit(imputed)
            self.models_["spline_scale"] = StandardScaler().fit(self._spline_basis(imputed))
        design = self._design(imputed, np.asarray(t, dtype=float) - 0.5)
        model = LogisticRegression(C=self.C, max_iter=5000, random_state=self.seed)
        self.models_["logistic"] = model.fit(design, y)

    def _spline_basis(self, imputed: np.ndarray) -> np.ndarray:
        """The spline column's terms: log CRP itself, then its nonlinear spline terms."""
        splines = self.models_["splines"]
        return np.asarray(splines.transform(imputed)[:, splines.source_ == self.spline_column_])

    def _terms(self, imputed: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(standardised features, modifier terms (mean 0 in training), owner column per term)."""
        z = self.models_["scale"].transform(imputed)
        terms, owners = [], []
        if self.spline_column_ >= 0:
            basis = self.models_["spline_scale"].transform(self._spline_basis(imputed))
            terms.append(basis)
            owners += [self.spline_column_] * basis.shape[1]
        linear = self._linear()
        terms.append(z[:, linear])
        owners += linear
        return z, np.hstack(terms), owners

    def _design(self, imputed: np.ndarray, arm: np.ndarray) -> np.ndarray:
        z, terms, _owners = self._terms(imputed)
        # Main effects: every feature linear (z) plus the spline's nonlinear terms (the
        # spline's first term is log CRP itself, already in z); the arm interacts with all.
        n_spline = terms.shape[1] - len(self._linear())
        return np.hstack([z, terms[:, 1:n_spline], arm[:, None], arm[:, None] * terms])

    def _linear(self) -> list[int]:
        return [c for c in self.modifier_columns_ if c != self.spline_column_]

    def _margins(self, x: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        imputed = self.models_["impute"].transform(np.asarray(x, dtype=float))
        model = self.models_["logistic"]
        ones = np.ones(len(imputed))
        treated = model.decision_function(self._design(imputed, 0.5 * ones))
        control = model.decision_function(self._design(imputed, -0.5 * ones))
        return treated, control

    def predict_arms(self, X: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        m1, m0 = self._margins(X)
        return _expit(m1), _expit(m0)

    def explain(self, X: npt.ArrayLike) -> ShapValues:
        matrix = np.asarray(X, dtype=float)
        imputed = self.models_["impute"].transform(matrix)
        _z, terms, owners = self._terms(imputed)
        coef = self.models_["logistic"].coef_.ravel()
        n_terms = terms.shape[1]
        arm_coef, term_coef = coef[-n_terms - 1], coef[len(coef) - n_terms :]
        values = np.zeros(matrix.shape)
        for k, owner in enumerate(owners):
            values[:, owner] += term_coef[k] * terms[:, k]
        m1, m0 = self._margins(matrix)
        # Terms have mean 0 in the training data: the base is the arm effect there.
        return ShapValues(values=values, base=float(arm_coef), margin=m1 - m0)


class RiskBenefit(BenefitLearner):
    learner = "risk"
    label = "risk model (PATH): baseline risk blind to arm, then arm x risk"
    scale = LOG_ODDS_RATIO

    def __init__(self, *, C: float = 1.0, seed: int = 0) -> None:
        self.C = C
        self.seed = seed

    def _fit(self, x: np.ndarray, y: np.ndarray, t: np.ndarray, names: list[str]) -> None:
        imputer, scaler = _standardise(x)
        z = scaler.transform(imputer.transform(x))
        risk = LogisticRegression(C=self.C, max_iter=5000, random_state=self.seed).fit(z, y)
        self.models_ = {"impute": imputer, "scale": scaler, "risk": risk}
        lp = risk.decision_function(z)
        self.lp_mean_ = float(lp.mean())
        effect = LogisticRegression(C=EFFECT_PENALTY_C, max_iter=5000, random_state=self.seed)
        self.models_["effect"] = effect.fit(self._design(lp, t - 0.5), y)

    def _design(self, lp: np.ndarray, arm: np.ndarray) -> np.ndarray:
        centred = lp - self.lp_mean_
        return np.column_stack([centred, arm, arm * centred])

    def _standardised(self, x: npt.ArrayLike) -> np.ndarray:
        matrix = np.asarray(x, dtype=float)
        return np.asarray(self.models_["scale"].transform(self.models_["impute"].transform(matrix)))

    def predict_arms(self, X: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        lp = self.models_["risk"].decision_function(self._standardised(X))
        effect, ones = self.models_["effect"], np.ones(len(lp))
        return (
            effect.predict_proba(self._design(lp, 0.5 * ones))[:, 1],
            effect.predict_proba(self._design(lp, -0.5 * ones))[:, 1],
        )

    def explain(self, X: npt.ArrayLike) -> ShapValues:
        z = self._standardised(X)
        risk, effect = self.models_["risk"], self.models_["effect"]
        w, b = risk.coef_.ravel(), float(risk.intercept_[0])
        _g_lp, g_arm, g_inter = effect.coef_.ravel()
        # log OR = g_arm + g_inter * (lp - lp_mean), lp = b + sum_j w_j z_j
        values = g_inter * w[None, :] * z
        ones = np.ones(len(z))
        lp = risk.decision_function(z)
        margin = effect.decision_function(self._design(lp, 0.5 * ones)) - effect.decision_function(
            self._design(lp, -0.5 * ones)
        )
        return ShapValues(values, float(g_arm + g_inter * (b - self.lp_mean_)), margin)


# --- tree meta-learners ----------------------------------------------------------------------


class _TreeLearner(BenefitLearner):
    def __init__(self, *, base: str = "xgboost", params: dict[str, Any] | None = None) -> None:
        self.base = base  # a tree model kind: xgboost or histgb
        self.params = params  # its config (model.* of the config), None: the kind's defaults

    def _config(self) -> Any:
        if self.base not in TREE_KINDS:
            raise InputError(
                f"the {self.learner} benefit model needs a tree model kind ({', '.join(TREE_KINDS)}) "
                f"for missing values without imputation; model.kind is {self.base!r}"
            )
        return MODEL_CONFIGS[self.base].model_validate({"kind": self.base, **(self.params or {})})

    def _classifier(self, x: np.ndarray, y: np.ndarray, arm: str) -> Any:
        if y.min() == y.max():
            raise InputError(
                f"the {arm} arm has a single outcome class ({len(y)} patients): the "
                f"{self.learner} cannot fit an outcome model for it"
            )
        return kind_of(self.base).estimator(self._config()).fit(x, y)

    def _regressor(self, x: np.ndarray, target: np.ndarray) -> Any:
        cfg = self._config()
        if isinstance(cfg, XGBoostConfig):
            reg: Any = XGBRegressor(
                n_estimators=cfg.n_estimators, max_depth=cfg.max_depth,
                learning_rate=cfg.learning_rate, subsample=cfg.subsample,
                colsample_bytree=cfg.colsample_bytree, min_child_weight=cfg.min_child_weight,
                reg_lambda=cfg.reg_lambda, reg_alpha=cfg.reg_alpha, tree_method="hist",
                random_state=cfg.seed, n_jobs=1,
            )  # fmt: skip
        else:
            assert isinstance(cfg, HistGBConfig)
            reg = HistGradientBoostingRegressor(
                max_iter=cfg.max_iter, learning_rate=cfg.learning_rate, max_depth=cfg.max_depth,
                max_leaf_nodes=cfg.max_leaf_nodes, min_samples_leaf=cfg.min_samples_leaf,
                l2_regularization=cfg.l2_regularization, early_stopping=False,
                random_state=cfg.seed,
            )  # fmt: skip
        return reg.fit(x, target)

    def _outcome(self, name: str, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.models_[name].predict_proba(x)[:, 1], dtype=float)

    def _effect(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_arms(self, X: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        matrix = np.asarray(X, dtype=float)
        p0 = self._outcome("control", matrix)
        # The effect regressors give a risk difference; the treated arm's probability is the
        # control one plus it, kept inside [0, 1].
        return np.clip(p0 + self._effect(matrix), 0.0, 1.0), p0


def _regressor_shap(model: Any, x: np.ndarray) -> ShapValues:
    trees = model.get_booster() if isinstance(model, XGBRegressor) else model._predictors
    return tree_shap(model, trees, x, model.predict(x))


class TLearnerBenefit(_TreeLearner):
    learner = "t_learner"
    label = "T-learner (one tree model per arm)"
    scale = LOG_ODDS_RATIO

    def _fit(self, x: np.ndarray, y: np.ndarray, t: np.ndarray, names: list[str]) -> None:
        self.models_ = {
            "treated": self._classifier(x[t == 1], y[t == 1], "treated"),
            "control": self._classifier(x[t == 0], y[t == 0], "control"),
        }

    def predict_arms(self, X: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        matrix = np.asarray(X, dtype=float)
        return self._outcome("treated", matrix), self._outcome("control", matrix)

    def explain(self, X: npt.ArrayLike) -> ShapValues:
        matrix = np.asarray(X, dtype=float)
        kind = kind_of(self.base)
        one = kind.shap_values(self.models_["treated"], matrix)
        zero = kind.shap_values(self.models_["control"], matrix)
        return ShapValues(one.values - zero.values, one.base - zero.base, one.margin - zero.margin)


class _CrossFitted(_TreeLearner):
    """A meta-learner whose second stage is fitted on targets built from per-arm outcome
    models that never saw the patient (``folds``-fold cross-fitting)."""

    def __init__(
        self,
        *,
        base: str = "xgboost",
        params: dict[str, Any] | None = None,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(base=base, params=params)
        self.folds = folds
        self.seed = seed

    def out_of_fold_arms(
        self, x: np.ndarray, y: np.ndarray, t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each patient's P(response | treated) and P(response | control) from the two arms'
        outcome models fitted on the other folds (folds stratified by arm and outcome)."""
        strata = 2 * t + y
        n_folds = min(self.folds, int(np.bincount(strata).min()))
        if n_folds < 2:
            name = self.label.split(" (")[0]
            raise InputError(f"the {name} needs at least 2 responders and non-responders per arm")
        scored, one, zero = [], [], []
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=self.seed)
        for fit_idx, score_idx in splitter.split(x, strata):
            xf, yf, tf = x[fit_idx], y[fit_idx], t[fit_idx]
            m1 = self._classifier(xf[tf == 1], yf[tf == 1], "treated")
            m0 = self._classifier(xf[tf == 0], yf[tf == 0], "control")
            scored.append(score_idx)
            one.append(m1.predict_proba(x[score_idx])[:, 1])
            zero.append(m0.predict_proba(x[score_idx])[:, 1])
        # Back in patient order, in the models' own dtype (XGBoost's float32).
        order = np.argsort(np.concatenate(scored))
        return np.concatenate(one)[order], np.concatenate(zero)[order]


class XLearnerBenefit(_CrossFitted):
    learner = "x_learner"
    label = "X-learner (cross-fitted imputed effects regressed per arm)"
    scale = RISK_DIFFERENCE

    def imputed_effects(self, x: np.ndarray, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Kuenzel's imputed effect of each patient: a treated patient's outcome minus its
        predicted control outcome, a control's predicted treated outcome minus its outcome.
        The other arm's model never saw the patient anyway; cross-fitting it as well ranked
        slightly better on each of seeds 0-2 of benefit_benchmark.py (model.kind xgboost:
        top-30% mean true benefit +0.003 to +0.005, Spearman +0.01 to +0.02)."""
        p1, p0 = self.out_of_fold_arms(x, y, t)
        return np.where(t == 1, y - p0, p1 - y)

    def _fit(self, x: np.ndarray, y: np.ndarray, t: np.ndarray, names: list[str]) -> None:
        on, off = t == 1, t == 0
        imputed = self.imputed_effects(x, y, t)
        self.models_ = {
            # The control model gives the served P(response | placebo); the treated one is
            # kept for the arms' own validation and explanation.
            "treated": self._classifier(x[on], y[on], "treated"),
            "control": self._classifier(x[off], y[off], "control"),
            "effect_treated": self._regressor(x[on], imputed[on]),
            "effect_control": self._regressor(x[off], imputed[off]),
        }

    def _effect(self, x: np.ndarray) -> np.ndarray:
        e = self.propensity_  # Kuenzel's g(x): the randomisation share
        tau0 = self.models_["effect_control"].predict(x)
        tau1 = self.models_["effect_treated"].predict(x)
        return np.asarray(e * tau0 + (1 - e) * tau1, dtype=float)

    def explain(self, X: npt.ArrayLike) -> ShapValues:
        matrix, e = np.asarray(X, dtype=float), self.propensity_
        zero = _regressor_shap(self.models_["effect_control"], matrix)
        one = _regressor_shap(self.models_["effect_treated"], matrix)
        return ShapValues(
            e * zero.values + (1 - e) * one.values,
            e * zero.base + (1 - e) * one.base,
            e * zero.margin + (1 - e) * one.margin,
        )


class DRLearnerBenefit(_CrossFitted):
    learner = "dr_learner"
    label = "DR-learner (cross-fitted doubly robust pseudo-outcomes)"
    scale = RISK_DIFFERENCE

    def _fit(self, x: np.ndarray, y: np.ndarray, t: np.ndarray, names: list[str]) -> None:
        e = self.propensity_
        p1, p0 = self.out_of_fold_arms(x, y, t)
        pseudo = p1 - p0 + t * (y - p1) / e - (1 - t) * (y - p0) / (1 - e)
        self.models_ = {
            "treated": self._classifier(x[t == 1], y[t == 1], "treated"),
            "control": self._classifier(x[t == 0], y[t == 0], "control"),
            "effect": self._regressor(x, pseudo),
        }

    def _effect(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.models_["effect"].predict(x), dtype=float)

    def explain(self, X: npt.ArrayLike) -> ShapValues:
        return _regressor_shap(self.models_["effect"], np.asarray(X, dtype=float))


def _expit(margin: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-margin)), dtype=float)


LEARNERS: dict[str, type[BenefitLearner]] = {
    c.learner: c
    for c in (InteractionBenefit, RiskBenefit, TLearnerBenefit, XLearnerBenefit, DRLearnerBenefit)
}
# Simplest first: the order in which a tie on the selection metric is broken.
SIMPLEST_FIRST = ("interaction", "risk", "t_learner", "x_learner", "dr_learner")

__all__ = ["LEARNERS", "LOG_ODDS_RATIO", "RISK_DIFFERENCE", "SIMPLEST_FIRST", "BenefitLearner"]
