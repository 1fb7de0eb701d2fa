"""`python -m vaebic.compare`: do this run's results reproduce the committed ones? Hand-made
results first (agreement, a changed pick, a metric beyond tolerance), then a real tiny run."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from vaebic import compare
from vaebic.selection.criteria import split_numbers


def results(folder, shift=0.0, picks=None, se=0.05):
    """A folder with bic.csv and selection.json (selection_notes.json) of two models, optionally shifted or re-picked."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for d, base in ((2, -120.0), (4, -110.0)):
        iwae = base + shift
        rows.append(
            {
                "latent_dim": d,
                "seed": 0,
                "n_train": 400,
                "n_params": 1000 * d,
                "log_likelihood": 400 * iwae,
                "bic": 1000 * d * 5.99 - 800 * iwae,
                "aic": 2000 * d - 800 * iwae,
                "iwae_train": iwae,
                "iwae_test": iwae - 3,
                "iwae_se_train": se,
                "iwae_se_test": se,
                "elbo_train": iwae - 5,
                "elbo_test": iwae - 8,
                "selection_frequency": 0.5,
            }
        )
    pd.DataFrame(rows).to_csv(folder / "bic.csv", index=False)
    sel = {
        "best_latent_dim": 4,
        "selected_by": {"bic": 4, "aic": 4, "test_log_likelihood": 4, **(picks or {})},
        "log_likelihood": "iwae",
        "selection_frequency": {"bic": 0.9, "aic": 0.8, "test_log_likelihood": 0.7},
    }
    numbers, words = split_numbers(sel)
    (folder / "selection.json").write_text(json.dumps(numbers))
    (folder / "selection_notes.json").write_text(json.dumps(words))
    return folder


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vaebic.compare", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_results_within_tolerance_pass(tmp_path):
    committed = results(tmp_path / "committed")
    # a platform's rounding: every estimate 0.2 nats lower, within the platform spread allowed
    now = results(tmp_path / "now", shift=-0.2)
    proc = run("--against", str(committed), "--reports", str(now), "--summary", str(tmp_path / "summary.md"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reproduce the committed ones" in proc.stdout and "2 models within tolerance" in proc.stdout
    summary = (tmp_path / "summary.md").read_text()
    assert "selected latent dimension 4" in summary and "BIC picks d = 4 (90% of bootstrap resamples)" in summary
    assert "reproduces the committed results" in summary and "| latent_dim | seed |" in summary


def test_a_changed_pick_fails(tmp_path):
    committed = results(tmp_path / "committed")
    now = results(tmp_path / "now", picks={"aic": 2})
    proc = run("--against", str(committed), "--reports", str(now))
    assert proc.returncode == 1
    assert "| latent dimension picked by aic |  | 4 | 2 | identical |" in proc.stdout, proc.stdout


def test_a_metric_beyond_tolerance_fails_with_the_table(tmp_path):
    committed = results(tmp_path / "committed")
    now = results(tmp_path / "now", shift=-3.0)  # 3 nats per example: far beyond the platform spread and 4 SEs
    proc = run("--against", str(committed), "--reports", str(now), "--summary", str(tmp_path / "s.md"))
    assert proc.returncode == 1
    assert "| metric | model | committed | now | tolerance |" in proc.stdout
    # the training split's platform spread (2 nats per example), larger than 4 SEs of the difference (0.283)
    assert "| iwae_train | 2-0 | -120.000 | -123.000 | 2.000 |" in proc.stdout, proc.stdout
    assert "| iwae_test | 2-0 | -123.000 | -126.000 | 0.500 |" in proc.stdout, proc.stdout  # the test split's
    assert "| bic | 4-0 |" in proc.stdout  # BIC moves by 2 n times the estimate: 2400 against a tolerance of 1600
    assert "DIFFERENT from the committed results" in (tmp_path / "s.md").read_text()


def test_a_pick_may_swap_only_between_near_tied_dimensions(tmp_path):
    # d = 2 and d = 4 tied on the test split within rounding: a swap of the held-out pick is printed, not failed
    # (a swap between dimensions far apart fails: test_a_changed_pick_fails)
    tied = results(tmp_path / "tied")
    t = pd.read_csv(tied / "bic.csv")
    t.loc[t.latent_dim == 2, "iwae_test"] = float(t.loc[t.latent_dim == 4, "iwae_test"].iloc[0]) - 0.01
    t.to_csv(tied / "bic.csv", index=False)
    swapped = results(tmp_path / "swapped", picks={"test_log_likelihood": 2})
    t.assign(iwae_test=t.iwae_test + (t.latent_dim == 2) * 0.02).to_csv(swapped / "bic.csv", index=False)
    proc = run("--against", str(tied), "--reports", str(swapped))
    assert proc.returncode == 0 and "picks swapped between near-tied dimensions (test_log_likelihood: 4 -> 2)" in proc.stdout, proc.stdout


def test_a_model_that_kept_another_epoch_of_its_plateau_is_listed_not_compared(tmp_path):
    # float rounding (another thread count) can end early stopping elsewhere on a flat validation
    # plateau, where the training estimate still rises: d = 2 kept epoch 137, not 103
    committed = results(tmp_path / "committed")
    t = pd.read_csv(committed / "bic.csv").assign(best_epoch=[103, 90])
    t.to_csv(committed / "bic.csv", index=False)
    now = results(tmp_path / "now")
    moved = t.assign(best_epoch=[137, 90])
    moved.loc[0, ["iwae_train", "elbo_train"]] += 2.5  # beyond tolerance, on the moved model only
    moved.to_csv(now / "bic.csv", index=False)
    proc = run("--against", str(committed), "--reports", str(now))
    assert proc.returncode == 0, proc.stdout
    assert "d=2 seed 0 kept epoch 137 of its validation plateau, not 103" in proc.stdout and "1 models within tolerance" in proc.stdout
    # the same shift on a model that kept the same epoch still fails
    moved.loc[1, "iwae_train"] += 2.5
    moved.to_csv(now / "bic.csv", index=False)
    proc = run("--against", str(committed), "--reports", str(now))
    assert proc.returncode == 1 and "| iwae_train | 4-0 |" in proc.stdout and "| iwae_train | 2-0 |" not in proc.stdout, proc.stdout
    # and so does a changed pick, whichever models moved
    (now / "selection.json").write_text((now / "selection.json").read_text().replace('"aic": 4', '"aic": 2'))
    moved.loc[1, "iwae_train"] -= 2.5
    moved.to_csv(now / "bic.csv", index=False)
    assert run("--against", str(committed), "--reports", str(now)).returncode == 1


def test_the_monte_carlo_error_widens_the_tolerance():
    old = pd.Series({"iwae_se_train": 0.5, "iwae_se_test": 0.5})
    assert compare.tolerance("iwae_train", old, old) == pytest.approx(4 * 0.5 * 2**0.5)
    assert compare.tolerance("elbo_train", old, old) == compare.PLATFORM_NATS["elbo_train"]


def test_different_sweeps_are_named(tmp_path):
    committed = results(tmp_path / "committed")
    now = results(tmp_path / "now")
    table = pd.read_csv(now / "bic.csv")
    table.loc[1, "latent_dim"] = 8
    table.to_csv(now / "bic.csv", index=False)
    proc = run("--against", str(committed), "--reports", str(now))
    assert proc.returncode == 1 and "| models (latent_dim-seed) |  | 4-0 | 8-0 | the same models |" in proc.stdout, proc.stdout


def test_missing_results_are_one_error_line(tmp_path):
    proc = run("--against", str(tmp_path), "--reports", str(tmp_path / "nothing"))
    assert proc.returncode == 1 and proc.stderr.startswith("error:") and "run `dvc repro` first" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_selection_is_read_with_its_notes_and_from_results_older_than_them(tmp_path):
    folder = results(tmp_path / "now")
    assert "log_likelihood" not in json.loads((folder / "selection.json").read_text())
    table, sel = compare.read_folder(folder)
    assert sel["log_likelihood"] == "iwae" and sel["selected_by"]["bic"] == 4 and len(table) == 2
    # results committed before the words moved out: all of it in selection.json, no notes file
    (folder / "selection.json").write_text(json.dumps(sel))
    (folder / "selection_notes.json").unlink()
    assert compare.read_folder(folder)[1] == sel
    proc = run("--against", str(folder), "--reports", str(results(tmp_path / "again")))
    assert proc.returncode == 0 and "the same picks" in proc.stdout, proc.stdout + proc.stderr
