"""Metrics of a trained model on a data split: reconstruction term, KL and ELBO, nats per example."""

from __future__ import annotations

import torch

from vaebic.objectives import elbo_terms


@torch.no_grad()
def evaluate_split(model, x: torch.Tensor, *, n_samples: int, batch_size: int, seed: int) -> dict:
    """Means over the split of -E_q[log p(x|z)] (recon), KL(q(z|x)||p(z)) and the ELBO, plus the ELBO sum.

    The expectation over q is a Monte-Carlo average of n_samples draws per example (seeded);
    sums are accumulated in float64.
    """
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    log_px_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    kl_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, len(x), batch_size):
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
def reconstructions_and_samples(model, x: torch.Tensor, n_samples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Bernoulli means of p(x | z = E_q[z|x]) for the images x, and of p(x|z) for n_samples z ~ N(0, I)."""
    model.eval()
    mu, _ = model.encode(x)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    z = torch.randn(n_samples, model.latent_dim, generator=gen, device=x.device)
    return torch.sigmoid(model.decode(mu)), torch.sigmoid(model.decode(z))
