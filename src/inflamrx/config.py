"""Job configuration: YAML files validated by pydantic, with ``--set key=value`` overrides.

Only the CLI reads files and the environment; library code receives a ``Config`` object.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inflamrx.errors import InputError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    path: str | list[str] = "data/synthetic.csv"
    join_on: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)  # canonical name: source column
    units: dict[str, str] = Field(default_factory=dict)  # canonical name: unit of the source
    recode: dict[str, dict[str, str | bool]] = Field(default_factory=dict)
    missing_codes: dict[str, list[float | str]] = Field(default_factory=dict)
    drop: list[str] = Field(default_factory=list)
    # Labels every run, log and report made from this data. None: synthetic when the file
    # has the `<stem>.meta.json` that `inflamrx simulate` writes beside it, saying so
    # (read once per job, by validation: data.simulate.says_synthetic).
    synthetic: bool | None = None

    @field_validator("recode", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        # YAML reads `{1: M}` with an integer key; source values are compared as text.
        if isinstance(value, dict):
            return {
                col: ({str(k): v for k, v in m.items()} if isinstance(m, dict) else m)
                for col, m in value.items()
            }
        return value

    @property
    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)


class OutcomeConfig(_Section):
    """What counts as a positive outcome (see cohort-schema.md, 'Follow-up and outcome')."""

    kind: Literal["response", "remission", "threshold", "column"] = "response"
    scale: Literal["madrs", "hamd17"] = "madrs"  # for response and remission
    column: str | None = None  # for threshold and column
    op: Literal[">=", ">", "<=", "<", "=="] | None = None  # for threshold
    value: float | None = None  # for threshold

    @model_validator(mode="after")
    def _complete(self) -> OutcomeConfig:
        if self.kind == "threshold" and None in (self.column, self.op, self.value):
            raise ValueError(
                "outcome.kind 'threshold' needs outcome.column, outcome.op and outcome.value"
            )
        if self.kind == "column" and self.column is None:
            raise ValueError("outcome.kind 'column' needs outcome.column (a yes/no column)")
        return self


class FeaturesConfig(_Section):
    include: list[str] | None = None  # feature groups or canonical columns; None = all
    exclude: list[str] = Field(default_factory=list)


class _ModelSection(_Section):
    """Parameters shared by every model kind. Each kind has its own class below (validated and
    logged alone) and its implementation in ``inflamrx.modeling.kinds.<kind>``."""

    seed: int = 0


class XGBoostConfig(_ModelSection):
    kind: Literal["xgboost"] = "xgboost"
    n_estimators: int = Field(300, ge=1)
    max_depth: int = Field(3, ge=1, le=12)
    learning_rate: float = Field(0.03, gt=0, le=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    min_child_weight: float = Field(5.0, ge=0)
    reg_lambda: float = Field(1.0, ge=0)
    reg_alpha: float = Field(0.0, ge=0)


class LogisticConfig(_ModelSection):
    """Penalised logistic regression."""

    kind: Literal["logistic"] = "logistic"
    C: float = Field(1.0, gt=0)
    penalty: Literal["l2", "l1", "elasticnet"] = "l2"
    l1_ratio: float = Field(0.5, ge=0, le=1)
    # Smooth terms (cubic B-splines, knots at quantiles) for log CRP, IL-6 and TNF-alpha;
    # 0: linear in every feature (release 0.1.0's model).
    spline_knots: int = Field(0, ge=0, le=10)


class HistGBConfig(_ModelSection):
    """scikit-learn's HistGradientBoostingClassifier (missing values handled natively)."""

    kind: Literal["histgb"] = "histgb"
    max_iter: int = Field(300, ge=1)
    learning_rate: float = Field(0.05, gt=0, le=1)
    max_depth: int | None = Field(3, ge=1, le=12)
    max_leaf_nodes: int = Field(15, ge=2)
    min_samples_leaf: int = Field(20, ge=1)
    l2_regularization: float = Field(1.0, ge=0)


CandidateKind = Literal["logistic", "histgb", "xgboost"]


def _all_candidates() -> list[CandidateKind]:
    return ["logistic", "xgboost"]


class AutoConfig(_ModelSection):
    """Compare ``candidates`` on the same resamples and keep one by the rule of
    ``inflamrx.modeling.choice`` (best validated AUROC, unless a simpler kind is not
    distinguishable from it). Candidates use their kind's small-sample settings."""

    kind: Literal["auto"] = "auto"
    # Simplest first: the order is the rule's notion of "simpler".
    candidates: list[CandidateKind] = Field(default_factory=_all_candidates, min_length=1)


# One class per kind, chosen by `model.kind` (a pydantic discriminated union).
ModelConfig = Annotated[
    XGBoostConfig | LogisticConfig | HistGBConfig | AutoConfig, Field(discriminator="kind")
]
MODEL_CONFIGS: dict[str, type[_ModelSection]] = {
    c.model_fields["kind"].default: c
    for c in (XGBoostConfig, LogisticConfig, HistGBConfig, AutoConfig)
}
# A model section without `kind` holds release 0.1.0's XGBoost parameters: it stays XGBoost.
# A config without a model section gets `auto`.
DEFAULT_KIND = "xgboost"


class SplitConfig(_Section):
    """How the figures of a training run are obtained.

    resample (default): fit on every patient; performance by repeated cross-validation
    (``resample: cv``, ``cv_repeats`` x ``cv_folds`` fits) or Harrell's bootstrap optimism
    correction (``resample: bootstrap``, ``n_resamples`` refits; it under-corrects tree
    ensembles, which memorise their bootstrap sample: see ``inflamrx.modeling.validation``).
    holdout: one random test set of ``test_size``. site: whole sites (``site_column``) held
    out as the test set.
    """

    strategy: Literal["resample", "holdout", "site"] = "resample"
    resample: Literal["cv", "bootstrap"] = "cv"
    n_resamples: int = Field(20, ge=2)  # resample: bootstrap
    test_size: float = Field(0.25, gt=0, lt=1)  # holdout and site
    site_column: str = "site"  # site
    cv_folds: int = Field(5, ge=2)
    cv_repeats: int = Field(2, ge=1)  # CV repeats (holdout and site: on the training part)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _read_older_releases(cls, tree: Any) -> Any:
        if not isinstance(tree, dict) or "strategy" in tree:
            return tree
        tree = dict(tree)
        group_by = tree.pop("group_by", None)
        if group_by is not None:
            tree |= {"strategy": "site", "site_column": group_by}
            _deprecated(
                f"split.group_by is now split.strategy: site with split.site_column: {group_by}"
            )
        elif "test_size" in tree:  # a held-out test set was asked for: keep it
            tree["strategy"] = "holdout"
            _deprecated(
                "split.test_size without split.strategy: read as split.strategy: holdout (the "
                "default is now resample: fit on every patient, validate by repeated "
                "cross-validation)"
            )
        return tree

    @property
    def group_by(self) -> str | None:
        """The column whose values are held out together (site strategy), else None."""
        return self.site_column if self.strategy == "site" else None


def _deprecated(message: str) -> None:
    warnings.warn(message, DeprecationWarning, stacklevel=4)


class EvaluationConfig(_Section):
    n_bootstrap: int = Field(1000, ge=100)
    # Probabilities at which sensitivity, PPV... are reported. None: chosen from the outcome's
    # prevalence in the training part (fixed 0.3/0.5 report nothing at 9% prevalence).
    thresholds: list[float] | None = None
    subgroups: list[str] = Field(default_factory=lambda: ["sex", "age_band", "trd", "site"])
    seed: int = 0


class TrackingConfig(_Section):
    experiment: str = "inflamrx"
    run_name: str | None = None  # None: job, kind, outcome, data and n (see jobs.train)


class RegistryConfig(_Section):
    name: str = "inflamrx-response"
    enabled: bool = True  # register the model under `name` after training


class ServingConfig(_Section):
    threshold: float = Field(0.5, gt=0, lt=1)  # decision threshold stored with the model
    top_factors: int = Field(3, ge=0, le=20)  # SHAP reasons returned per patient; 0 = none


class ParamRange(_Section):
    """One hyperparameter's search range: numeric (low..high, optionally log/integer) or choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: list[str | float] | None = None

    @model_validator(mode="after")
    def _complete(self) -> ParamRange:
        if self.choices is None and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError("a search range needs low <= high, or a list of choices")
        if self.log and self.low is not None and self.low <= 0:
            raise ValueError("a log-scale search range needs low > 0")
        return self


class TuningConfig(_Section):
    n_trials: int = Field(40, ge=1)
    timeout_s: float | None = Field(None, gt=0)  # stop starting trials after this many seconds
    seed: int = 0  # TPE sampler seed
    pruner: Literal["median", "hyperband", "none"] = "median"
    cv_folds: int = Field(5, ge=2)  # folds inside each trial (training data only)
    # Honest estimate of the whole procedure: outer folds, each running its own inner study.
    nested_folds: int = Field(3, ge=2)
    nested_trials: int | None = Field(None, ge=1)  # trials per inner study; None = n_trials
    # XGBoost early stopping on an inner validation part of each fitting fold.
    early_stopping_rounds: int = Field(30, ge=1)
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    # Each running trial writes a heartbeat this often; one silent for 3 intervals (its process
    # was killed) is marked FAIL, so a resumed study neither loses nor repeats it.
    heartbeat_s: int = Field(5, ge=1)
    # A trial's fold score: AUROC - calibration_guard x |ln(calibration slope)| (AUROC alone
    # rewards settings that flatten predictions). A study keeps the guard it was started with.
    calibration_guard: float = Field(0.3, ge=0)
    # The search space (parameter: range) for the config's model kind; None: the kind's own
    # default (SEARCH_SPACE in inflamrx.modeling.kinds.<kind>).
    space: dict[str, ParamRange] | None = None
    # Release 0.1.0's per-kind keys, still read: used when model.kind is that kind.
    xgboost_space: dict[str, ParamRange] | None = None
    logistic_space: dict[str, ParamRange] | None = None

    def space_for(self, kind: str) -> dict[str, ParamRange] | None:
        """The configured space for ``kind`` (None: the kind's default)."""
        legacy = {"xgboost": self.xgboost_space, "logistic": self.logistic_space}.get(kind)
        return self.space if self.space is not None else legacy


def _check_space(space: dict[str, ParamRange] | None, kind: str) -> None:
    if space is None:
        return
    tunable = set(MODEL_CONFIGS[kind].model_fields) - {"seed", "kind"}
    unknown = sorted(set(space) - tunable)
    if unknown:
        allowed = ", ".join(sorted(tunable))
        raise ValueError(
            f"unknown model parameters {unknown} in a search space for model.kind {kind!r}; "
            f"allowed: {allowed}"
        )


BENEFIT_LEARNERS = ("interaction", "risk", "t_learner", "x_learner", "dr_learner")


class TreatmentConfig(_Section):
    """A two-arm (treatment-effect) analysis: the arm column and its two values (names from the
    data contract), and the harm threshold: the absolute benefit, in probability of response,
    below which treatment is not worth its risks and cost. Without this section a file holding
    both arms is refused, never pooled."""

    column: Literal["arm"] = "arm"
    treated: Literal["drug", "placebo"] = "drug"
    control: Literal["drug", "placebo"] = "placebo"
    harm_threshold: float = Field(0.05, ge=0, lt=1)
    # "auto": the rule of inflamrx.jobs.benefit chooses among the learners the data support.
    learner: Literal["auto", "interaction", "risk", "t_learner", "x_learner", "dr_learner"] = "auto"
    # Prespecified effect modifiers of the interaction model (canonical columns; CRP: a spline).
    modifiers: list[str] = Field(default_factory=lambda: ["crp_mg_l", "il6_pg_ml"])
    interaction_C: float = Field(1.0, gt=0)  # L2 penalty of the interaction and risk models
    # Validation: cross-fitted on all patients, or once on a held-out split (split.test_size).
    validation: Literal["crossfit", "holdout"] = "crossfit"
    crossfit_folds: int = Field(5, ge=2)
    # Below this many patients in the smaller arm only the interaction model is fitted.
    min_per_arm_for_learners: int = Field(150, ge=10)

    @model_validator(mode="after")
    def _two_values(self) -> TreatmentConfig:
        if self.treated == self.control:
            raise ValueError(
                f"treatment.treated and treatment.control must differ (both {self.treated!r})"
            )
        return self


class ReportConfig(_Section):
    enabled: bool = True  # train and tune write the SHAP report for the logged model
    max_patients: int = Field(2000, ge=10)  # rows explained for the cohort figures (sampled)
    example_patients: int = Field(3, ge=0, le=20)  # per-patient waterfalls in the report
    dependence_features: int = Field(6, ge=1, le=20)
    seed: int = 0
    # Pseudonymous patient ids in the SHAP table logged to the tracking store (off: a row
    # number instead, so logged raw values link to no patient).
    include_patient_ids: bool = False


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    outcome: OutcomeConfig = Field(default_factory=OutcomeConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    model: ModelConfig = Field(default_factory=AutoConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    treatment: TreatmentConfig | None = None  # two-arm data: fit a benefit model

    @model_validator(mode="before")
    @classmethod
    def _read_older_releases(cls, tree: Any) -> Any:
        if not isinstance(tree, dict):
            return tree
        tree = dict(tree)
        if "simulate" in tree:  # release 0.1.0 kept `inflamrx simulate` options here, unused
            tree.pop("simulate")
            warnings.warn(
                "the config's 'simulate' section is no longer used and is ignored; give "
                "`inflamrx simulate` its options (--n, --seed, --two-arm) on the command line",
                DeprecationWarning,
                stacklevel=2,
            )
        model = tree.get("model")
        if isinstance(model, dict) and "kind" not in model:
            tree["model"] = {"kind": DEFAULT_KIND, **model}
        return tree

    @model_validator(mode="after")
    def _spaces_fit_their_kind(self) -> Config:
        kind = self.model.kind
        if kind == "auto" and self.tuning.space is not None:
            raise ValueError(
                "tuning.space names one kind's parameters, but model.kind is auto (the search "
                "goes across kinds): give them per kind in tuning.xgboost_space / "
                "tuning.logistic_space, or set model.kind"
            )
        _check_space(self.tuning.space, kind)
        _check_space(self.tuning.xgboost_space, "xgboost")
        _check_space(self.tuning.logistic_space, "logistic")
        return self


def for_tuning(config: Config) -> Config:
    """The config ``inflamrx tune`` runs: it validates by nested CV plus a held-out test set,
    so ``split.strategy: resample`` holds out a test set as ``holdout`` does. ``model.kind:
    auto`` stays auto: the kind is then a parameter of each trial (``jobs.tune.search``)."""
    if config.split.strategy == "resample":
        split = config.split.model_copy(update={"strategy": "holdout"})
        return config.model_copy(update={"split": split})
    return config


def as_tuned_by_0_1_0(config: Config) -> Config:
    """``model.kind: auto`` as release 0.1.0 tuned it: XGBoost, with its default parameters
    (its studies, under their default names, are resumed as they were started)."""
    if config.model.kind != "auto":
        return config
    return config.model_copy(update={"model": XGBoostConfig(seed=config.model.seed)})


def _format_error(err: ValidationError, source: str, tree: dict[str, Any]) -> str:
    lines = [f"{source}: the configuration is not valid."]
    for e in err.errors():
        loc = _without_kind_tags(e["loc"])
        key = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            parent = _section_for(loc[:-1], tree)
            allowed = ", ".join(sorted(parent.model_fields)) if parent else "?"
            lines.append(f"  unknown key '{key}'. Allowed keys here: {allowed}.")
        elif e["type"] == "union_tag_invalid":
            kinds = [repr(k) for k in MODEL_CONFIGS]
            one_of = ", ".join(kinds[:-1]) + " or " + kinds[-1]
            got = e.get("ctx", {}).get("tag")
            lines.append(f"  '{key}.kind': must be one of {one_of} (got {got!r}).")
            lines += _default_kind_errors(tree.get("model"))
        else:
            lines.append(f"  '{key}': {e['msg']} (got {e.get('input')!r}).")
    return "\n".join(lines)


def _without_kind_tags(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    # pydantic puts the chosen union member's tag in the path: ('model', 'xgboost', 'max_depth').
    if len(loc) > 1 and loc[0] == "model" and loc[1] in MODEL_CONFIGS:
        return (loc[0], *loc[2:])
    return loc


def _default_kind_errors(model: Any) -> list[str]:
    """With an unknown kind the other model keys cannot be checked against it; check them
    against the default kind so every bad value is still reported at once."""
    if not isinstance(model, dict):
        return []
    rest = {k: v for k, v in model.items() if k != "kind"}
    try:
        MODEL_CONFIGS[DEFAULT_KIND].model_validate(rest)
    except ValidationError as err:
        return [
            f"  'model.{'.'.join(str(p) for p in e['loc'])}': {e['msg']} (got {e.get('input')!r})."
            for e in err.errors()
            if e["type"] != "extra_forbidden"
        ]
    return []


def _section_for(loc: tuple[int | str, ...], tree: dict[str, Any]) -> type[BaseModel] | None:
    if loc == ("model",):
        model_tree = tree.get("model")
        kind = model_tree.get("kind", DEFAULT_KIND) if isinstance(model_tree, dict) else None
        return MODEL_CONFIGS.get(str(kind))
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        # An optional section (treatment: TreatmentConfig | None) is checked as its class.
        ann = next((a for a in getattr(ann, "__args__", ()) if isinstance(a, type)), ann)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InputError(f"--set {dotted}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["model.max_depth=4"]`` into ``{"model.max_depth": 4}`` (values read as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(
                f"--set expects key=value (for example model.max_depth=4), got {pair!r}"
            )
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


def build_config(
    tree: dict[str, Any], overrides: dict[str, Any] | None = None, source: str = "config"
) -> Config:
    tree = _deep_copy(tree)
    for dotted, value in (overrides or {}).items():
        _set_dotted(tree, dotted, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise InputError(_format_error(err, source, tree)) from None


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    data_path: str | None = None,
) -> Config:
    """Read a YAML config (None: the embedded defaults) and apply overrides."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"config file not found: {path}") from None
        except IsADirectoryError:
            raise InputError(f"{path} is a folder; give the path of a YAML config file") from None
        except UnicodeDecodeError:
            raise InputError(f"{path} is not a text (UTF-8) YAML file") from None
        except yaml.YAMLError as err:
            raise InputError(f"{path} is not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError(f"{path}: a config must be a mapping of sections, got {loaded!r}")
        tree = loaded or {}
    overrides = dict(overrides or {})
    if data_path is not None:
        overrides["data.path"] = data_path
    return build_config(tree, overrides, source)


def flatten(config: Config) -> dict[str, str]:
    """Dotted key -> value text, for MLflow params."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = str(node)

    walk("", config.model_dump(mode="json"))
    return out


def _deep_copy(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: (_deep_copy(v) if isinstance(v, dict) else v) for k, v in tree.items()}
