"""reports/report.md: the BIC curve, the other figures and the table, each number said what it is."""

from __future__ import annotations

from vaebic.selection import COLUMNS

PARAM_COUNT_TEXT = {
    "decoder": "the decoder's parameters (the generative model p(x|z); the encoder is an inference device and defines no distribution over x)",
    "all": "all parameters, encoder and decoder",
}

BINARY_INPUT_TEXT = "Bernoulli (binary cross-entropy summed over pixels) on binary pixels, used as they are (the inputs are 0/1)"
LIKELIHOOD_TEXT = {
    "bernoulli": "Bernoulli (binary cross-entropy summed over pixels) on statically binarised pixels",
    "gaussian": "Gaussian N(x; mean(z), sigma^2 I) on grey levels in [0, 1], constants included",
    "continuous_bernoulli": "continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) on grey levels in [0, 1], normaliser included",
}


def describe_setup(meta: dict, count_params: str, log_likelihood: str, k_samples: int, gaussian_sigma=None) -> dict:
    """Plain-words statements of what the numbers are, shared by the report and the figures."""
    likelihood = LIKELIHOOD_TEXT[meta["likelihood"]]
    if meta["likelihood"] == "bernoulli" and meta.get("binarization", "").startswith("none"):
        likelihood = BINARY_INPUT_TEXT
    if meta["likelihood"] == "gaussian":
        likelihood += "; sigma learned (one scalar, counted in k)" if gaussian_sigma == "learned" else f"; sigma fixed at {gaussian_sigma}"
    if log_likelihood == "iwae":
        estimate = (f"ln L̂ = sum over the training split of the importance-weighted estimate of log p(x) with K = {k_samples} "
                    "samples per example (Burda et al. 2015). It is a lower bound in expectation that tightens as K grows, "
                    "much tighter than the ELBO, whose gap grows with the latent dimension and would bias BIC towards small models")
        short = f"ln L̂ = training-split IWAE sum (K={k_samples})"
    else:
        estimate = ("ln L̂ = sum over the training split of the per-example ELBO: a lower bound on log p(x), so ln L̂ is "
                    "under-estimated, more so for larger latent spaces, where the gap tends to grow")
        short = "ln L̂ = training-split ELBO sum (a lower bound)"
    synthetic = meta.get("synthetic")
    truth = f"; synthetic, true latent dimension {synthetic['true_dim']}" if synthetic else ""
    if meta.get("source"):
        truth += f"; read from {meta['source']}"
    reading = meta.get("intensity")  # prepared data from before the intensity record have none
    if reading:
        lo, hi = reading["source_range"]
        stored = (f"read as {reading['rule']} (source dtype {reading['source_dtype']}, values {lo:g} to {hi:g}; mean intensity "
                  f"{reading['mean_intensity']:.3f}); binarisation: {meta.get('binarization', 'not recorded')}")
    else:
        stored = "not recorded (prepared by an older vaebic: re-run `dvc repro -f prepare`)"
    return {
        "data": f"{meta['dataset']} ({meta['n_train']} training / {meta['n_test']} test examples, images {'x'.join(map(str, meta['image_shape']))}; data fingerprint {meta['fingerprint'][:12]}{truth})",
        "stored_values": stored,
        "likelihood": likelihood,
        "log_likelihood": estimate,
        "heldout": "importance-weighted estimate" if log_likelihood == "iwae" else "ELBO",
        "k": PARAM_COUNT_TEXT[count_params],
        "n": "n = number of training examples",
        "subtitle": f"{meta['dataset']}, {meta['likelihood']} likelihood; {short}; k = {count_params} parameters; n = {meta['n_train']} training examples",
    }


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


def usage_table(table, kl_per_unit: dict) -> str:
    """Active units and the per-unit KL (sorted, largest first) of each model, on the training split."""
    lines = ["| latent_dim | seed | active units | KL per unit, nats (sorted) |", "|---:|---:|---:|---|"]
    for row in table.itertuples(index=False):
        kls = sorted(kl_per_unit.get((row.latent_dim, row.seed), []), reverse=True)
        shown = ", ".join(f"{k:.2f}" for k in kls[:16]) + (f", … ({len(kls) - 16} more)" if len(kls) > 16 else "")
        lines.append(f"| {row.latent_dim} | {row.seed} | {row.active_units} | {shown} |")
    return "\n".join(lines)


def write_markdown(path, *, table, choice: dict, setup: dict, figures: dict[str, str], kl_per_unit: dict, active_threshold: float) -> None:
    """figures maps a role (bic_curve, metric_curves, latent_usage, reconstructions, samples) to a file name in reports/."""
    best = choice["best_latent_dim"]
    by = choice["selected_by"]
    shown = [c for c in ("latent_dim", "seed", "n_params", "log_likelihood", "log_likelihood_se", "bic", "aic", "iwae_train", "iwae_test",
                         "elbo_train", "elbo_test", "recon_test", "kl_test", "active_units") if c in table]
    text = f"""# vaebic report: how many latent dimensions does the data need?

**Selected latent dimension: {best}** (seed {choice['best_seed']}), by {choice['rule']}.

| criterion | selects d |
|---|---:|
| BIC (lowest mean) | {by['bic']} |
| AIC (lowest mean) | {by['aic']} |
| held-out log-likelihood ({setup['heldout']}, test split, highest mean) | {by['test_log_likelihood']} |

## What the numbers are
- **Data**: {setup['data']}.
- **Stored values**: {setup['stored_values']}.
- **Likelihood** p(x|z): {setup['likelihood']}.
- **ln L̂**: {setup['log_likelihood']}.
- **k** (parameters counted): {setup['k']}.
- **n**: {setup['n']}.
- **BIC** = k ln n − 2 ln L̂ and **AIC** = 2k − 2 ln L̂: lower is better. The Monte-Carlo standard error of
  ln L̂ is in `log_likelihood_se`; that of BIC and AIC is twice it.
- Log-likelihoods, ELBO, reconstruction and KL are in nats per example, averaged over the named split.

## BIC curve
![BIC against latent dimension]({figures['bic_curve']})

Read it from left to right: adding latent dimensions first buys a large gain in likelihood
(BIC falls), then the gain no longer pays for the extra decoder parameters (BIC rises). The
dashed line and the star mark the selected dimension. The right panel shows the held-out
log-likelihood, which does not penalise size: where it keeps rising while BIC rises, the extra
dimensions fit the data a little better but not enough to justify their parameters.

## ELBO, reconstruction and KL
![ELBO, reconstruction and KL against latent dimension]({figures['metric_curves']})

## Latent units in use
A unit u is *active* when Var_x(E_q[z_u|x]) > {active_threshold:g} over the training split (Burda et al. 2015):
its posterior mean moves with the data. An inactive unit has collapsed onto the prior (its KL is near 0)
and carries no information, so a model with many inactive units is effectively smaller than its d.

![active units and per-unit KL]({figures['latent_usage']})

{usage_table(table, kl_per_unit)}

## The selected model
Test images (top) and their reconstructions (pixel means of p(x|z)):

![reconstructions]({figures['reconstructions']})

Samples from the prior, z ~ N(0, I), decoded (pixel means of p(x|z)):

![prior samples]({figures['samples']})

## Table (one row per latent dimension and seed; full table in `bic.csv`)
{markdown_table(table[shown])}

Columns:
""" + "\n".join(f"- `{c}`: {COLUMNS[c]}" for c in shown) + "\n"
    with open(path, "w") as f:
        f.write(text)
