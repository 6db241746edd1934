"""Job configuration: YAML files validated by pydantic, with ``--set key=value`` overrides.

Only the CLI reads files and the environment; library code receives a ``Config`` object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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
    synthetic: bool = False  # labels every run, log and report made from this data

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


class SimulateConfig(_Section):
    n: int = Field(2000, ge=10)
    seed: int = 0
    two_arm: bool = False


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    simulate: SimulateConfig = Field(default_factory=SimulateConfig)


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
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(f"config file not found: {path}") from None
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
