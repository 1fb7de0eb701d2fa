"""Parameter counts, BIC and AIC per model, and the choice of latent dimension.

    BIC = k ln n - 2 ln L      (Schwarz 1978)
    AIC = 2 k    - 2 ln L      (Akaike 1974)

k: number of free parameters counted (the decoder's by default: see model.count_params);
n: number of training examples; ln L: the training-set sum of a per-example log-likelihood
estimate. Here that estimate is the ELBO, a *lower bound* on log p(x), so ln L is
under-estimated, the more so the larger the latent space; the report says so.
Lower BIC/AIC is better.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from vaebic.errors import VaebicError

LOG_LIKELIHOOD_ESTIMATE = "elbo"

# Columns of reports/bic.csv, in order, with their meaning (the report prints these).
COLUMNS = {
    "latent_dim": "latent dimension d",
    "seed": "training seed",
    "n_train": "n: training examples",
    "n_params": "k: parameters counted (see count_params)",
    "log_likelihood": "ln L: sum over the training split of the per-example ELBO (nats; a lower bound)",
    "bic": "k ln n - 2 ln L (lower is better)",
    "aic": "2k - 2 ln L (lower is better)",
    "elbo_train": "mean ELBO on the training split (nats per example; higher is better)",
    "elbo_test": "mean ELBO on the test split (nats per example; higher is better)",
    "recon_train": "mean -E_q[log p(x|z)] on the training split (nats per example)",
    "recon_test": "mean -E_q[log p(x|z)] on the test split (nats per example)",
    "kl_train": "mean KL(q(z|x) || p(z)) on the training split (nats per example)",
    "kl_test": "mean KL(q(z|x) || p(z)) on the test split (nats per example)",
    "n_params_decoder": "parameters of the decoder (generative model)",
    "n_params_all": "parameters of encoder and decoder",
}


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
    records = []
    for d in latent_dims:
        for s in seeds:
            path = metrics_path(metrics_dir, d, s)
            try:
                records.append(json.loads(path.read_text()))
            except FileNotFoundError:
                raise VaebicError(f"{path}: missing; the evaluate stage for latent_dim={d}, seed={s} has not run (run `dvc repro`)") from None
            except ValueError as exc:
                raise VaebicError(f"{path}: not valid JSON ({exc}); re-run `dvc repro -f evaluate@{d}-{s}`") from None
    return records


def build_table(records: list[dict], count_params: str = "decoder"):
    """One row per (latent_dim, seed) with k, n, ln L, BIC, AIC and the evaluation metrics."""
    import pandas as pd

    rows = []
    for r in records:
        try:
            n_train = int(r["train"]["n"])
            k = int(r["n_params"][count_params])
            log_l = float(r["train"]["elbo_sum_nats"])
            row = {
                "latent_dim": int(r["latent_dim"]),
                "seed": int(r["seed"]),
                "n_train": n_train,
                "n_params": k,
                "log_likelihood": log_l,
                "bic": bic(log_l, k, n_train),
                "aic": aic(log_l, k),
            }
            for split in ("train", "test"):
                row[f"elbo_{split}"] = float(r[split]["elbo_nats"])
                row[f"recon_{split}"] = float(r[split]["recon_nats"])
                row[f"kl_{split}"] = float(r[split]["kl_nats"])
            row["n_params_decoder"] = int(r["n_params"]["decoder"])
            row["n_params_all"] = int(r["n_params"]["all"])
        except (KeyError, TypeError, ValueError) as exc:
            raise VaebicError(f"evaluation record for latent_dim={r.get('latent_dim')}, seed={r.get('seed')} lacks {exc}; re-run its evaluate stage") from None
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.sort_values(["latent_dim", "seed"]).reset_index(drop=True)


def summarise(table):
    """Mean, standard deviation, min and max over seeds of BIC, AIC and test ELBO, per latent dimension."""
    grouped = table.groupby("latent_dim")
    out = grouped[["bic", "aic", "elbo_test", "elbo_train", "recon_test", "kl_test"]].mean()
    for col in ("bic", "aic", "elbo_test"):
        out[f"{col}_std"] = grouped[col].std(ddof=1).fillna(0.0)
        out[f"{col}_min"] = grouped[col].min()
        out[f"{col}_max"] = grouped[col].max()
    out["n_seeds"] = grouped.size()
    return out.reset_index()


def choose(table, criterion: str = "bic") -> dict:
    """The latent dimension with the lowest mean criterion over seeds (ties: the smaller dimension).

    Also reports what each criterion alone would pick, and the highest mean held-out ELBO.
    """
    summary = summarise(table)

    def argmin(col):
        return int(summary.sort_values([col, "latent_dim"]).iloc[0]["latent_dim"])

    best = argmin(criterion)
    rows = table[table.latent_dim == best]
    best_row = rows.sort_values([criterion, "seed"]).iloc[0]
    by_test_elbo = int(summary.sort_values(["elbo_test", "latent_dim"], ascending=[False, True]).iloc[0]["latent_dim"])
    return {
        "best_latent_dim": best,
        "criterion": criterion,
        "rule": f"lowest mean {criterion.upper()} over seeds, ties to the smaller d",
        "best_seed": int(best_row["seed"]),
        "best_value": float(summary.loc[summary.latent_dim == best, criterion].iloc[0]),
        "selected_by": {"bic": argmin("bic"), "aic": argmin("aic"), "test_elbo": by_test_elbo},
    }
