"""Config: YAML validated by pydantic, ``--set a.b=value`` overrides, ``--data`` for data.path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO
from inflamrx.config import Config, build_config, load_config, parse_overrides
from inflamrx.errors import InputError

DATA_KEYS = "columns, drop, join_on, missing_codes, path, recode, synthetic, units"
TOP_KEYS = "data, evaluation, features, model, outcome, registry, report, serving, split, tracking, treatment, tuning"


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.data.path == "data/synthetic.csv"
    assert cfg.data.paths == ["data/synthetic.csv"]
    # Release 0.2 defaults: choose the kind by evidence, validate by resampling on all rows.
    assert cfg.model.kind == "auto"
    assert cfg.split.strategy == "resample"
    assert cfg.split.resample == "cv"


def test_empty_yaml_means_defaults(tmp_path: Path) -> None:
    assert load_config(write_yaml(tmp_path, "")) == load_config(None)


def test_nhanes_config_loads() -> None:
    cfg = load_config(REPO / "configs" / "nhanes.yaml")
    assert cfg.data.join_on == "SEQN"
    assert len(cfg.data.paths) == 5
    assert cfg.data.columns["crp_mg_l"] == "LBXHSCRP"
    # YAML reads {1: M} with integer keys; source values are compared as text.
    assert cfg.data.recode["sex"] == {"1": "M", "2": "F"}
    assert cfg.data.recode["crp_mg_l_below_lod"] == {"0": False, "1": True}
    assert cfg.data.missing_codes["phq9_1"] == [7, 9]
    assert cfg.data.synthetic is False


@pytest.mark.parametrize(
    ("yaml_text", "fragments"),
    [
        ("modle: {max_depth: 4}\n", ["unknown key 'modle'", f"Allowed keys here: {TOP_KEYS}."]),
        ("data: {colums: {age: AGE}}\n", ["unknown key 'data.colums'", DATA_KEYS]),
        (
            "model: {depth: 4}\n",
            [
                "unknown key 'model.depth'",
                "Allowed keys here: colsample_bytree, kind, learning_rate",
            ],
        ),
        ("model: {max_depth: deep}\n", ["'model.max_depth'", "valid integer", "got 'deep'"]),
        ("model: {max_depth: 40}\n", ["'model.max_depth'", "less than or equal to 12", "got 40"]),
        (
            "model: {kind: forest}\n",
            ["'model.kind'", "'xgboost', 'logistic', 'histgb' or 'auto'", "got 'forest'"],
        ),
        ("split: {test_size: 1.5}\n", ["'split.test_size'", "less than 1"]),
        ("data: {recode: {sex: {1: 2}}}\n", ["'data.recode.sex.1", "got 2"]),
        (
            "outcome: {kind: threshold}\n",
            ["'outcome'", "needs outcome.column, outcome.op and outcome.value"],
        ),
    ],
    ids=[
        "unknown-section",
        "unknown-data-key",
        "unknown-model-key",
        "wrong-type",
        "out-of-range",
        "not-an-allowed-value",
        "test-size",
        "recode-value",
        "incomplete-threshold",
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, yaml_text: str, fragments: list[str]) -> None:
    path = write_yaml(tmp_path, yaml_text)
    with pytest.raises(InputError, match=re.escape(f"{path}: the configuration is not valid")) as e:
        load_config(path)
    for fragment in fragments:
        assert fragment in str(e.value)


def test_every_bad_key_is_reported_at_once(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "model: {max_depth: deep, kind: forest}\nmodle: {}\n")
    with pytest.raises(InputError) as e:
        load_config(path)
    message = str(e.value)
    assert "'model.max_depth'" in message
    assert "'model.kind'" in message
    assert "unknown key 'modle'" in message


def test_set_overrides_any_key_with_yaml_typed_values(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "model: {max_depth: 5}\ndata: {path: a.csv}\n")
    overrides = parse_overrides(
        [
            "model.max_depth=4",
            "model.learning_rate=0.1",
            "data.synthetic=true",
            "data.path=[a.csv, b.csv]",
            "data.join_on=SEQN",
            "data.columns={age: RIDAGEYR}",
        ]
    )
    cfg = load_config(path, overrides)
    assert cfg.model.max_depth == 4
    assert cfg.model.learning_rate == pytest.approx(0.1)
    assert cfg.data.synthetic is True
    assert cfg.data.paths == ["a.csv", "b.csv"]
    assert cfg.data.join_on == "SEQN"
    assert cfg.data.columns == {"age": "RIDAGEYR"}


def test_set_with_empty_value_means_none() -> None:
    assert parse_overrides(["data.join_on="]) == {"data.join_on": None}
    assert build_config({"data": {"join_on": "SEQN"}}, {"data.join_on": None}).data.join_on is None


def test_data_option_overrides_data_path(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "data: {path: from_yaml.csv}\n")
    assert load_config(path, data_path="from_cli.csv").data.path == "from_cli.csv"
    # --data wins over --set data.path as well: it is the more specific option.
    cfg = load_config(path, {"data.path": "from_set.csv"}, data_path="from_cli.csv")
    assert cfg.data.path == "from_cli.csv"


def test_set_unknown_key_names_the_key_and_the_allowed_ones() -> None:
    with pytest.raises(InputError, match=r"unknown key 'data\.colums'\. Allowed keys here: ") as e:
        load_config(None, parse_overrides(["data.colums.age=AGE"]))
    assert DATA_KEYS in str(e.value)


@pytest.mark.parametrize("pair", ["model.max_depth", "=4", "  =4"])
def test_set_needs_key_equals_value(pair: str) -> None:
    with pytest.raises(InputError, match=r"--set expects key=value \(for example model"):
        parse_overrides([pair])


def test_set_below_a_value_is_refused(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "data: {path: a.csv}\n")
    with pytest.raises(InputError, match=r"--set data\.path\.x: 'path' is not a section"):
        load_config(path, parse_overrides(["data.path.x=1"]))


def test_build_config_does_not_modify_the_tree() -> None:
    tree = {"model": {"max_depth": 5}}
    build_config(tree, {"model.max_depth": 4, "data.path": "x.csv"})
    assert tree == {"model": {"max_depth": 5}}


def test_config_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"config file not found: .*missing\.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_config_not_yaml(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not valid YAML"):
        load_config(write_yaml(tmp_path, "data: {path: [unclosed\n"))


def test_config_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="a config must be a mapping of sections, got"):
        load_config(write_yaml(tmp_path, "- data\n- model\n"))


def test_config_not_text(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(b"\xff\xfe\x00d\x00a")
    with pytest.raises(InputError, match=r"job\.yaml is not a text \(UTF-8\) YAML file"):
        load_config(path)


def test_config_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder; give the path of a YAML config file"):
        load_config(tmp_path)
