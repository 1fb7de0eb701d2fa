"""Stage `select` (a script not named select.py, which would shadow the standard library): BIC and AIC per (latent_dim, seed) of the current sweep, and the chosen latent dimension.

Writes reports/bic.csv (one row per model) and reports/selection.json (a DVC metrics file), with
how sure the pick is: bootstrap selection frequencies over the training (and test) examples, the
paired comparison of the selected d with every other, each seed's own pick, and which models were
still improving when training stopped (see vaebic.confidence).
Only the metrics files of the latent dimensions and seeds now in params.yaml are read: files
left behind by a dimension removed from the sweep are ignored.
"""

import json
import logging
from pathlib import Path

from vaebic.cli import run_cli, stage_parser

log = logging.getLogger("vaebic.select")


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--metrics", default="metrics")
    ap.add_argument("--out", default="reports")
    args = ap.parse_args()
    from vaebic import confidence, params, selection
    from vaebic.files import write_json_atomic, write_text_atomic

    p = params.load(args.params)
    sweep, sel = p["sweep"], p["select"]
    meta = json.loads((Path(args.data) / "meta.json").read_text())
    records = selection.read_metrics(args.metrics, sweep["latent_dims"], sweep["seeds"])
    table = selection.build_table(records, sel["count_params"], sel["log_likelihood"])
    choice = selection.choose(table, sel["criterion"], sel["log_likelihood"])
    pairs = list(zip(table.latent_dim.tolist(), table.seed.tolist()))
    examples = confidence.read_examples(args.metrics, pairs, (f"{sel['log_likelihood']}_train", f"{sel['log_likelihood']}_test"))
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
    out = Path(args.out)
    write_text_atomic(out / "bic.csv", table.to_csv(index=False, float_format="%.6f"))
    # Short values only: `dvc metrics show` prints every field on one line. report.md explains them.
    write_json_atomic(
        out / "selection.json",
        {
            **choice,
            "count_params": sel["count_params"],
            "log_likelihood": sel["log_likelihood"],
            "log_likelihood_estimate": selection.estimate_text(sel["log_likelihood"], int(table.k_samples.iloc[0])),
            "likelihood": meta["likelihood"],
            "n_train": int(meta["n_train"]),
            "dataset": meta["dataset"],
            **sure,
        },
    )
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
            100 * sure["selection_frequency"][sel["criterion"]],
        )
    if sure["models_not_converged"]:
        log.warning(
            "%d of %d models were still improving by more than %g nats/example/epoch when training stopped: the selection "
            "may change with more epochs (train.epochs)",
            sure["models_not_converged"],
            len(table),
            sel["converged_below"],
        )


if __name__ == "__main__":
    run_cli(main)
