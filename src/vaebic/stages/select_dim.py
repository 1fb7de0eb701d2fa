"""Stage `select` (a script not named select.py, which would shadow the standard library): BIC and AIC per (latent_dim, seed) of the current sweep, and the chosen latent dimension.

Writes reports/bic.csv (one row per model), reports/pick_vs_epoch.csv (each criterion's pick had
training been capped at each epoch), reports/selection.json (a DVC metrics file: numbers
only, so that `dvc metrics show` and `dvc exp show` stay readable) and reports/selection_notes.json
(its words: the criterion and rule, the estimate behind ln L, the data set), with how sure the pick
is: bootstrap selection frequencies over the training (and test) examples, the paired comparison
of the selected d with every other, each seed's own pick, and which models were still improving
when training stopped (see vaebic.selection.confidence).
Only the metrics files of the latent dimensions and seeds now in params.yaml are read: files
left behind by a dimension removed from the sweep are ignored.

This module is the select stage's wiring: the BIC table of the current sweep, the
chosen latent dimension with how sure the pick is, and their log lines.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from vaebic.cli import stage_parser

log = logging.getLogger("vaebic.select")  # the stage's name in its log lines


def select(params_path: str, metrics_dir: str, data_dir: str):
    """(table, choice, picks): reports/bic.csv's rows, one per (latent_dim, seed) of the sweep now in
    params, with the bootstrap and stopping columns; and the choice with its criterion, the
    estimate behind ln L, the data, how sure the pick is, when it settled during training and
    whether the held-out data bear BIC out (criteria.split_numbers splits it into
    criteria.json's numbers and selection_notes.json's words); picks: each criterion's pick by
    epoch (reports/pick_vs_epoch.csv)."""
    from vaebic import params
    from vaebic.selection import confidence, criteria

    p = params.load(params_path)
    sweep, sel = p["sweep"], p["select"]
    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    records = criteria.read_metrics(metrics_dir, sweep["latent_dims"], sweep["seeds"])
    table = criteria.build_table(records, sel["count_params"], sel["log_likelihood"])
    choice = criteria.choose(table, sel["criterion"], sel["log_likelihood"])
    pairs = list(zip(table.latent_dim.tolist(), table.seed.tolist()))
    examples = confidence.read_examples(metrics_dir, pairs, (f"{sel['log_likelihood']}_train", f"{sel['log_likelihood']}_test"))
    columns, sure = confidence.assess(
        table, examples, choice=choice, log_likelihood=sel["log_likelihood"], resamples=sel["bootstrap"], seed=sel["seed"]
    )
    for name, values in columns.items():
        table[name] = values
    choice = {
        **choice,
        "count_params": sel["count_params"],
        "log_likelihood": sel["log_likelihood"],
        "log_likelihood_estimate": criteria.estimate_text(sel["log_likelihood"], int(table.k_samples.iloc[0])),
        "likelihood": meta["likelihood"],
        "n_train": int(meta["n_train"]),
        "n_validation": int(meta.get("n_validation", 0)),
        "n_test": int(meta["n_test"]),
        "dataset": meta["dataset"],
        **sure,
    }
    picks, settled = settling(table, records, sel["log_likelihood"])
    choice.update(settled)
    log_choice(choice, sel, len(table))
    return table, choice, picks


def settling(table, records: list[dict], log_likelihood: str) -> tuple[dict, dict]:
    """Each criterion's pick by epoch, and when it settled (vaebic.selection.trajectory)."""
    from vaebic.selection import trajectory

    by_pair = {(r["latent_dim"], r["seed"]): r for r in records}
    models = [
        {
            "latent_dim": row.latent_dim,
            "seed": row.seed,
            "n_params": row.n_params,
            "train": getattr(row, f"{log_likelihood}_train"),
            "heldout": getattr(row, f"{log_likelihood}_test"),
            "training": by_pair[(row.latent_dim, row.seed)]["training"],
        }
        for row in table.itertuples(index=False)
    ]
    picks = trajectory.picks_by_epoch(models, int(table.n_train.iloc[0]))
    return picks, trajectory.settled(picks, models)


def log_choice(choice: dict, sel: dict, n_models: int) -> None:
    """The pick, its bootstrap share, when it settled, and what is flagged, in the stage's log."""
    by = choice["selected_by"]
    log.info(
        "selected latent_dim=%d by %s (BIC picks %d, AIC %d, held-out log-likelihood %d)",
        choice["best_latent_dim"],
        choice["rule"],
        by["bic"],
        by["aic"],
        by["test_log_likelihood"],
    )
    if sel["bootstrap"]:
        log.info(
            "bootstrap (%d resamples of the examples): d=%d has the lowest %s in %.0f%% of them",
            sel["bootstrap"],
            choice["best_latent_dim"],
            sel["criterion"].upper(),
            100 * choice["selection_frequency"][sel["criterion"]],
        )
    since = choice["pick_stable_since_epoch"][sel["criterion"]]
    log.info(
        "%s has picked d=%d since epoch %s of %d", sel["criterion"].upper(), choice["best_latent_dim"], since, choice["epochs_run_max"]
    )
    if choice["models_at_cap"]:
        log.warning(
            "%d of %d models reached train.epochs before their validation plateau: raise train.epochs; the pick may move",
            choice["models_at_cap"],
            n_models,
        )
    late = [c.upper() for c, flag in choice["pick_changed_late"].items() if flag]
    if late:
        log.warning("the pick of %s changed in the last part of training: it may not have settled", ", ".join(late))
    if choice["bic_overfit"]:
        c = choice["bic_overfit_check"]
        log.warning(
            "BIC picks d=%d over the held-out pick d=%d on a training gain of %.2f nats/example that the held-out split does not show "
            "(%.2f, at most %.2f, against the %.2f BIC charged): trust the held-out pick",
            c["larger_d"],
            c["smaller_d"],
            c["train_gain"],
            c["heldout_gain"],
            c["heldout_gain_hi90"],
            c["penalty"],
        )


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--metrics", default="metrics")
    ap.add_argument("--out", default="reports")
    args = ap.parse_args(argv)
    from vaebic.files import write_json_atomic, write_text_atomic
    from vaebic.selection.criteria import NOTES_FILE, PICKS_FILE, SELECTION_FILE, picks_csv, split_numbers

    table, choice, picks = select(args.params, args.metrics, args.data)
    numbers, words = split_numbers(choice)  # report.md explains them
    out = Path(args.out)
    write_text_atomic(out / "bic.csv", table.to_csv(index=False, float_format="%.6f"))
    write_text_atomic(out / PICKS_FILE, picks_csv(picks))
    write_json_atomic(out / SELECTION_FILE, numbers)
    write_json_atomic(out / NOTES_FILE, words)
