"""Stage `select` (a script not named select.py, which would shadow the standard library): BIC and AIC per (latent_dim, seed) of the current sweep, and the chosen latent dimension.

Writes reports/bic.csv (one row per model), reports/pick_vs_epoch.csv (each criterion's pick had
training been capped at each epoch), reports/selection.json (a DVC metrics file: numbers
only, so that `dvc metrics show` and `dvc exp show` stay readable) and reports/selection_notes.json
(its words: the criterion and rule, the estimate behind ln L, the data set), with how sure the pick
is: bootstrap selection frequencies over the training (and test) examples, the paired comparison
of the selected d with every other, each seed's own pick, and which models were still improving
when training stopped (see vaebic.confidence).
Only the metrics files of the latent dimensions and seeds now in params.yaml are read: files
left behind by a dimension removed from the sweep are ignored.
"""

from pathlib import Path

from vaebic.cli import run_cli, stage_parser


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--metrics", default="metrics")
    ap.add_argument("--out", default="reports")
    args = ap.parse_args()
    from vaebic.files import write_json_atomic, write_text_atomic
    from vaebic.selection.criteria import NOTES_FILE, PICKS_FILE, SELECTION_FILE, picks_csv, split_numbers
    from vaebic.stages.select_dim import select

    table, choice, picks = select(args.params, args.metrics, args.data)
    numbers, words = split_numbers(choice)  # report.md explains them
    out = Path(args.out)
    write_text_atomic(out / "bic.csv", table.to_csv(index=False, float_format="%.6f"))
    write_text_atomic(out / PICKS_FILE, picks_csv(picks))
    write_json_atomic(out / SELECTION_FILE, numbers)
    write_json_atomic(out / NOTES_FILE, words)


if __name__ == "__main__":
    run_cli(main)
