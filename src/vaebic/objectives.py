"""Log-likelihoods, the KL term and the ELBO, per example, in nats.

Conventions: every function returns one value per example (shape ``(N,)``); "log" is natural,
so every number is in nats. The ELBO is a lower bound on log p(x):

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))  <=  log p(x)

(Kingma & Welling 2014, "Auto-Encoding Variational Bayes", eq. 3.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) for x in {0, 1}^D under independent Bernoulli(sigmoid(logits)) pixels.

    Equals minus the binary cross-entropy summed over pixels; computed from logits, which is
    stable where sigmoid saturates. Leading dimensions are kept, the pixel dimension summed.
    """
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def gaussian_log_likelihood(mean_logits: torch.Tensor, x: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """log N(x; sigmoid(mean_logits), sigma^2 I), constants included, summed over pixels.

    = -1/2 sum_i [(x_i - mu_i)^2 / sigma^2 + log(2 pi) + 2 log sigma]; a true log-density in nats.
    """
    mu = torch.sigmoid(mean_logits)
    return -0.5 * (((x - mu) * torch.exp(-log_sigma)).pow(2) + LOG_2PI + 2 * log_sigma).sum(-1)


def _continuous_bernoulli_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda), C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda), lambda = sigmoid(logits)
    (Loaiza-Ganem & Cunningham 2019, eq. 7). Near lambda = 1/2 the closed form is 0/0: there a
    Taylor expansion, log 2 + (4/3) t^2 + (104/45) t^4 with t = lambda - 1/2, as in torch."""
    lam = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
    t = lam - 0.5
    near = t.abs() < 1e-2
    safe = torch.where(near, torch.full_like(lam, 0.25), lam)  # keep the closed form away from 0/0
    closed = torch.log(2 * torch.atanh(1 - 2 * safe).abs()) - torch.log((1 - 2 * safe).abs())
    taylor = math.log(2.0) + (4.0 / 3.0) * t.pow(2) + (104.0 / 45.0) * t.pow(4)
    return torch.where(near, taylor, closed)


def continuous_bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log CB(x; lambda) for grey levels x in [0, 1]: the Bernoulli form plus its normaliser log C(lambda),
    which makes it a density on [0, 1] (Loaiza-Ganem & Cunningham 2019). Summed over pixels."""
    x = x.expand_as(logits)
    return (-F.binary_cross_entropy_with_logits(logits, x, reduction="none") + _continuous_bernoulli_log_norm(logits)).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension."""
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)), closed form, summed over latent units.

    KL = 1/2 * sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)   (Kingma & Welling 2014, appendix B).
    """
    return kl_per_unit(mu, logvar).sum(-1)


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
    log_px_given_z = model.log_likelihood(model.decode(z), x).mean(0)
    return log_px_given_z, kl_standard_normal(mu, logvar)


@dataclass
class IWAEResult:
    """Per-example importance-weighted estimates of log p(x) and their Monte-Carlo standard errors."""

    log_px: torch.Tensor  # (N,) nats
    std_err: torch.Tensor  # (N,) nats, delta-method Monte-Carlo standard error of each estimate

    def sum_std_err(self) -> float:
        """Monte-Carlo standard error of the sum over examples (the draws are independent across examples)."""
        return self.std_err.double().pow(2).sum().sqrt().item()

    def mean_std_err(self) -> float:
        """Monte-Carlo standard error of the mean over examples."""
        return self.sum_std_err() / len(self.std_err)


@torch.no_grad()
def iwae_log_likelihood(model, x: torch.Tensor, k_samples: int, generator: torch.Generator | None = None,
                        batch_size: int = 100, max_chunk_elements: int = 2**24) -> IWAEResult:
    """Importance-weighted estimate of log p(x) (Burda, Grosse & Salakhutdinov 2015, eq. 8):

        log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K,   z_k ~ q(z|x).

    Its expectation is a lower bound on log p(x) that rises with K towards log p(x); K = 1 gives
    the ELBO. Work is done on (samples x examples x pixels) blocks of at most max_chunk_elements
    decoder outputs: examples in batches of batch_size, their K samples in chunks, combined with a
    running logsumexp, so memory stays bounded and nothing loops over single examples.

    Standard error per example (delta method): Var[log mean w] ~= Var[w] / (K mean(w)^2)
    = (sum_k p_k^2 - 1/K) with p_k = w_k / sum_j w_j, i.e. 1/ESS - 1/K, computed in log space.
    """
    model.eval()
    n, d = len(x), model.latent_dim
    out_dim = x[0].numel()
    log_px = torch.empty(n, device=x.device)
    std_err = torch.empty(n, device=x.device)
    for start in range(0, n, batch_size):
        xb = x[start:start + batch_size]
        b = len(xb)
        mu, logvar = model.encode(xb)
        eps = torch.randn((k_samples, b, d), device=x.device, dtype=mu.dtype, generator=generator)
        chunk = max(1, min(k_samples, max_chunk_elements // max(1, b * out_dim)))
        lse1 = torch.full((b,), -math.inf, device=x.device, dtype=torch.float64)  # logsumexp of log w
        lse2 = torch.full((b,), -math.inf, device=x.device, dtype=torch.float64)  # logsumexp of 2 log w
        for k0 in range(0, k_samples, chunk):
            z = reparameterize(mu, logvar, eps[k0:k0 + chunk])  # (S, b, d)
            log_w = model.log_likelihood(model.decode(z), xb) + log_standard_normal(z) - log_normal_diag(z, mu, logvar)
            log_w = log_w.double()
            lse1 = torch.logaddexp(lse1, torch.logsumexp(log_w, 0))
            lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * log_w, 0))
        log_px[start:start + b] = (lse1 - math.log(k_samples)).to(log_px.dtype)
        rel_var = (torch.exp(lse2 - 2 * lse1) - 1.0 / k_samples).clamp_min(0.0)
        std_err[start:start + b] = rel_var.sqrt().to(std_err.dtype)
    return IWAEResult(log_px, std_err)
