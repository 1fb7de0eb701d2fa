"""The select stage's wiring (stages/select_dim.py): the BIC table of the current sweep, the
chosen latent dimension with how sure the pick is, and their log lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("vaebic.select")  # the stage's name in its log lines


def select(params_path: str, metrics_dir: str, data_dir: str):
    """(table, choice): reports/bic.csv's rows, one per (latent_dim, seed) of the sweep now in
    params, with the bootstrap and convergence columns; and the choice with its criterion, the
    estimate behind ln L, the data and how sure the pick is (selection.split_numbers splits it
    into selection.json's numbers and selection_notes.json's words)."""
    from vaebic import confidence, params, selection

    p = params.load(params_path)
    sweep, sel = p["sweep"], p["select"]
    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    records = selection.read_metrics(metrics_dir, sweep["latent_dims"], sweep["seeds"])
    table = selection.build_table(records, sel["count_params"], sel["log_likelihood"])
    choice = selection.choose(table, sel["criterion"], sel["log_likelihood"])
    pairs = list(zip(table.latent_dim.tolist(), table.seed.tolist()))
    examples = confidence.read_examples(metrics_dir, pairs, (f"{sel['log_likelihood']}_train", f"{sel['log_likelihood']}_test"))
    columns, sure = confidence.assess(
        table,
        examples,
        choice=choice,
        log_likelihood=sel["log_likelihood"],
        resamples=sel["bootstrap"],
        seed=sel["seed"],
        converged_below=sel["converged_below"],
    )
    for name, values in columns.items():
        table[name] = values
    choice = {
        **choice,
        "count_params": sel["count_params"],
        "log_likelihood": sel["log_likelihood"],
        "log_likelihood_estimate": selection.estimate_text(sel["log_likelihood"], int(table.k_samples.iloc[0])),
        "likelihood": meta["likelihood"],
        "n_train": int(meta["n_train"]),
        "dataset": meta["dataset"],
        **sure,
    }
    log_choice(choice, sel, len(table))
    return table, choice


def log_choice(choice: dict, sel: dict, n_models: int) -> None:
    """The pick, its bootstrap share and the models still improving, in the stage's log."""
    log.info(
        "selected latent_dim=%d by %s (BIC picks %d, AIC %d, held-out log-likelihood %d)",
        choice["best_latent_dim"],
        choice["rule"],
        choice["selected_by"]["bic"],
        choice["selected_by"]["aic"],
        choice["selected_by"]["test_log_likelihood"],
    )
    if sel["bootstrap"]:
        log.info(
            "bootstrap (%d resamples of the examples): d=%d has the lowest %s in %.0f%% of them",
            sel["bootstrap"],
            choice["best_latent_dim"],
            sel["criterion"].upper(),
            100 * choice["selection_frequency"][sel["criterion"]],
        )
    if choice["models_not_converged"]:
        log.warning(
            "%d of %d models were still improving by more than %g nats/example/epoch when training stopped: the selection "
            "may change with more epochs (train.epochs)",
            choice["models_not_converged"],
            n_models,
            sel["converged_below"],
        )
