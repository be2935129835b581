import pytest
import yaml

from conftest import ROOT
from pipeline.config import ConfigError, load_params, parse_params


def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_project_params_load_into_typed_sections():
    p = load_params(ROOT / "params.yaml")
    assert p.cluster.k >= 1 and isinstance(p.filter.keep, float)
    assert p.paths.features == "data/03_features"


def test_unknown_key_is_an_error_naming_the_key_and_the_allowed_ones():
    raw = raw_params()
    raw["cluster"]["kk"] = 3
    with pytest.raises(ConfigError, match=r"cluster\.kk.*allowed keys: k, method"):
        parse_params(raw)


def test_unknown_section_is_an_error():
    raw = raw_params()
    raw["clustr"] = {}
    with pytest.raises(ConfigError, match="'clustr' is not a known section"):
        parse_params(raw)


def test_wrong_type_is_an_error_naming_the_key():
    raw = raw_params()
    raw["cluster"]["k"] = "eight"
    with pytest.raises(ConfigError, match=r"cluster\.k.*type int.*'eight'"):
        parse_params(raw)


def test_bool_is_not_accepted_as_int():
    raw = raw_params()
    raw["train"]["epochs"] = True
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        parse_params(raw)


def test_out_of_range_values_are_errors():
    for section, key, value, pattern in [("filter", "keep", 1.5, r"filter\.keep.*\(0, 1\]"),
                                         ("cluster", "k", 0, r"cluster\.k"),
                                         ("proposals", "refine", "crf", r"allowed values: grabcut, none")]:
        raw = raw_params()
        raw[section][key] = value
        with pytest.raises(ConfigError, match=pattern):
            parse_params(raw)


def test_int_is_accepted_where_a_float_is_expected():
    raw = raw_params()
    raw["filter"]["keep"] = 1
    assert parse_params(raw).filter.keep == 1.0


def test_missing_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")
