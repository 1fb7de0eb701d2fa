"""Metrics of a trained model on a data split: reconstruction term, KL, ELBO, the importance-weighted
log-likelihood estimate (all in nats per example), per-unit KL and active units."""

from __future__ import annotations

import torch

from vaebic.model import autocast, denormals_flushed
from vaebic.objectives import elbo_terms, iwae_log_likelihood, kl_per_unit


@torch.no_grad()
@denormals_flushed()
def evaluate_split(model, x: torch.Tensor, *, n_samples: int, batch_size: int, seed: int, precision: str = "float32") -> dict:
    """Means over the split of -E_q[log p(x|z)] (recon), KL(q(z|x)||p(z)) and the ELBO, plus the ELBO sum.

    The expectation over q is a Monte-Carlo average of n_samples draws per example (seeded);
    sums are accumulated in float64.
    """
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    log_px_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    kl_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, len(x), batch_size):
        with autocast(x.device, precision):
            log_px, kl = elbo_terms(model, x[start:start + batch_size], n_samples=n_samples, generator=gen)
        log_px_sum += log_px.double().sum()
        kl_sum += kl.double().sum()
    n = len(x)
    elbo_sum = (log_px_sum - kl_sum).item()
    return {
        "n": n,
        "recon_nats": -log_px_sum.item() / n,
        "kl_nats": kl_sum.item() / n,
        "elbo_nats": elbo_sum / n,
        "elbo_sum_nats": elbo_sum,
        "n_mc_samples": n_samples,
    }


@torch.no_grad()
def latent_usage(model, x: torch.Tensor, *, batch_size: int, threshold: float = 0.01) -> dict:
    """Which latent units the model uses (Burda, Grosse & Salakhutdinov 2015, section 5.2).

    A unit u is active when A_u = Var_x(E_q[z_u|x]) > threshold: its posterior mean moves with
    the data. Also the mean KL(q(z_u|x) || N(0, 1)) per unit, in nats: near zero for a unit the
    model ignores (posterior collapsed onto the prior).
    """
    model.eval()
    mus, kls = [], []
    for start in range(0, len(x), batch_size):
        mu, logvar = model.encode(x[start:start + batch_size])
        mus.append(mu.double())
        kls.append(kl_per_unit(mu, logvar).double().sum(0))
    mu = torch.cat(mus)
    activity = mu.var(0, unbiased=True) if len(mu) > 1 else torch.zeros(mu.shape[1], dtype=torch.float64)
    return {
        "active_units": int((activity > threshold).sum()),
        "active_threshold": threshold,
        "mu_variance": activity.tolist(),
        "kl_per_unit_nats": (torch.stack(kls).sum(0) / len(x)).tolist(),
    }


@torch.no_grad()
@denormals_flushed()
def log_likelihood_estimate(model, x: torch.Tensor, *, k_samples: int, batch_size: int, max_chunk_mb: int, seed: int,
                            precision: str = "float32") -> dict:
    """Mean and sum over the split of the importance-weighted log p(x) estimate, with Monte-Carlo standard errors.
    precision 'bfloat16' runs the network under bf16 autocast (the likelihood arithmetic stays float32)."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    with autocast(x.device, precision):
        est = iwae_log_likelihood(model, x, k_samples, generator=gen, batch_size=batch_size,
                                  max_chunk_elements=max_chunk_mb * 2**20 // 4)
    total = est.log_px.double().sum().item()
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
