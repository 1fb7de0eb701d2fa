"""reports/report.md: the BIC curve, the other figures and the table, each number said what it is."""

from __future__ import annotations

from vaebic.selection import COLUMNS

PARAM_COUNT_TEXT = {
    "decoder": "the decoder's parameters (the generative model p(x|z); the encoder is an inference device and defines no distribution over x)",
    "all": "all parameters, encoder and decoder",
}


def describe_setup(meta: dict, count_params: str) -> dict:
    """Plain-words statements of what the numbers are, shared by the report and the figures."""
    likelihood = "Bernoulli (binary cross-entropy summed over pixels) on statically binarised pixels" if meta["binarized"] else meta["likelihood"]
    return {
        "data": f"{meta['dataset']} ({meta['n_train']} training / {meta['n_test']} test examples, images {'x'.join(map(str, meta['image_shape']))}; data fingerprint {meta['fingerprint'][:12]})",
        "likelihood": likelihood,
        "log_likelihood": "ln L̂ = sum over the training split of the per-example ELBO: a lower bound on log p(x), so ln L̂ is under-estimated (more so for larger latent spaces, where the gap tends to grow)",
        "k": PARAM_COUNT_TEXT[count_params],
        "n": "n = number of training examples",
        "subtitle": f"{meta['dataset']}, {meta['likelihood']} likelihood; ln L̂ = training-split ELBO sum (a lower bound); k = {count_params} parameters; n = {meta['n_train']} training examples",
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


def write_markdown(path, *, table, choice: dict, setup: dict, figures: dict[str, str]) -> None:
    """figures maps a role (bic_curve, metric_curves, reconstructions, samples) to a file name in reports/."""
    best = choice["best_latent_dim"]
    by = choice["selected_by"]
    shown = [c for c in ("latent_dim", "seed", "n_params", "log_likelihood", "bic", "aic", "elbo_train", "elbo_test", "recon_test", "kl_test") if c in table]
    text = f"""# vaebic report: how many latent dimensions does the data need?

**Selected latent dimension: {best}** (seed {choice['best_seed']}), by {choice['rule']}.

| criterion | selects d |
|---|---:|
| BIC (lowest mean) | {by['bic']} |
| AIC (lowest mean) | {by['aic']} |
| held-out ELBO (highest mean, test split) | {by['test_elbo']} |

## What the numbers are
- **Data**: {setup['data']}.
- **Likelihood** p(x|z): {setup['likelihood']}.
- **ln L̂**: {setup['log_likelihood']}.
- **k** (parameters counted): {setup['k']}.
- **n**: {setup['n']}.
- **BIC** = k ln n − 2 ln L̂ and **AIC** = 2k − 2 ln L̂: lower is better.
- ELBO, reconstruction and KL are in nats per example, averaged over the named split.

## BIC curve
![BIC against latent dimension]({figures['bic_curve']})

Read it from left to right: adding latent dimensions first buys a large gain in likelihood
(BIC falls), then the gain no longer pays for the extra decoder parameters (BIC rises). The
dashed line and the star mark the selected dimension. The right panel shows the held-out ELBO,
which does not penalise size: where it keeps rising while BIC rises, the extra dimensions
fit the data a little better but not enough to justify their parameters.

## ELBO, reconstruction and KL
![ELBO, reconstruction and KL against latent dimension]({figures['metric_curves']})

## The selected model
Test images (top) and their reconstructions (Bernoulli means):

![reconstructions]({figures['reconstructions']})

Samples from the prior, z ~ N(0, I), decoded (Bernoulli means):

![prior samples]({figures['samples']})

## Table (one row per latent dimension and seed; full table in `bic.csv`)
{markdown_table(table[shown])}

Columns:
""" + "\n".join(f"- `{c}`: {COLUMNS[c]}" for c in shown) + "\n"
    with open(path, "w") as f:
        f.write(text)
