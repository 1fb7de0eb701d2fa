"""The calibrated Gaussian decoder (model.gaussian_sigma: optimal, Rybkin et al. 2021): sigma^2 is
the mean squared error of the reconstructions, the maximiser of the Gaussian likelihood for fixed
means; trained, it reaches the data's noise level where a learned sigma is still far off."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from vaebic.data import synthetic_intensities
from vaebic.evaluation import log_likelihood_estimate
from vaebic.model import VAE, VAEConfig, batch_log_sigma, count_params, load_model, save_model
from vaebic.objectives import gaussian_log_likelihood
from vaebic.training import train_vae


def test_the_closed_form_sigma_maximises_the_gaussian_likelihood_for_fixed_means():
    gen = torch.Generator().manual_seed(0)
    decoded = torch.randn(3, 50, 30, generator=gen, dtype=torch.float64)  # 3 samples of z, 50 examples, 30 pixels
    x = torch.rand(50, 30, generator=gen, dtype=torch.float64)

    def neg(log_sigma):
        return -float(gaussian_log_likelihood(decoded, x, torch.tensor(log_sigma, dtype=torch.float64)).sum())

    numeric = minimize_scalar(neg, bounds=(-8, 3), method="bounded", options={"xatol": 1e-9}).x
    assert float(batch_log_sigma(decoded, x)) == pytest.approx(numeric, abs=1e-6)


def test_detaching_sigma_leaves_the_gradient_of_the_profile_likelihood():
    # at sigma's maximum the likelihood's derivative in sigma is zero, so the gradient in the means is
    # the same whether sigma is held fixed (as training does) or moves with them
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(40, 25, generator=gen, dtype=torch.float64)
    decoded = torch.randn(40, 25, generator=gen, dtype=torch.float64, requires_grad=True)
    fixed = torch.autograd.grad(gaussian_log_likelihood(decoded, x, batch_log_sigma(decoded, x)).sum(), decoded)[0]
    mse = (x - torch.sigmoid(decoded)).pow(2).mean()
    profile = torch.autograd.grad(gaussian_log_likelihood(decoded, x, 0.5 * torch.log(mse)).sum(), decoded)[0]
    torch.testing.assert_close(fixed, profile, rtol=1e-9, atol=1e-12)


def test_sigma_counts_once_in_k_unless_fixed():
    base = count_params(VAE(VAEConfig(64, 3, hidden_sizes=[16], likelihood="bernoulli")))
    assert count_params(VAE(VAEConfig(64, 3, hidden_sizes=[16], likelihood="gaussian", gaussian_sigma="optimal"))) == base + 1
    assert count_params(VAE(VAEConfig(64, 3, hidden_sizes=[16], likelihood="gaussian", gaussian_sigma="learned"))) == base + 1
    assert count_params(VAE(VAEConfig(64, 3, hidden_sizes=[16], likelihood="gaussian", gaussian_sigma=0.1))) == base


def test_training_ends_with_sigma_of_the_whole_split_stored_with_the_model(tmp_path):
    x = torch.rand(300, 20)
    torch.manual_seed(0)
    model = VAE(VAEConfig(20, 2, hidden_sizes=[16], likelihood="gaussian", gaussian_sigma="optimal"))
    history = train_vae(model, x, epochs=2, batch_size=64, lr=1e-3, seed=0)
    sigma = model.sigma()
    # the stored sigma is the root mean squared error of reconstructions from one z ~ q(z|x) per example
    assert history[-1]["sigma"] == sigma and 0.05 < sigma < 0.6
    with torch.no_grad():
        mu, logvar = model.encode(x)
        errors = [
            float((x - torch.sigmoid(model.decode(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)))).pow(2).mean()) for _ in range(20)
        ]
    assert sigma == pytest.approx(math.sqrt(np.mean(errors)), rel=0.05)
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.sigma() == pytest.approx(sigma) and not loaded.training
    # evaluation uses the stored sigma, not the batch's
    decoded = loaded.decode(loaded.encode(x[:5])[0])
    assert torch.allclose(loaded.log_likelihood(decoded, x[:5]), gaussian_log_likelihood(decoded, x[:5], torch.tensor(math.log(sigma))))


@pytest.mark.slow
def test_calibrated_sigma_finds_the_noise_level_where_learned_sigma_crawls():
    # 5,000 16x16 grey images from a 3-dimensional latent space with pixel noise 0.03 (the case)
    noise = 0.03
    means, _ = synthetic_intensities(true_dim=3, n=5000, image_size=16, seed=0)
    x = torch.from_numpy(means + np.random.default_rng(1).normal(0, noise, means.shape).astype(np.float32))
    reference = -x.shape[1] / 2 * (math.log(2 * math.pi * noise**2) + 1)  # E log p(x | true z) of the generator: +534 nats
    result = {}
    for rule in ("optimal", "learned"):
        torch.manual_seed(0)
        model = VAE(VAEConfig(x.shape[1], 3, hidden_sizes=[400], image_shape=[1, 16, 16], likelihood="gaussian", gaussian_sigma=rule))
        train_vae(model, x, epochs=30, batch_size=128, lr=1e-3, seed=0)
        est = log_likelihood_estimate(model, x[:500], k_samples=100, batch_size=500, max_chunk_mb=2, seed=0)
        result[rule] = (model.sigma(), est["iwae_nats"])
    (s_opt, ll_opt), (s_learned, ll_learned) = result["optimal"], result["learned"]
    # measured: optimal sigma 0.040 and +450 nats; learned sigma 0.30 and +62 nats
    assert s_opt < 1.5 * noise and s_learned > 5 * noise, result
    assert ll_opt > 0.8 * reference and ll_opt > ll_learned + 200, result
