"""reports/report.md: the BIC curve, the other figures and the table, each number said what it is."""

from __future__ import annotations

from vaebic.model import likelihoods
from vaebic.selection.criteria import COLUMNS

PARAM_COUNT_TEXT = {
    "decoder": "the decoder's parameters (the generative model p(x|z); the encoder is an inference device and defines no distribution over x)",
    "all": "all parameters, encoder and decoder",
}


def describe_setup(meta: dict, count_params: str, log_likelihood: str, k_samples: int, gaussian_sigma=None) -> dict:
    """Plain-words statements of what the numbers are, shared by the report and the figures."""
    likelihood = likelihoods.get_likelihood(meta["likelihood"]).report_text(meta, {"gaussian_sigma": gaussian_sigma})
    if log_likelihood == "iwae":
        estimate = (
            f"ln L̂ = sum over the training split of the importance-weighted estimate of log p(x) with K = {k_samples} "
            "samples per example (Burda et al. 2015). It is a lower bound in expectation that tightens as K grows, "
            "much tighter than the ELBO, whose gap grows with the latent dimension and would bias BIC towards small models"
        )
        short = f"ln L̂ = training-split IWAE sum (K={k_samples})"
    else:
        estimate = (
            "ln L̂ = sum over the training split of the per-example ELBO: a lower bound on log p(x), so ln L̂ is "
            "under-estimated, more so for larger latent spaces, where the gap tends to grow"
        )
        short = "ln L̂ = training-split ELBO sum (a lower bound)"
    synthetic = meta.get("synthetic")
    truth = f"; synthetic, true latent dimension {synthetic['true_dim']}" if synthetic else ""
    if meta.get("source"):
        truth += f"; read from {meta['source']}"
    reading = meta.get("intensity")  # prepared data from before the intensity record have none
    if reading:
        lo, hi = reading["source_range"]
        stored = (
            f"read as {reading['rule']} (source dtype {reading['source_dtype']}, values {lo:g} to {hi:g}; mean intensity "
            f"{reading['mean_intensity']:.3f}); binarisation: {meta.get('binarization', 'not recorded')}"
        )
    else:
        stored = "not recorded (prepared by an older vaebic: re-run `dvc repro -f prepare`)"
    return {
        "data": f"{meta['dataset']} ({split_sizes(meta)} examples, images {'x'.join(map(str, meta['image_shape']))}; data fingerprint {meta['fingerprint'][:12]}{truth})",
        "stored_values": stored,
        "likelihood": likelihood,
        "log_likelihood": estimate,
        "heldout": "importance-weighted estimate" if log_likelihood == "iwae" else "ELBO",
        "k": PARAM_COUNT_TEXT[count_params],
        "n": n_text(meta),
        "subtitle": f"{meta['dataset']}, {meta['likelihood']} likelihood; {short}; k = {count_params} parameters; n = {meta['n_train']} training examples",
    }


def split_sizes(meta: dict) -> str:
    val = f" / {meta['n_validation']} validation" if meta.get("n_validation") else ""
    return f"{meta['n_train']} training{val} / {meta['n_test']} test"


def n_text(meta: dict) -> str:
    """What n counts: the examples the models were fitted on, and which were not."""
    val = meta.get("n_validation", 0)
    held = f"the {val} validation examples only decided when training stopped; " if val else ""
    return f"n = {meta['n_train']} training examples, the ones the models were fitted on ({held}the {meta['n_test']} test examples are held out)"


def precision_text(records: list[dict], train_configs: list[dict]) -> str:
    """Which precision the matrix multiplies of training and evaluation used, and why (resolved by
    the stages from `precision: auto` or as set), over all models of the table."""

    def one(kind: str, pairs: list[tuple[str, str]]) -> str:
        known = sorted(set(pairs))
        if not known:
            return f"{kind} not recorded (models from an older vaebic)"
        if len(known) == 1:
            value, why = known[0]
            return f"{kind} {value} ({why})"
        return f"{kind} mixed: " + "; ".join(f"{v} ({w})" for v, w in known)

    train = [(c["precision"], c.get("precision_why", "set in params.yaml")) for c in train_configs if c.get("precision")]
    evaluation = [(r["precision"]["value"], r["precision"]["why"]) for r in records if isinstance(r.get("precision"), dict)]
    return (
        f"matrix multiplies in {one('training', train)}, {one('evaluation', evaluation)}. Parameters, Adam's state, "
        "the likelihood, the KL, the log-sum-exp and all sums are float32"
    )


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 1e5 else f"{v:.1f}"
    return str(v)


def markdown_table(df) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" for _ in cols) + "|"]
    for row in df.itertuples(index=False):  # itertuples keeps each column's dtype; iterrows upcasts ints to float
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def _pct(v) -> str:
    return "–" if v != v else f"{100 * v:.0f}%"  # NaN: no bootstrap


def confidence_section(table, summary, choice: dict) -> str:
    """How sure the pick is: bootstrap selection frequencies, the paired comparison with the selected
    d (criterion difference, its 90% interval, Vuong's z), the spread over seeds, convergence flags."""
    crit = choice["criterion"].upper()
    best = choice["best_latent_dim"]
    b = choice.get("bootstrap_resamples", 0)
    per_d = (
        table.groupby("latent_dim")
        .agg(
            freq=("selection_frequency", "first"),
            freq_aic=("selection_frequency_aic", "first"),
            freq_heldout=("selection_frequency_heldout", "first"),
            delta=("delta_vs_selected", "first"),
            lo=("delta_vs_selected_lo90", "first"),
            hi=("delta_vs_selected_hi90", "first"),
            z=("vuong_z", "first"),
        )
        .reset_index()
    )
    spread = dict(zip(summary.latent_dim, summary[f"{choice['criterion']}_std"]))
    several = int(summary["n_seeds"].max()) > 1
    lines = []
    if b:
        share = choice["selection_frequency"]
        lines.append(
            f"Resampling the {int(table.n_train.iloc[0])} training examples with replacement {b} times (seeded) and "
            f"recomputing every model's ln L̂ on each resample, paired across models: **d = {best} has the lowest mean {crit} "
            f"in {_pct(share[choice['criterion']])} of the resamples**. BIC picks d = {choice['selected_by']['bic']} in "
            f"{_pct(share['bic'])}, AIC d = {choice['selected_by']['aic']} in {_pct(share['aic'])}, and resampling the test "
            f"examples, the held-out estimate d = {choice['selected_by']['test_log_likelihood']} in {_pct(share['test_log_likelihood'])}. "
            "These frequencies cover which examples were drawn, not which seed or how long the models trained."
        )
    else:
        lines.append("No bootstrap (select.bootstrap: 0): selection frequencies and intervals are not computed.")
    lines.append("")
    lines.append(
        f"Δ{crit} is d's mean {crit} minus that of d = {best} (> 0: d = {best} is better), with the 5th to 95th percentile "
        f"over the resamples; Vuong's z compares d = {best} with d on the per-example log-likelihood differences with the "
        f"{crit} penalty (Vuong 1989; > 1.64: d = {best} is better at the one-sided 5% level)."
    )
    lines.append("")
    head = f"| d | picked by {crit} | by AIC | by held-out | Δ{crit} [90% interval] | Vuong z |"
    head += f" {crit} spread over seeds (sd) |" if several else ""
    lines += [head, "|" + "---:|" * (6 if several else 5) + "---:|"]
    for r in per_d.itertuples(index=False):
        interval = "–" if r.latent_dim == best or r.lo != r.lo else f"{r.delta:.0f} [{r.lo:.0f}, {r.hi:.0f}]"
        z = "–" if r.z != r.z else f"{r.z:.2f}"
        row = f"| {r.latent_dim} | {_pct(r.freq)} | {_pct(r.freq_aic)} | {_pct(r.freq_heldout)} | {interval} | {z} |"
        row += f" {spread[r.latent_dim]:.0f} |" if several else ""
        lines.append(row)
    if several:
        picks = ", ".join(f"seed {s}: d = {d}" for s, d in choice.get("seed_picks", {}).items())
        lines += ["", f"Each seed's own pick by {crit}: {picks}."]
    return "\n".join(lines)


def usage_table(table, kl_per_unit: dict) -> str:
    """Active units and the per-unit KL (sorted, largest first) of each model, on the training split."""
    lines = ["| latent_dim | seed | active units | KL per unit, nats (sorted) |", "|---:|---:|---:|---|"]
    for row in table.itertuples(index=False):
        kls = sorted(kl_per_unit.get((row.latent_dim, row.seed), []), reverse=True)
        shown = ", ".join(f"{k:.2f}" for k in kls[:16]) + (f", … ({len(kls) - 16} more)" if len(kls) > 16 else "")
        lines.append(f"| {row.latent_dim} | {row.seed} | {row.active_units} | {shown} |")
    return "\n".join(lines)


def write_markdown(
    path,
    *,
    table,
    choice: dict,
    setup: dict,
    figures: dict[str, str],
    kl_per_unit: dict,
    active_threshold: float,
    precision: str | None = None,
    summary=None,
) -> None:
    """figures maps a role (bic_curve, pick_vs_epoch, metric_curves, latent_usage, reconstructions,
    samples) to a file name in reports/."""
    sections = [
        "# vaebic report: how many latent dimensions does the data need?",
        headline(choice),
        *[w for w in (overfit_note(choice), unsettled_note(choice, table), unused_units_note(choice, table)) if w],
        criteria_table(choice, setup),
        "## What the numbers are\n" + setup_list(setup, precision),
        "## BIC curve\n" + BIC_CURVE_TEXT.format(figure=figures["bic_curve"]),
        "## How sure is the pick\n"
        + (confidence_section(table, summary, choice) if summary is not None else "Not computed (results from an older vaebic)."),
        "## How training stopped, and when the pick settled\n" + stopping_section(table, choice, figures["pick_vs_epoch"]),
        f"## ELBO, reconstruction and KL\n![ELBO, reconstruction and KL against latent dimension]({figures['metric_curves']})",
        "## Latent units in use\n"
        + LATENT_TEXT.format(threshold=active_threshold, figure=figures["latent_usage"])
        + "\n\n"
        + usage_table(table, kl_per_unit),
        "## The selected model\n" + MODEL_TEXT.format(reconstructions=figures["reconstructions"], samples=figures["samples"]),
        "## Table (one row per latent dimension and seed; full table in `bic.csv`)\n" + full_table(table),
    ]
    with open(path, "w") as f:
        f.write("\n\n".join(sections) + "\n")


BIC_CURVE_TEXT = """![BIC against latent dimension]({figure})

Read it from left to right: adding latent dimensions first buys a large gain in likelihood
(BIC falls), then the gain no longer pays for the extra decoder parameters (BIC rises). The
dashed line and the star mark the selected dimension. The right panel shows the held-out
log-likelihood, which does not penalise size: where it keeps rising while BIC rises, the extra
dimensions fit the data a little better but not enough to justify their parameters."""

LATENT_TEXT = """A unit u is *active* when Var_x(E_q[z_u|x]) > {threshold:g} over the training split (Burda et al. 2015):
its posterior mean moves with the data. An inactive unit has collapsed onto the prior (its KL is near 0)
and carries no information, so a model with many inactive units is effectively smaller than its d.

![active units and per-unit KL]({figure})"""

MODEL_TEXT = """Test images (top) and their reconstructions (pixel means of p(x|z)):

![reconstructions]({reconstructions})

Samples from the prior, z ~ N(0, I), decoded (pixel means of p(x|z)):

![prior samples]({samples})"""

#: the columns of the report's table, when the table has them
SHOWN = (
    "latent_dim",
    "seed",
    "n_params",
    "log_likelihood",
    "log_likelihood_se",
    "bic",
    "aic",
    "iwae_train",
    "iwae_test",
    "generalization_gap",
    "elbo_train",
    "elbo_test",
    "recon_test",
    "kl_test",
    "active_units",
    "best_epoch",
    "stop_reason",
    "sigma",
)


def _freq(choice: dict) -> dict[str, str]:
    share = choice.get("selection_frequency") or {}
    return {name: _pct(share[name]) if share.get(name) is not None else "–" for name in ("bic", "aic", "test_log_likelihood")}


def headline(choice: dict) -> str:
    """The pick, how firm it is, since when it held during training, and how the models stopped."""
    crit = choice["criterion"]
    text = f"**Selected latent dimension: {choice['best_latent_dim']}** (seed {choice['best_seed']}), by {choice['rule']}."
    if (choice.get("selection_frequency") or {}).get(crit) is not None:
        text += (
            f" It has the lowest mean {crit.upper()} in {_freq(choice)[crit]} of {choice['bootstrap_resamples']} bootstrap "
            'resamples of the training examples (see "How sure is the pick").'
        )
    since, last = choice["pick_stable_since_epoch"][crit], choice["epochs_run_max"]
    text += f" **{crit.upper()} has picked d = {choice['best_latent_dim']} since epoch {since}** of the {last} that training ran"
    at_cap = choice["models_at_cap"]
    text += "; every model stopped on its validation plateau." if not at_cap else f"; {at_cap} models reached the cap (see below)."
    return text


def overfit_note(choice: dict) -> str:
    """In plain words, when BIC's pick rests on a training gain the held-out data do not show."""
    if not choice.get("bic_overfit"):
        return ""
    c = choice["bic_overfit_check"]
    big, small = c["larger_d"], c["smaller_d"]
    return (
        f"> **Trust the held-out pick, d = {small}, not BIC's d = {big}.** BIC prefers d = {big} because it fits the training "
        f"examples better than d = {small} by {c['train_gain']:.2f} nats per example, more than the {c['penalty']:.2f} nats "
        f"per example its extra parameters are charged. On the test examples, which neither model saw, d = {big} is better by "
        f"{c['heldout_gain']:.2f} nats per example (at most {c['heldout_gain_hi90']:.2f} at 90% confidence, counting "
        f"the test examples' sampling and the Monte-Carlo error): less than the charge. The training gain is the decoder fitting "
        "its own training examples, which BIC's parameter count k does not see. BIC is reported as defined; "
        "here its assumption does not hold."
    )


def unsettled_note(choice: dict, table) -> str:
    """Flags tied to the decision: models that reached the cap, picks that changed late in training."""
    notes = []
    if choice["models_at_cap"]:
        capped = ", ".join(f"d = {r.latent_dim} (seed {r.seed})" for r in table.itertuples(index=False) if r.stop_reason == "cap")
        notes.append(
            f"**{choice['models_at_cap']} of {len(table)} models reached the cap** (train.epochs) before their validation plateau: "
            f"{capped}. Their numbers would still change with more epochs, and the pick with them: raise train.epochs."
        )
    names = {"bic": "BIC", "aic": "AIC", "heldout": "the held-out estimate"}
    for name, late in choice["pick_changed_late"].items():
        if late:
            notes.append(
                f"**The pick of {names[name]} changed late in training** (it holds since epoch "
                f"{choice['pick_stable_since_epoch'][name]} of {choice['epochs_run_max']}): it may not have settled."
            )
    return "\n".join(f"> {n}" for n in notes)


def unused_units_note(choice: dict, table) -> str:
    """When the selected model leaves some of its latent units on the prior: how many it uses."""
    d, seed = choice["best_latent_dim"], choice["best_seed"]
    row = table[(table.latent_dim == d) & (table.seed == seed)]
    used = int(row.active_units.iloc[0]) if not row.empty else d
    if used >= d:
        return ""
    return (
        f"> **The selected model uses {used} of its {d} latent units**; the other {d - used} collapsed onto the prior "
        '(see "Latent units in use"). It is in effect a model of dimension '
        f"{used} that BIC charges for decoder weights it does not use, so it won on a better fit of the training "
        f"examples, which depends on how well each model trained (the seed, and the machine's rounding over many epochs). "
        "Read the answer as the units it uses; more `sweep.seeds` show how much the pick moves."
    )


def criteria_table(choice: dict, setup: dict) -> str:
    by, freq, since = choice["selected_by"], _freq(choice), choice["pick_stable_since_epoch"]
    held = since.get("heldout")
    return f"""| criterion | selects d | in this share of bootstrap resamples | has picked it since epoch |
|---|---:|---:|---:|
| BIC (lowest mean) | {by["bic"]} | {freq["bic"]} | {since["bic"]} |
| AIC (lowest mean) | {by["aic"]} | {freq["aic"]} | {since["aic"]} |
| held-out log-likelihood ({setup["heldout"]}, test split, highest mean) | {by["test_log_likelihood"]} | {freq["test_log_likelihood"]} | {"–" if held is None else held} |"""


def setup_list(setup: dict, precision: str | None) -> str:
    lines = [
        f"- **Data**: {setup['data']}.",
        f"- **Stored values**: {setup['stored_values']}.",
        f"- **Likelihood** p(x|z): {setup['likelihood']}.",
        f"- **ln L̂**: {setup['log_likelihood']}.",
        f"- **k** (parameters counted): {setup['k']}.",
        f"- **n**: {setup['n']}.",
        "- **BIC** = k ln n − 2 ln L̂ and **AIC** = 2k − 2 ln L̂: lower is better. The Monte-Carlo standard error of\n"
        "  ln L̂ is in `log_likelihood_se`; that of BIC and AIC is twice it.",
        "- Log-likelihoods, ELBO, reconstruction and KL are in nats per example, averaged over the named split.",
    ]
    if precision:
        lines.append(f"- **Precision**: {precision}.")
    return "\n".join(lines)


def stopping_section(table, choice: dict, figure: str) -> str:
    """How each model stopped (best epoch, epochs run, plateau or cap, generalisation gap) and the pick-by-epoch figure."""
    lines = [
        "Each model trained until its importance-weighted estimate on the validation split (carved from the training "
        "examples, never used for fitting) had not improved for `train.patience` epochs, and kept its best epoch's "
        "weights (early stopping). *plateau*: it stopped there; *cap*: it reached `train.epochs` first, and its numbers "
        "would still move. The generalisation gap is the training-split estimate minus the held-out one, nats per example.",
        "",
        "| d | seed | best epoch | epochs run | stopped | generalisation gap |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for r in table.itertuples(index=False):
        stop = "plateau" if r.stop_reason == "plateau" else "**cap**"
        lines.append(f"| {r.latent_dim} | {r.seed} | {r.best_epoch} | {r.epochs_run} | {stop} | {r.generalization_gap:.2f} |")
    lines += [
        "",
        f"![each criterion's pick had training stopped at epoch e]({figure})",
        "",
        "Each criterion's pick had training been capped at epoch e: each model then holds its best epoch up to e, and "
        "its estimate is its final one less what its training-split ELBO (for BIC and AIC) or its validation estimate "
        "(for the held-out pick) gained after that epoch; the curves end at the reported picks "
        "(`pick_vs_epoch.csv`). A pick that changed in the last 20% of the epochs, or a model at the cap, is flagged above.",
    ]
    return "\n".join(lines)


def full_table(table) -> str:
    shown = [c for c in SHOWN if c in table and not (c == "sigma" and table[c].isna().all())]
    columns = "\n".join(f"- `{c}`: {COLUMNS[c]}" for c in shown)
    return f"{markdown_table(table[shown])}\n\nColumns:\n{columns}"
