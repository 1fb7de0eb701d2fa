"""Log-likelihoods, the KL term and the ELBO, per example, in nats.

Conventions: every function returns one value per example (shape ``(N,)``); "log" is natural,
so every number is in nats. The ELBO is a lower bound on log p(x):

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))  <=  log p(x)

(Kingma & Welling 2014, "Auto-Encoding Variational Bayes", eq. 3.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) for x in {0, 1}^D under independent Bernoulli(sigmoid(logits)) pixels.

    Equals minus the binary cross-entropy summed over pixels; computed from logits, which is
    stable where sigmoid saturates. Leading dimensions are kept, the pixel dimension summed.
    """
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)), closed form, summed over latent units.

    KL = 1/2 * sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)   (Kingma & Welling 2014, appendix B).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def kl_per_unit(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The same KL, not summed: one value per example and latent unit."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a sample of q(z|x) that gradients flow through."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


def elbo_terms(model, x: torch.Tensor, n_samples: int = 1, generator: torch.Generator | None = None):
    """Per-example (log p(x|z) averaged over n_samples draws z ~ q(z|x), closed-form KL).

    Returns (log_px_given_z, kl), both of shape (N,); ELBO = log_px_given_z - kl.
    """
    mu, logvar = model.encode(x)
    eps = torch.randn((n_samples, *mu.shape), device=mu.device, dtype=mu.dtype, generator=generator)
    z = reparameterize(mu, logvar, eps)  # (S, N, d)
    log_px_given_z = bernoulli_log_likelihood(model.decode(z), x).mean(0)
    return log_px_given_z, kl_standard_normal(mu, logvar)
