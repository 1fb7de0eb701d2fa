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
#: the calibrated sigma's floor: a perfect reconstruction would otherwise give log sigma = -inf
MIN_SIGMA = 1e-4


def softplus_sum(t: torch.Tensor) -> torch.Tensor:
    """sum_i log(1 + e^t_i) over the last dimension, stable for any t:
    sum_i max(t_i, 0) - log prod_i sigmoid(|t_i|).

    This is the elementwise cost of every Bernoulli log-likelihood (K x 784 terms per example in
    the importance-weighted estimate), so on the CPU it is written for speed:
    - log(1 + e^-|t|) = -log sigmoid(|t|), and torch's vectorised sigmoid is one pass, faster
      than exp and an add; torch's softplus uses log1p, which is not vectorised on the CPU (several
      times slower; benchmarks/README.md);
    - one log per group of up to 64 pixels: each factor lies in [1/2, 1], so a product of 64 stays
      above 2^-64, far inside float32's range, and the rounding error of the products (at most 64
      float32 ulps per group) is the same size as that of one log per pixel;
    - |t| not capped: sigmoid(|t|) rounds to 1 in float32 from |t| of about 17 on, whatever
      e^-|t| is. Beyond |t| = 87 that e^-|t| is subnormal, the x86 CPU's slow path (an order of
      magnitude slower), unless subnormals are flushed to zero, as the stage processes do in every
      thread (vaebic.device.flush_subnormals_everywhere). The cap at 80 this replaces cost a pass
      of its own, about 13% of the likelihood, and changed no value.
    Elsewhere (CUDA) torch's fused softplus kernel is used.
    """
    if t.device.type != "cpu":
        return F.softplus(t).sum(-1)
    return t.clamp_min(0).sum(-1) - _log_sigmoid_sum_(t.abs())


def _log_sigmoid_sum_(a: torch.Tensor) -> torch.Tensor:
    """sum_i log sigmoid(a_i) over the last dimension for a >= 0, overwriting a (the CPU form of
    `softplus_sum`: one sigmoid pass, one log per group of up to 64 factors)."""
    d = a.shape[-1]
    group = max(g for g in range(1, 65) if d % g == 0)
    sig = a.sigmoid_()  # sigmoid(|t|) = 1 / (1 + e^-|t|), in [1/2, 1]
    return sig.view(*a.shape[:-1], d // group, group).prod(-1).log_().sum(-1)


def stable_sigmoid(t: torch.Tensor) -> torch.Tensor:
    """sigmoid(t); on the CPU with t capped at +-80 first (no value changes by more than e^-80), so
    that the exp inside never returns a subnormal number, the CPU's slow path."""
    return torch.sigmoid(t.clamp(-80.0, 80.0) if t.device.type == "cpu" else t)


class _BernoulliLogLikelihood(torch.autograd.Function):
    """sum_i [x_i l_i - softplus(l_i)] with its gradient written out: d/dl = x - sigmoid(l).

    Autograd through the elementwise passes of `softplus_sum` would store and replay each of
    them; the closed-form gradient is one pass. x broadcasts against the logits (leading sample
    dimensions)."""

    @staticmethod
    def forward(ctx, logits, x):
        ctx.save_for_backward(logits, x)
        return (logits * x).sum(-1) - softplus_sum(logits)

    @staticmethod
    def backward(ctx, grad):
        logits, x = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        grad_logits = (x - stable_sigmoid(logits)).mul_(grad) if ctx.needs_input_grad[0] else None
        grad_x = (logits * grad).sum_to_size(x.shape) if ctx.needs_input_grad[1] else None
        return grad_logits, grad_x


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) for x in {0, 1}^D under independent Bernoulli(sigmoid(logits)) pixels.

    Equals minus the binary cross-entropy summed over pixels, computed from logits as
    sum_i [x_i l_i - log(1 + e^l_i)], which is stable where sigmoid saturates. Leading dimensions
    are kept (x broadcasts over leading sample dimensions of the logits), the pixel dimension summed.
    For x in [0, 1] it is the unnormalised "Bernoulli form" the continuous Bernoulli builds on.
    """
    return _BernoulliLogLikelihood.apply(logits, x)


def binary_signs(x: torch.Tensor) -> torch.Tensor | None:
    """2x - 1 (+1 where a pixel is 1, -1 where it is 0), in float32 or wider, when every pixel of x
    is 0 or 1; None otherwise (grey levels). For `binary_log_likelihood`."""
    if not bool(((x == 0) | (x == 1)).all()):
        return None
    return 2 * x.to(torch.promote_types(x.dtype, torch.float32)) - 1


def binary_log_likelihood(logits: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """log p(x|z) for binary x given as signs = binary_signs(x): the Bernoulli log-likelihood of
    `bernoulli_log_likelihood`, in the form the importance-weighted estimate scores fastest (no
    gradient; leading sample dimensions of the logits broadcast against signs).

    For x in {0, 1}, x l - softplus(l) = log sigmoid(t) with t = (2x - 1) l, and
    log sigmoid(t) = min(t, 0) + log sigmoid(|t|): the x-dependent product and the softplus's
    max(l, 0) become one sign flip. bf16 logits (the decoder under autocast) are read as they are:
    the flip writes them in float32, with no separate conversion pass.
    """
    dtype = torch.promote_types(logits.dtype, signs.dtype)
    t = logits.to(dtype).mul_(signs) if logits.dtype != dtype else logits * signs
    if t.device.type != "cpu":
        return F.logsigmoid(t).sum(-1)
    return t.clamp_max(0).sum(-1) + _log_sigmoid_sum_(t.abs_())


def gaussian_log_likelihood(mean_logits: torch.Tensor, x: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """log N(x; sigmoid(mean_logits), sigma^2 I), constants included, summed over pixels.

    = -1/2 sum_i [(x_i - mu_i)^2 / sigma^2 + log(2 pi) + 2 log sigma]; a true log-density in nats.
    """
    mu = torch.sigmoid(mean_logits)
    return -0.5 * (((x - mu) * torch.exp(-log_sigma)).pow(2) + LOG_2PI + 2 * log_sigma).sum(-1)


def batch_log_sigma(decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log of the Gaussian sigma that maximises the likelihood of x given the means sigmoid(decoded):
    sigma^2 = the mean squared error over every pixel (and sample), floored at MIN_SIGMA. Detached:
    at the maximum, the likelihood's derivative in sigma is zero, so the gradient in the means is
    the same with or without sigma's dependence on them."""
    mse = (x - torch.sigmoid(decoded.detach())).pow(2).mean()
    return 0.5 * torch.log(mse.clamp_min(MIN_SIGMA**2))


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
    return bernoulli_log_likelihood(logits, x) + _continuous_bernoulli_log_norm(logits).sum(-1)


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


def elbo_terms(model, x: torch.Tensor, n_samples: int = 1, generator: torch.Generator | None = None, eps: torch.Tensor | None = None):
    """Per-example (log p(x|z) averaged over n_samples draws z ~ q(z|x), closed-form KL).

    Returns (log_px_given_z, kl), both of shape (N,); ELBO = log_px_given_z - kl. The standard
    normal draws eps, shape (n_samples, N, d), may be given (a compiled step draws them outside).
    """
    if eps is None:
        eps = torch.randn((n_samples, len(x), model.latent_dim), device=x.device, generator=generator)
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar, eps)  # (S, N, d)
    log_px_given_z = model.log_likelihood(model.decode(z), x).mean(0)
    return log_px_given_z, kl_standard_normal(mu, logvar)


@dataclass
class IWAEResult:
    """Per-example importance-weighted estimates of log p(x) and their Monte-Carlo standard errors."""

    log_px: torch.Tensor  # (N,) nats
    std_err: torch.Tensor  # (N,) nats, delta-method Monte-Carlo standard error of each estimate

    def sum_std_err(self) -> float:
        """Monte-Carlo standard error of the sum over examples (the draws are independent across
        examples), in float64 on the host."""
        se = self.std_err.detach().to("cpu").numpy().astype("float64")
        return float((se**2).sum() ** 0.5)

    def mean_std_err(self) -> float:
        """Monte-Carlo standard error of the mean over examples."""
        return self.sum_std_err() / len(self.std_err)


@torch.no_grad()
def iwae_log_likelihood(
    model, x: torch.Tensor, k_samples: int, generator: torch.Generator | None = None, batch_size: int = 100, max_chunk_elements: int = 2**24
) -> IWAEResult:
    """Importance-weighted estimate of log p(x) (Burda, Grosse & Salakhutdinov 2015, eq. 8):

        log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K,   z_k ~ q(z|x).

    Its expectation is a lower bound on log p(x) that rises with K towards log p(x); K = 1 gives
    the ELBO. With z = mu + sigma * eps, log p(z) - log q(z|x) = 1/2 sum_j (eps_j^2 - z_j^2 + logvar_j):
    the log(2 pi) terms cancel. The decoder runs on blocks of (samples x examples) rows holding at
    most max_chunk_elements outputs, so memory stays bounded and nothing loops over single
    examples; the K log-weights of a group of examples (K x group, in the encoder's output dtype:
    float32, or float64 for a float64 model; never float64 otherwise, which MPS lacks) meet in one
    logsumexp. A batch is cut into equal groups (for example 1000 examples in blocks of at most
    668 rows: two of 500, not 668 and 332, whose per-block overhead is the same). All K draws of a batch are
    made up front: the block size changes no draw, only the matrix multiply's float rounding.

    Standard error per example (delta method): Var[log mean w] ~= Var[w] / (K mean(w)^2)
    = (sum_k p_k^2 - 1/K) with p_k = w_k / sum_j w_j, i.e. 1/ESS - 1/K, computed in log space.
    """
    model.eval()
    n, d = len(x), model.latent_dim
    rows = max(1, max_chunk_elements // x[0].numel())  # (sample, example) pairs per block
    log_px = torch.empty(n, device=x.device)
    std_err = torch.empty(n, device=x.device)
    for start in range(0, n, batch_size):
        xb = x[start : start + batch_size]
        mu, logvar = model.encode(xb)
        eps = torch.randn((k_samples, len(xb), d), device=x.device, dtype=mu.dtype, generator=generator)
        log_ratio_part = 0.5 * (eps.pow(2).sum(-1) + logvar.sum(-1))  # (K, b): all of log p(z) - log q(z|x) but -z^2/2
        n_groups = math.ceil(len(xb) / rows)
        group = math.ceil(len(xb) / n_groups)  # examples per block: as many as fit, in equal groups
        chunk = max(1, min(k_samples, rows // group))  # samples per block
        for e0 in range(0, len(xb), group):
            e = slice(e0, e0 + group)
            log_w = torch.empty((k_samples, len(xb[e])), device=x.device, dtype=mu.dtype)
            # what depends on x alone, once for all K samples
            log_px_given, sigma = model.log_likelihood_for(xb[e]), torch.exp(0.5 * logvar[e])
            # the group's K samples z = mu + sigma * eps (reparameterize's z, sigma computed once), in
            # eps's own memory: eps is not needed again; one operation each, not one per block
            z = eps[:, e].mul_(sigma).add_(mu[e])  # (K, group, d)
            for k0 in range(0, k_samples, chunk):
                k = slice(k0, k0 + chunk)
                log_w[k] = log_px_given(model.decode(z[k]))
            log_w.add_(log_ratio_part[:, e]).sub_(0.5 * z.pow_(2).sum(-1))  # z squared in place: no longer needed
            lse1, lse2 = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
            out = slice(start + e0, start + e0 + len(log_w[0]))
            log_px[out] = (lse1 - math.log(k_samples)).to(log_px.dtype)
            std_err[out] = (torch.exp(lse2 - 2 * lse1) - 1.0 / k_samples).clamp_min(0.0).sqrt().to(std_err.dtype)
    return IWAEResult(log_px, std_err)
