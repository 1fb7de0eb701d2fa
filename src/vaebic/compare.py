"""Do this run's results reproduce the committed ones? `python -m vaebic.compare`

Compares reports/bic.csv and reports/selection.json (with its words, selection_notes.json) in the
workspace with the committed ones
(`git show HEAD:reports/...`, or a folder given with --against): every model's estimates within
tolerances, and the same picks by BIC, AIC and the held-out estimate (a pick may swap only between
dimensions tied within tolerance in this run, which rounding alone can reorder; the swap is
printed, not failed). Exit 0 when they agree,
1 with a table of the differences when they do not; --summary FILE appends a Markdown summary
(for $GITHUB_STEP_SUMMARY).

A tolerance covers two things, whichever is larger:
- the Monte-Carlo error of the importance-weighted estimates: Z_MC standard errors of the
  difference of two independent estimates, sqrt(se_committed^2 + se_now^2);
- the spread of training from one platform to another: another thread count, BLAS or CPU maker
  changes float rounding, which training over a hundred epochs and more turns into different models
  (up to 1.3 nats per example on the training split and 0.35 on the test split between an Intel
  and an AMD CPU, at the same best epoch).
  PLATFORM_NATS was measured on the default configuration (see docs/testing.md, "Continuous
  integration"); BIC and AIC move by 2 n times the training-split estimate.

The same rounding can end a model's early stopping at another epoch of its validation plateau,
where its training-split estimate, still rising as the decoder fits its own examples, differs by
more than rounding: measured on the default sweep, 1 thread against 2 left 9 models bit for bit
the same and stopped d = 3 at epoch 137 instead of 103 (training estimate +2.5 nats per example,
held-out +0.8), with the same picks. A model whose best epoch differs is therefore listed, not
compared number by number; the picks are compared all the same.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
from pathlib import Path

from vaebic.errors import VaebicError

#: standard errors of a difference that count as agreement (two-sided, about 1 in 15,000 by chance)
Z_MC = 4.0
#: nats per example. Measured on the default configuration: 1 thread against 2 changed one model of
#: ten (d = 3) by 0.008 (train) and 0.035 (test) nats per example, and a machine with AVX2 only
#: reproduced the results of one with AVX-512 exactly (both AMD EPYC). An Intel Xeon (AVX-512 and
#: AMX) against that AMD EPYC, trained to the plateau: of the six models that kept the same best
#: epoch, d = 8 moved by 1.31 (IWAE, train), 1.23 (ELBO, train) and 0.35 (IWAE, test) nats per
#: example, the others by at most 0.21; this allows 1.5 times the largest change seen.
PLATFORM_NATS = {"iwae_train": 2.0, "iwae_test": 0.5, "elbo_train": 2.0, "elbo_test": 0.5}
PICKS = ("bic", "aic", "test_log_likelihood")


def _read_committed(ref: str, name: str, reports: str) -> str:
    try:
        return subprocess.run(["git", "show", f"{ref}:{reports}/{name}"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise VaebicError(f"cannot read the committed {reports}/{name} at {ref}: {detail.strip()}") from None


def read_folder(folder: Path):
    """(table, selection) in folder: bic.csv, and selection.json joined with selection_notes.json
    (results older than the notes file hold their words in selection.json)."""
    import pandas as pd

    from vaebic.selection.criteria import NOTES_FILE, SELECTION_FILE, join_numbers

    notes = folder / NOTES_FILE
    words = json.loads(notes.read_text()) if notes.exists() else {}
    return pd.read_csv(folder / "bic.csv"), join_numbers(json.loads((folder / SELECTION_FILE).read_text()), words)


def load_results(against: str, reports: str = "reports"):
    """(table, selection) of the committed results: a folder holding bic.csv and selection.json, or a git revision."""
    import pandas as pd

    from vaebic.selection.criteria import NOTES_FILE, SELECTION_FILE, join_numbers

    folder = Path(against)
    if folder.is_dir():
        try:
            return read_folder(folder)
        except (OSError, ValueError) as exc:
            raise VaebicError(f"{folder}: cannot read bic.csv and selection.json ({exc})") from None
    try:
        words = json.loads(_read_committed(against, NOTES_FILE, reports))
    except VaebicError:  # committed before the words moved out of selection.json
        words = {}
    return (
        pd.read_csv(io.StringIO(_read_committed(against, "bic.csv", reports))),
        join_numbers(json.loads(_read_committed(against, SELECTION_FILE, reports)), words),
    )


def tolerance(metric: str, old, new) -> float:
    """Tolerance of one per-example metric of one model (rows of the two tables)."""
    tol = PLATFORM_NATS[metric]
    if metric.startswith("iwae_"):
        split = metric.split("_")[1]
        tol = max(tol, Z_MC * math.hypot(float(old[f"iwae_se_{split}"]), float(new[f"iwae_se_{split}"])))
    return tol


def compare(old_table, old_sel: dict, new_table, new_sel: dict) -> list[dict]:
    """The differences beyond tolerance: [{what, model, committed, now, tolerance}]; empty when they agree."""
    out = []
    key = ["latent_dim", "seed"]
    old_models = {tuple(r) for r in old_table[key].itertuples(index=False)}
    new_models = {tuple(r) for r in new_table[key].itertuples(index=False)}
    if old_models != new_models:
        fmt = lambda ms: ", ".join(f"{d}-{s}" for d, s in sorted(ms)) or "none"  # noqa: E731
        out.append(
            {
                "what": "models (latent_dim-seed)",
                "model": "",
                "committed": fmt(old_models - new_models),
                "now": fmt(new_models - old_models),
                "tolerance": "the same models",
            }
        )
    old_rows, new_rows = old_table.set_index(key), new_table.set_index(key)
    basis = old_sel.get("log_likelihood", "iwae")
    moved = {m for m, _, _ in stopped_elsewhere(old_table, new_table)}
    for model in sorted((old_models & new_models) - moved):
        o, n = old_rows.loc[model], new_rows.loc[model]
        name = f"{model[0]}-{model[1]}"
        for metric in PLATFORM_NATS:
            tol = tolerance(metric, o, n)
            if not abs(float(n[metric]) - float(o[metric])) <= tol:
                out.append({"what": metric, "model": name, "committed": float(o[metric]), "now": float(n[metric]), "tolerance": tol})
        # BIC and AIC are -2 ln L plus constants: 2 n times the training-split estimate's tolerance
        tol = 2 * float(o["n_train"]) * tolerance(f"{basis}_train", o, n)
        for metric in ("bic", "aic"):
            if not abs(float(n[metric]) - float(o[metric])) <= tol:
                out.append({"what": metric, "model": name, "committed": float(o[metric]), "now": float(n[metric]), "tolerance": tol})
    for pick in PICKS:
        a, b = old_sel["selected_by"].get(pick), new_sel["selected_by"].get(pick)
        if a != b and not near_tie(new_table, pick, a, b, basis):
            out.append({"what": f"latent dimension picked by {pick}", "model": "", "committed": a, "now": b, "tolerance": "identical"})
    return out


def stopped_elsewhere(old_table, new_table) -> list[tuple[tuple[int, int], int, int]]:
    """Models in both tables whose early stopping kept another epoch: [((latent_dim, seed), committed, now)]."""
    if "best_epoch" not in old_table or "best_epoch" not in new_table:  # results from before early stopping
        return []
    old = {(int(r.latent_dim), int(r.seed)): int(r.best_epoch) for r in old_table.itertuples(index=False)}
    new = {(int(r.latent_dim), int(r.seed)): int(r.best_epoch) for r in new_table.itertuples(index=False)}
    return [(m, old[m], new[m]) for m in sorted(old.keys() & new.keys()) if old[m] != new[m]]


def near_tie(table, pick: str, a, b, basis: str) -> bool:
    """Whether the committed pick a and the new pick b are tied within tolerance in this run (means
    over seeds): then rounding alone can swap them, and the swap is reported, not failed."""
    if a not in set(table.latent_dim) or b not in set(table.latent_dim):
        return False
    rows = {d: table[table.latent_dim == d] for d in (a, b)}
    metric = {"bic": "bic", "aic": "aic", "test_log_likelihood": f"{basis}_test"}[pick]
    per_example = f"{basis}_train" if pick in ("bic", "aic") else metric
    # the larger of the two models' tolerances, on the scale of the metric compared
    tol = max(tolerance(per_example, r.iloc[0], r.iloc[0]) for r in rows.values())
    if pick in ("bic", "aic"):
        tol *= 2 * float(table.n_train.iloc[0])
    return abs(float(rows[a][metric].mean()) - float(rows[b][metric].mean())) <= tol


def near_ties(old_sel: dict, new_sel: dict) -> list[str]:
    return [
        f"{pick}: {old_sel['selected_by'][pick]} -> {new_sel['selected_by'][pick]}"
        for pick in PICKS
        if old_sel["selected_by"].get(pick) != new_sel["selected_by"].get(pick)
    ]


def _cell(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table_text(rows: list[dict]) -> str:
    lines = ["| metric | model | committed | now | tolerance |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['what']} | {r['model']} | {_cell(r['committed'])} | {_cell(r['now'])} | {_cell(r['tolerance'])} |" for r in rows]
    return "\n".join(lines)


def summary_text(new_table, new_sel: dict, rows: list[dict], compared: bool, n_models: int, moved: list | None = None) -> str:
    by = new_sel["selected_by"]
    share = new_sel.get("selection_frequency") or {}
    pct = {k: f" ({100 * share[k]:.0f}% of bootstrap resamples)" if share.get(k) is not None else "" for k in PICKS}
    if not compared:
        verdict = "not compared (not the committed configuration)"
    elif rows:
        verdict = f"**DIFFERENT from the committed results**: {len(rows)} differences beyond tolerance"
    else:
        verdict = f"reproduces the committed results ({n_models} models within tolerance, the same picks)"
        verdict += "".join(
            f"; d={d} seed {s} kept epoch {now} of its plateau, not {was} (not compared)" for (d, s), was, now in moved or []
        )
    shown = [
        c for c in ("latent_dim", "seed", "n_params", "bic", "aic", "iwae_train", "iwae_test", "selection_frequency") if c in new_table
    ]
    bic = ["| " + " | ".join(shown) + " |", "|" + "---:|" * len(shown)]
    bic += [
        "| " + " | ".join(_cell(v) if not isinstance(v, float) or abs(v) < 1e5 else f"{v:.0f}" for v in r) + " |"
        for r in new_table[shown].itertuples(index=False)
    ]
    parts = [
        f"## vaebic pipeline: selected latent dimension {new_sel['best_latent_dim']}",
        "",
        f"- BIC picks d = {by['bic']}{pct['bic']}",
        f"- AIC picks d = {by['aic']}{pct['aic']}",
        f"- the held-out estimate picks d = {by['test_log_likelihood']}{pct['test_log_likelihood']}",
        f"- comparison with the committed results: {verdict}",
        "",
    ]
    if rows:
        parts += [table_text(rows), ""]
    parts += ["### BIC table", *bic, "", "The BIC curve is in the uploaded artifact (reports/bic_curve.png)."]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vaebic.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--against", default="HEAD", help="the committed results: a git revision (default HEAD) or a folder with bic.csv and selection.json"
    )
    ap.add_argument("--reports", default="reports", help="this run's reports folder")
    ap.add_argument("--summary", help="append a Markdown summary to this file (e.g. $GITHUB_STEP_SUMMARY)")
    ap.add_argument(
        "--summary-only", action="store_true", help="write the summary without comparing (a configuration other than the committed one)"
    )
    args = ap.parse_args(argv)
    try:
        new_table, new_sel = read_folder(Path(args.reports))
    except (OSError, ValueError) as exc:
        raise VaebicError(f"{args.reports}: no results to compare ({exc}); run `dvc repro` first") from None
    old_table, old_sel = (None, None) if args.summary_only else load_results(args.against, args.reports)
    rows = [] if args.summary_only else compare(old_table, old_sel, new_table, new_sel)
    moved = [] if args.summary_only else stopped_elsewhere(old_table, new_table)
    if args.summary:
        with open(args.summary, "a") as f:
            f.write(summary_text(new_table, new_sel, rows, not args.summary_only, len(new_table) - len(moved), moved))
    if args.summary_only:
        print(f"selected latent dimension {new_sel['best_latent_dim']}; not compared")
        return
    if rows:
        print(f"the results differ from the committed ones ({args.against}) beyond tolerance:\n{table_text(rows)}")
        raise SystemExit(1)
    swapped = near_ties(old_sel, new_sel)
    same = "the same picks" if not swapped else f"picks swapped between near-tied dimensions ({'; '.join(swapped)})"
    for (d, seed), was, now in moved:
        print(f"d={d} seed {seed} kept epoch {now} of its validation plateau, not {was}: listed, not compared number by number")
    print(
        f"the results reproduce the committed ones ({args.against}): {len(new_table) - len(moved)} models within tolerance, "
        f"{same} (BIC {new_sel['selected_by']['bic']}, AIC {new_sel['selected_by']['aic']}, "
        f"held-out {new_sel['selected_by']['test_log_likelihood']})"
    )


if __name__ == "__main__":
    from vaebic.cli import run_cli

    run_cli(main)
