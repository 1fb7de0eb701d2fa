"""Metrics of a trained model on a data split: reconstruction term, KL, ELBO, the importance-weighted
log-likelihood estimate (all in nats per example), per-unit KL and active units."""

from __future__ import annotations

import numpy as np
import torch

from vaebic.device import autocast, cpu_slow_paths_off, host_float64
from vaebic.model.objectives import elbo_terms, iwae_log_likelihood, kl_per_unit


@torch.no_grad()
@cpu_slow_paths_off()
def evaluate_split(
    model, x: torch.Tensor, *, n_samples: int, batch_size: int, seed: int, precision: str = "float32", per_example: dict | None = None
) -> dict:
    """Means over the split of -E_q[log p(x|z)] (recon), KL(q(z|x)||p(z)) and the ELBO, plus the ELBO sum.
    If per_example is a dict, each example's ELBO goes into it under "elbo" (float64, nats).

    The expectation over q is a Monte-Carlo average of n_samples draws per example (seeded). The
    per-example terms stay on the device in the model's precision; their sums are taken in
    float64 on the host (no float64 on the device: MPS has none).
    """
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    n = len(x)
    terms = torch.empty((2, n), device=x.device)  # log p(x|z) averaged over the draws, and KL, per example
    for start in range(0, n, batch_size):
        with autocast(x.device, precision):
            log_px, kl = elbo_terms(model, x[start : start + batch_size], n_samples=n_samples, generator=gen)
        terms[0, start : start + len(log_px)] = log_px
        terms[1, start : start + len(kl)] = kl
    host = host_float64(terms)
    log_px_sum, kl_sum = host.sum(1)
    if per_example is not None:
        per_example["elbo"] = host[0] - host[1]
    elbo_sum = float(log_px_sum - kl_sum)
    return {
        "n": n,
        "recon_nats": float(-log_px_sum / n),
        "kl_nats": float(kl_sum / n),
        "elbo_nats": elbo_sum / n,
        "elbo_sum_nats": elbo_sum,
        "n_mc_samples": n_samples,
    }


@torch.no_grad()
def latent_usage(model, x: torch.Tensor, *, batch_size: int, threshold: float = 0.01) -> dict:
    """Which latent units the model uses (Burda, Grosse & Salakhutdinov 2015, section 5.2).

    A unit u is active when A_u = Var_x(E_q[z_u|x]) > threshold: its posterior mean moves with
    the data. Also the mean KL(q(z_u|x) || N(0, 1)) per unit, in nats: near zero for a unit the
    model ignores (posterior collapsed onto the prior). Variances and sums in float64 on the host.
    """
    model.eval()
    mus, kls = [], []
    for start in range(0, len(x), batch_size):
        mu, logvar = model.encode(x[start : start + batch_size])
        mus.append(host_float64(mu))
        kls.append(host_float64(kl_per_unit(mu, logvar)).sum(0))
    mu = np.concatenate(mus)
    activity = mu.var(0, ddof=1) if len(mu) > 1 else np.zeros(mu.shape[1])
    return {
        "active_units": int((activity > threshold).sum()),
        "active_threshold": threshold,
        "mu_variance": activity.tolist(),
        "kl_per_unit_nats": (np.sum(kls, axis=0) / len(x)).tolist(),
    }


@torch.no_grad()
@cpu_slow_paths_off()
def log_likelihood_estimate(
    model,
    x: torch.Tensor,
    *,
    k_samples: int,
    batch_size: int,
    max_chunk_mb: float,
    seed: int,
    precision: str = "float32",
    per_example: dict | None = None,
) -> dict:
    """Mean and sum over the split of the importance-weighted log p(x) estimate, with Monte-Carlo standard errors.
    precision 'bfloat16' runs the network under bf16 autocast (the likelihood arithmetic stays float32).
    If per_example is a dict, each example's estimate goes into it under "iwae" (float64, nats)."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    with autocast(x.device, precision):
        est = iwae_log_likelihood(
            model, x, k_samples, generator=gen, batch_size=batch_size, max_chunk_elements=max(1, int(max_chunk_mb * 2**20) // 4)
        )
    host = host_float64(est.log_px)
    total = float(host.sum())
    if per_example is not None:
        per_example["iwae"] = host
    return {
        "iwae_nats": total / len(x),
        "iwae_sum_nats": total,
        "iwae_std_err_nats": est.mean_std_err(),
        "iwae_sum_std_err_nats": est.sum_std_err(),
        "k_samples": k_samples,
        "precision": precision,
    }


@torch.no_grad()
def reconstructions_and_samples(model, x: torch.Tensor, n_samples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel means of p(x | z = E_q[z|x]) for the images x, and of p(x|z) for n_samples z ~ N(0, I)."""
    model.eval()
    mu, _ = model.encode(x)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    z = torch.randn(n_samples, model.latent_dim, generator=gen, device=x.device)
    return model.mean(model.decode(mu)), model.mean(model.decode(z))
