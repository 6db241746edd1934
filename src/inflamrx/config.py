"""Job configuration: YAML files validated by pydantic, with ``--set key=value`` overrides.

Only the CLI reads files and the environment; library code receives a ``Config`` object.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

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
    # has the `<stem>.meta.json` that `inflamrx simulate` writes beside it, saying so.
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

    @property
    def is_synthetic(self) -> bool:
        if self.synthetic is not None:
            return self.synthetic
        return any(_says_synthetic(Path(p).with_suffix(".meta.json")) for p in self.paths)


def _says_synthetic(meta: Path) -> bool:
    try:
        return bool(json.loads(meta.read_text()).get("synthetic", False))
    except (OSError, ValueError, AttributeError):
        return False


class SimulateConfig(_Section):
    n: int = Field(2000, ge=10)
    seed: int = 0
    two_arm: bool = False


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


class ModelConfig(_Section):
    kind: Literal["xgboost", "logistic"] = "xgboost"
    # XGBoost
    n_estimators: int = Field(300, ge=1)
    max_depth: int = Field(3, ge=1, le=12)
    learning_rate: float = Field(0.03, gt=0, le=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    min_child_weight: float = Field(5.0, ge=0)
    reg_lambda: float = Field(1.0, ge=0)
    reg_alpha: float = Field(0.0, ge=0)
    # penalised logistic regression
    C: float = Field(1.0, gt=0)
    penalty: Literal["l2", "l1", "elasticnet"] = "l2"
    l1_ratio: float = Field(0.5, ge=0, le=1)
    seed: int = 0


class SplitConfig(_Section):
    test_size: float = Field(0.25, gt=0, lt=1)
    group_by: str | None = None  # e.g. "site": held-out sites instead of held-out patients
    cv_folds: int = Field(5, ge=2)
    cv_repeats: int = Field(2, ge=1)
    seed: int = 0


class EvaluationConfig(_Section):
    n_bootstrap: int = Field(1000, ge=100)
    thresholds: list[float] = Field(default_factory=lambda: [0.3, 0.5])
    subgroups: list[str] = Field(default_factory=lambda: ["sex", "age_band", "trd", "site"])
    seed: int = 0


class TrackingConfig(_Section):
    experiment: str = "inflamrx"


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


def _xgboost_space() -> dict[str, ParamRange]:
    return {
        "max_depth": ParamRange(low=2, high=6, integer=True),
        "learning_rate": ParamRange(low=0.01, high=0.2, log=True),
        "n_estimators": ParamRange(low=50, high=600, integer=True, log=True),
        "subsample": ParamRange(low=0.5, high=1.0),
        "colsample_bytree": ParamRange(low=0.4, high=1.0),
        "min_child_weight": ParamRange(low=1, high=30, log=True),
        "reg_lambda": ParamRange(low=0.1, high=50, log=True),
        "reg_alpha": ParamRange(low=1e-3, high=10, log=True),
    }


def _logistic_space() -> dict[str, ParamRange]:
    return {
        "C": ParamRange(low=1e-3, high=10, log=True),
        "penalty": ParamRange(choices=["l2", "l1", "elasticnet"]),
        "l1_ratio": ParamRange(low=0.05, high=0.95),
    }


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
    xgboost_space: dict[str, ParamRange] = Field(default_factory=_xgboost_space)
    logistic_space: dict[str, ParamRange] = Field(default_factory=_logistic_space)

    @field_validator("xgboost_space", "logistic_space")
    @classmethod
    def _known_parameters(cls, space: dict[str, ParamRange]) -> dict[str, ParamRange]:
        tunable = set(ModelConfig.model_fields) - {"seed", "kind"}
        unknown = sorted(set(space) - tunable)
        if unknown:
            allowed = ", ".join(sorted(tunable))
            raise ValueError(
                f"unknown model parameters {unknown} in a search space; allowed: {allowed}"
            )
        return space


class ReportConfig(_Section):
    enabled: bool = True  # train and tune write the SHAP report for the logged model
    max_patients: int = Field(2000, ge=10)  # rows explained for the cohort figures (sampled)
    example_patients: int = Field(3, ge=0, le=20)  # per-patient waterfalls in the report
    dependence_features: int = Field(6, ge=1, le=20)
    seed: int = 0


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    simulate: SimulateConfig = Field(default_factory=SimulateConfig)
    outcome: OutcomeConfig = Field(default_factory=OutcomeConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: the configuration is not valid."]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            parent = _section_for(e["loc"][:-1])
            allowed = ", ".join(sorted(parent.model_fields)) if parent else "?"
            lines.append(f"  unknown key '{key}'. Allowed keys here: {allowed}.")
        else:
            lines.append(f"  '{key}': {e['msg']} (got {e.get('input')!r}).")
    return "\n".join(lines)


def _section_for(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
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
        raise InputError(_format_error(err, source)) from None


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
