"""The arithmetic that decides results: KL, reparameterisation, Bernoulli log-likelihood, ELBO."""

import math

import pytest
import torch

from vaebic.model.objectives import (
    bernoulli_log_likelihood,
    elbo_terms,
    kl_per_unit,
    kl_standard_normal,
    reparameterize,
)
from vaebic.model.vae import VAE, VAEConfig, count_params


def test_closed_form_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, generator=g, dtype=torch.float64)
    logvar = torch.randn(3, 4, generator=g, dtype=torch.float64) * 0.5
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean(0)
    closed = kl_standard_normal(mu, logvar)
    # Monte-Carlo standard error is about 0.01 nats here; allow 5 of them.
    assert torch.allclose(closed, mc, atol=0.05)
    # and against torch's own closed form
    ref = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(closed, ref, atol=1e-12)
    assert torch.allclose(kl_per_unit(mu, logvar).sum(-1), closed)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    assert kl_standard_normal(torch.zeros(2, 5), torch.zeros(2, 5)).abs().max() == 0
    assert (kl_standard_normal(torch.full((2, 5), 0.1), torch.zeros(2, 5)) > 0).all()


def test_reparameterisation_carries_gradients_to_mu_and_sigma():
    mu = torch.tensor([0.5, -1.0], requires_grad=True)
    logvar = torch.tensor([0.2, -0.3], requires_grad=True)
    eps = torch.tensor([1.5, -0.7])
    z = reparameterize(mu, logvar, eps)
    assert torch.allclose(z, mu + (0.5 * logvar).exp() * eps)
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones(2))
    # dz/dlogvar = 0.5 * sigma * eps
    assert torch.allclose(logvar.grad, 0.5 * (0.5 * logvar.detach()).exp() * eps)


def test_reparameterised_samples_have_the_right_moments():
    mu, logvar = torch.tensor([2.0]), torch.tensor([math.log(0.25)])
    z = reparameterize(mu.expand(100_000, 1), logvar.expand(100_000, 1))
    assert z.mean().item() == pytest.approx(2.0, abs=0.01)
    assert z.std().item() == pytest.approx(0.5, abs=0.01)


def test_bce_sum_equals_bernoulli_log_likelihood_on_binary_data():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 784, generator=g, dtype=torch.float64) * 3
    x = torch.bernoulli(torch.full((6, 784), 0.3, dtype=torch.float64), generator=g)
    ours = bernoulli_log_likelihood(logits, x)
    ref = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
    bce = torch.stack([torch.nn.functional.binary_cross_entropy(torch.sigmoid(l), xi, reduction="sum") for l, xi in zip(logits, x)])
    assert torch.allclose(ours, ref)
    assert torch.allclose(-ours, bce, rtol=1e-6)
    # stable where the sigmoid saturates
    big = bernoulli_log_likelihood(torch.tensor([[200.0, -200.0]]), torch.tensor([[1.0, 0.0]]))
    assert torch.isfinite(big).all() and big.item() == pytest.approx(0.0, abs=1e-6)


def test_elbo_is_below_log_evidence_on_an_exact_model():
    # A 1-d latent with a decoder that ignores z: p(x|z) = p(x) exactly, so log p(x) is known and
    # ELBO = log p(x) - KL <= log p(x), with equality when q is the prior.
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=3, latent_dim=1, hidden_sizes=[4]))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.decoder[-1].bias.copy_(torch.tensor([0.3, -1.0, 2.0]))
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    log_px = torch.distributions.Bernoulli(logits=torch.tensor([0.3, -1.0, 2.0])).log_prob(x).sum(-1)
    rec, kl = elbo_terms(model, x, n_samples=5)
    assert torch.allclose(kl, torch.zeros(2))  # encoder outputs mu = 0, logvar = 0: q is the prior
    assert torch.allclose(rec - kl, log_px, atol=1e-6)
    with torch.no_grad():
        model.encoder[-1].bias.copy_(torch.tensor([1.0, 0.5]))  # q moves away from the prior
    rec, kl = elbo_terms(model, x, n_samples=5)
    assert (kl > 0).all() and (rec - kl < log_px).all()


def test_parameter_count_matches_numel():
    model = VAE(VAEConfig(input_dim=784, latent_dim=8, hidden_sizes=[400, 200]))
    dec = sum(p.numel() for p in model.decoder.parameters())
    enc = sum(p.numel() for p in model.encoder.parameters())
    assert count_params(model, "decoder") == dec
    assert count_params(model, "all") == dec + enc == sum(p.numel() for p in model.parameters())
    # by hand: decoder 8->200->400->784, encoder 784->400->200->16
    assert dec == (8 * 200 + 200) + (200 * 400 + 400) + (400 * 784 + 784)
    assert enc == (784 * 400 + 400) + (400 * 200 + 200) + (200 * 16 + 16)


def test_fast_softplus_sum_matches_the_exact_value_to_float_precision():
    from vaebic.model.objectives import softplus_sum

    g = torch.Generator().manual_seed(4)
    # rows of 784 logits: ordinary, saturated both ways, tiny, huge, and a length with no divisor <= 64 but 1
    for t in (
        torch.randn(50, 784, generator=g) * 8,
        torch.full((3, 784), 95.0),
        torch.full((3, 784), -95.0),
        torch.linspace(-1e4, 1e4, 784).reshape(1, 784),
        torch.linspace(-120, 120, 784).reshape(1, 784),  # e^-|t| subnormal beyond |t| = 87
        torch.randn(4, 67, generator=g),
        torch.zeros(2, 10),
    ):
        # not capped at |t| = 80 (a pass of its own until 2026-12): the same float32 values, bit for bit
        group = max(k for k in range(1, 65) if t.shape[-1] % k == 0)
        capped = t.clamp_min(0).sum(-1) - t.abs().clamp_max(80).sigmoid().view(len(t), -1, group).prod(-1).log().sum(-1)
        assert torch.equal(softplus_sum(t), capped)
        t64 = t.double()
        exact = (t64.clamp_min(0) + torch.log1p(torch.exp(-t64.abs()))).sum(-1)
        assert torch.isfinite(softplus_sum(t)).all()
        # float32: sums of up to 784 terms, each rounded once
        assert ((softplus_sum(t).double() - exact).abs() / exact.abs().clamp_min(1)).max() < 1e-5
        assert ((softplus_sum(t) - torch.nn.functional.softplus(t).sum(-1)).abs() / exact.float().abs().clamp_min(1)).max() < 1e-5
        assert torch.allclose(softplus_sum(t64), exact, rtol=1e-13, atol=1e-13)


def test_bernoulli_log_likelihood_float32_matches_a_float64_reference_with_leading_sample_dims():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 7, 784, generator=g) * 6  # (samples, examples, pixels)
    x = torch.bernoulli(torch.full((7, 784), 0.2), generator=g)
    ours = bernoulli_log_likelihood(logits, x)
    ref = torch.distributions.Bernoulli(logits=logits.double()).log_prob(x.double().expand(5, 7, 784)).sum(-1)
    assert ours.shape == (5, 7)
    assert (ours.double() - ref).abs().max() < 1e-3  # float32 sums of 784 terms of size ~10


def test_bernoulli_log_likelihood_gradients_are_exact():
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(3, 4, 6, generator=g, dtype=torch.float64) * 4).requires_grad_()
    x = torch.rand(4, 6, generator=g, dtype=torch.float64).requires_grad_()  # grey levels too (continuous Bernoulli)
    assert torch.autograd.gradcheck(bernoulli_log_likelihood, (logits, x))
    # and the same gradient as autograd through torch's own formula
    w = torch.randn(3, 4, generator=g, dtype=torch.float64)
    (bernoulli_log_likelihood(logits, x.detach()) * w).sum().backward()
    ours = logits.grad.clone()
    logits.grad = None
    ref = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x.detach().expand(3, 4, 6), reduction="none").sum(-1)
    (ref * w).sum().backward()
    assert torch.allclose(ours, logits.grad)


def test_binary_log_likelihood_equals_the_bernoulli_form_on_0_1_pixels():
    """sum_i log sigmoid((2 x_i - 1) l_i), the estimate's form for binary x, against torch's
    Bernoulli in float64: ordinary, saturated, huge and zero logits; leading sample dims; bf16
    logits read as they are (the decoder's output under bf16 autocast)."""
    from vaebic.model.objectives import binary_log_likelihood, binary_signs

    g = torch.Generator().manual_seed(5)
    x = torch.bernoulli(torch.full((7, 784), 0.2), generator=g)
    signs = binary_signs(x)
    assert signs is not None and signs.dtype == torch.float32 and set(signs.unique().tolist()) == {-1.0, 1.0}
    for logits in (
        torch.randn(5, 7, 784, generator=g) * 6,
        torch.full((2, 7, 784), 95.0),
        torch.full((2, 7, 784), -95.0),
        torch.linspace(-1e4, 1e4, 784).expand(1, 7, 784),
        torch.zeros(1, 7, 784),
    ):
        ref = torch.distributions.Bernoulli(logits=logits.double()).log_prob(x.double().expand_as(logits)).sum(-1)
        ours = binary_log_likelihood(logits, signs)
        assert ours.shape == logits.shape[:-1] and ours.dtype == torch.float32 and torch.isfinite(ours).all()
        assert ((ours.double() - ref).abs() / ref.abs().clamp_min(1)).max() < 1e-5  # float32 sums of 784 terms
        assert torch.allclose(ours, bernoulli_log_likelihood(logits, x), rtol=1e-5, atol=1e-3)
        # bf16 logits: the same as the float32 copy of them (the conversion is exact)
        b = logits.bfloat16()
        assert torch.equal(binary_log_likelihood(b, signs), binary_log_likelihood(b.float(), signs))
    assert torch.equal(logits, torch.zeros(1, 7, 784))  # the input is left as it was
    # float64 throughout for a float64 model
    l64 = torch.randn(3, 7, 784, generator=g, dtype=torch.float64) * 6
    ref = torch.distributions.Bernoulli(logits=l64).log_prob(x.double().expand(3, 7, 784)).sum(-1)
    assert torch.allclose(binary_log_likelihood(l64, binary_signs(x.double())), ref, rtol=1e-12, atol=1e-10)


def test_grey_levels_have_no_binary_signs_and_keep_the_bernoulli_form():
    from vaebic.model.objectives import binary_signs
    from vaebic.model.vae import VAE, VAEConfig

    g = torch.Generator().manual_seed(6)
    grey = torch.rand(4, 20, generator=g)
    assert binary_signs(grey) is None
    assert binary_signs(torch.tensor([[0.0, 1.0, 0.5]])) is None
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=20, latent_dim=2, hidden_sizes=[8])).eval()
    decoded = torch.randn(3, 4, 20, generator=g)
    for x in (grey, torch.bernoulli(torch.full((4, 20), 0.5), generator=g)):
        # scoring many samples against one x gives log p(x|z) as the model defines it
        assert torch.allclose(model.log_likelihood_for(x)(decoded), model.log_likelihood(decoded, x), rtol=1e-6, atol=1e-5)
