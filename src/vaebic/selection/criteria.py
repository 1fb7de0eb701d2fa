"""Parameter counts, BIC and AIC per model, and the choice of latent dimension.

    BIC = k ln n - 2 ln L      (Schwarz 1978)
    AIC = 2 k    - 2 ln L      (Akaike 1974)

k: number of free parameters counted (the decoder's by default: see model.count_params);
n: number of training examples the models were fitted on; ln L: the training-set sum of a per-example log-likelihood
estimate: by default the importance-weighted estimate (IWAE, K samples), or the ELBO. Both are
lower bounds on log p(x) in expectation; the ELBO's gap grows with the latent dimension, which
biases an ELBO-based BIC towards small models, and the IWAE estimate closes most of that gap.
Lower BIC/AIC is better.
"""

from __future__ import annotations

import json
import math
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from vaebic.errors import VaebicError

# Columns of reports/bic.csv, in order, with their meaning (the report prints these).
COLUMNS = {
    "latent_dim": "latent dimension d",
    "seed": "training seed",
    "n_train": "n: the training examples the model was fitted on (the validation and test splits not included)",
    "n_params": "k: parameters counted (see count_params)",
    "log_likelihood": "ln L: sum over the training split of the per-example log-likelihood estimate named in the report (nats)",
    "log_likelihood_se": "Monte-Carlo standard error of ln L (nats; 0 for the ELBO, whose Monte-Carlo error is not estimated)",
    "bic": "k ln n - 2 ln L (lower is better)",
    "aic": "2k - 2 ln L (lower is better)",
    "iwae_train": "mean importance-weighted log-likelihood estimate on the training split (nats per example; higher is better)",
    "iwae_test": "mean importance-weighted log-likelihood estimate on the test split (nats per example; higher is better)",
    "iwae_se_train": "Monte-Carlo standard error of iwae_train (nats per example)",
    "iwae_se_test": "Monte-Carlo standard error of iwae_test (nats per example)",
    "k_samples": "K: importance samples per example",
    "elbo_train": "mean ELBO on the training split (nats per example; higher is better)",
    "elbo_test": "mean ELBO on the test split (nats per example; higher is better)",
    "recon_train": "mean -E_q[log p(x|z)] on the training split (nats per example)",
    "recon_test": "mean -E_q[log p(x|z)] on the test split (nats per example)",
    "kl_train": "mean KL(q(z|x) || p(z)) on the training split (nats per example)",
    "kl_test": "mean KL(q(z|x) || p(z)) on the test split (nats per example)",
    "active_units": "latent units with Var_x(E_q[z_u|x]) above the threshold, on the training split",
    "selection_frequency": "share of bootstrap resamples of the training examples in which this d has the lowest mean BIC over seeds (the same on every seed row of d; sums to 1 over the dims)",
    "selection_frequency_aic": "the same for the lowest mean AIC",
    "selection_frequency_heldout": "share of bootstrap resamples of the test examples in which this d has the highest mean held-out estimate",
    "delta_vs_selected": "the selection criterion (select.criterion) of this d minus that of the selected d, means over seeds (> 0: the selected d is better)",
    "delta_vs_selected_lo90": "5th percentile of delta_vs_selected over the bootstrap resamples",
    "delta_vs_selected_hi90": "95th percentile of delta_vs_selected over the bootstrap resamples",
    "vuong_z": "Vuong's paired z of the selected d against this d, per-example log-likelihood differences with the criterion's penalty correction (> 1.64: the selected d is better at the one-sided 5% level)",
    "best_epoch": "the epoch whose weights the model kept: its best on the validation split (the last, without early stopping)",
    "epochs_run": "epochs trained before stopping",
    "stop_reason": "plateau: stopped after train.patience epochs without improvement on the validation split; cap: reached train.epochs first (flagged)",
    "generalization_gap": "the training-split minus the held-out (test) estimate of the kind in ln L (nats per example): what the decoder fits in its training examples and not in new ones",
    "n_params_decoder": "parameters of the decoder (generative model)",
    "n_params_all": "parameters of encoder and decoder",
    "sigma": "the Gaussian decoder's final pixel sigma (calibrated, learned or fixed: model.gaussian_sigma; empty for other likelihoods)",
}


#: reports/: the choice's numbers (a DVC metrics file, so `dvc metrics show` and `dvc exp show`
#: print them in a few columns), and its words beside them (criterion, rule, estimate, data set)
SELECTION_FILE, NOTES_FILE = "selection.json", "selection_notes.json"
#: reports/: each criterion's pick had training been capped at each epoch (vaebic.selection.trajectory)
PICKS_FILE = "pick_vs_epoch.csv"


def picks_csv(picks: dict[str, list]) -> str:
    """pick_vs_epoch.csv: one row per epoch, one column per criterion (empty: not computed)."""
    names = list(picks)
    rows = ["epoch," + ",".join(names)]
    for e, values in enumerate(zip(*picks.values()), 1):
        rows.append(f"{e}," + ",".join("" if v is None else str(v) for v in values))
    return "\n".join(rows) + "\n"


def split_numbers(record: dict) -> tuple[dict, dict]:
    """(numbers, words) of a nested record: numbers holds its numbers and booleans (true/false in
    JSON, which `dvc metrics show` prints as they are), words everything else; nested dicts are
    split alike, and None values (a frequency not computed) dropped."""
    numbers, words = {}, {}
    for key, value in record.items():
        if isinstance(value, dict):
            n, w = split_numbers(value)
            numbers.update({key: n} if n else {})
            words.update({key: w} if w else {})
        elif isinstance(value, (bool, np.bool_)):
            numbers[key] = bool(value)
        elif isinstance(value, Integral):  # numpy's integers too, as plain ints
            numbers[key] = int(value)
        elif isinstance(value, Real):
            numbers[key] = float(value)
        elif value is not None:
            words[key] = value
    return numbers, words


def join_numbers(numbers: dict, words: dict) -> dict:
    """The record that split_numbers split (None values aside)."""
    out = dict(numbers)
    for key, value in words.items():
        out[key] = join_numbers(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_choice(reports: str | Path) -> dict:
    """The selection that the select stage wrote to reports/: its numbers and words in one dict."""
    return join_numbers(*(read_output(Path(reports) / name, "the select stage", "select") for name in (SELECTION_FILE, NOTES_FILE)))


def read_output(path: Path, stage_text: str, stage: str):
    """The JSON file at path that a stage wrote; missing or broken, an error saying how to make it again."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise VaebicError(f"{path}: missing; {stage_text} has not run (run `dvc repro`)") from None
    except ValueError as exc:
        raise VaebicError(f"{path}: not valid JSON ({exc}); re-run `dvc repro -f {stage}`") from None


def estimate_text(log_likelihood: str, k_samples: int) -> str:
    """What ln L sums, in a few words (for selection_notes.json and the report)."""
    if log_likelihood == "iwae":
        return f"importance-weighted estimate (K={k_samples}) summed over the train split"
    return "ELBO summed over the train split (a looser lower bound)"


def bic(log_likelihood: float, n_params: int, n: int) -> float:
    """Bayesian information criterion: k ln n - 2 ln L."""
    return n_params * math.log(n) - 2.0 * log_likelihood


def aic(log_likelihood: float, n_params: int) -> float:
    """Akaike information criterion: 2k - 2 ln L."""
    return 2.0 * n_params - 2.0 * log_likelihood


def metrics_path(metrics_dir: str | Path, latent_dim: int, seed: int) -> Path:
    return Path(metrics_dir) / f"{latent_dim}-{seed}.json"


def read_metrics(metrics_dir: str | Path, latent_dims: list[int], seeds: list[int]) -> list[dict]:
    """Evaluation records for exactly the current sweep (files of removed dimensions are ignored)."""
    return read_records(metrics_dir, [(d, s) for d in latent_dims for s in seeds])


def read_records(metrics_dir: str | Path, pairs: list[tuple[int, int]]) -> list[dict]:
    """Evaluation records of the given (latent_dim, seed) pairs, in that order."""
    return [
        read_output(metrics_path(metrics_dir, d, s), f"the evaluate stage for latent_dim={d}, seed={s}", f"evaluate@{d}-{s}")
        for d, s in pairs
    ]


def build_table(records: list[dict], count_params: str = "decoder", log_likelihood: str = "iwae"):
    """One row per (latent_dim, seed) with k, n, ln L, BIC, AIC and the evaluation metrics.

    log_likelihood names the per-example estimate whose training-split sum is ln L: iwae or elbo.
    """
    import pandas as pd

    rows = []
    for r in records:
        try:
            n_train = int(r["train"]["n"])
            k = int(r["n_params"][count_params])
            log_l = float(r["train"][f"{log_likelihood}_sum_nats"])
            row = {
                "latent_dim": int(r["latent_dim"]),
                "seed": int(r["seed"]),
                "n_train": n_train,
                "n_params": k,
                "log_likelihood": log_l,
                "log_likelihood_se": float(r["train"]["iwae_sum_std_err_nats"]) if log_likelihood == "iwae" else 0.0,
                "bic": bic(log_l, k, n_train),
                "aic": aic(log_l, k),
                "k_samples": int(r["train"]["k_samples"]),
                "active_units": int(r["train"]["active_units"]),
            }
            for split in ("train", "test"):
                row[f"iwae_{split}"] = float(r[split]["iwae_nats"])
                row[f"iwae_se_{split}"] = float(r[split]["iwae_std_err_nats"])
                row[f"elbo_{split}"] = float(r[split]["elbo_nats"])
                row[f"recon_{split}"] = float(r[split]["recon_nats"])
                row[f"kl_{split}"] = float(r[split]["kl_nats"])
            row["n_params_decoder"] = int(r["n_params"]["decoder"])
            row["n_params_all"] = int(r["n_params"]["all"])
            row["sigma"] = float("nan") if r.get("gaussian_sigma") is None else float(r["gaussian_sigma"])
            row.update({key: r["training"][key] for key in ("best_epoch", "epochs_run", "stop_reason")})
            row["generalization_gap"] = row[f"{log_likelihood}_train"] - row[f"{log_likelihood}_test"]
        except (KeyError, TypeError, ValueError) as exc:
            raise VaebicError(
                f"evaluation record for latent_dim={r.get('latent_dim')}, seed={r.get('seed')} lacks {exc}; re-run its evaluate stage"
            ) from None
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(COLUMNS))  # the bootstrap columns empty until confidence.assess fills them
    return table.sort_values(["latent_dim", "seed"]).reset_index(drop=True)


def summarise(table):
    """Mean, standard deviation, min and max over seeds of the criteria and held-out estimates, per latent dimension."""
    grouped = table.groupby("latent_dim")
    out = grouped[["bic", "aic", "iwae_test", "iwae_train", "elbo_test", "elbo_train", "recon_test", "kl_test", "active_units"]].mean()
    for col in ("bic", "aic", "iwae_test", "elbo_test", "active_units"):
        out[f"{col}_std"] = grouped[col].std(ddof=1).fillna(0.0)
        out[f"{col}_min"] = grouped[col].min()
        out[f"{col}_max"] = grouped[col].max()
    out["n_seeds"] = grouped.size()
    for col in ("selection_frequency", "selection_frequency_aic", "selection_frequency_heldout"):
        if col in table:  # one value per d, repeated on its seed rows
            out[col] = grouped[col].first()
    return out.reset_index()


def choose(table, criterion: str = "bic", log_likelihood: str = "iwae") -> dict:
    """The latent dimension with the lowest mean criterion over seeds (ties: the smaller dimension).

    Also reports what each criterion alone would pick, and the highest mean held-out (test split)
    log-likelihood estimate of the same kind as ln L.
    """
    summary = summarise(table)

    def argmin(col):
        return int(summary.sort_values([col, "latent_dim"]).iloc[0]["latent_dim"])

    best = argmin(criterion)
    rows = table[table.latent_dim == best]
    best_row = rows.sort_values([criterion, "seed"]).iloc[0]
    heldout = f"{log_likelihood}_test"
    by_heldout = int(summary.sort_values([heldout, "latent_dim"], ascending=[False, True]).iloc[0]["latent_dim"])
    return {
        "best_latent_dim": best,
        "criterion": criterion,
        "rule": f"lowest mean {criterion.upper()} over seeds, ties to the smaller d",
        "best_seed": int(best_row["seed"]),
        "best_value": float(summary.loc[summary.latent_dim == best, criterion].iloc[0]),
        "selected_by": {"bic": argmin("bic"), "aic": argmin("aic"), "test_log_likelihood": by_heldout},
    }
