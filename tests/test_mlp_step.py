"""The written-out training step (vaebic.fit.mlp_step) against autograd: the same loss terms and the
same gradient in every parameter, in float64, for every likelihood and several depths."""

import pytest
import torch

from vaebic.fit.mlp_step import MLPStep, supports
from vaebic.fit.training import train_vae
from vaebic.model.objectives import elbo_terms
from vaebic.model.vae import VAE, VAEConfig

CASES = [("bernoulli", "learned"), ("gaussian", "learned"), ("gaussian", "optimal"), ("gaussian", 0.3), ("continuous_bernoulli", "learned")]


def data(likelihood: str, n: int, dim: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, dim, generator=gen, dtype=torch.float64)
    return (x < 0.3).double() if likelihood == "bernoulli" else x


@pytest.mark.parametrize("likelihood,sigma", CASES)
@pytest.mark.parametrize("hidden", [[], [7], [9, 5]])
def test_gradients_equal_autograds_in_float64(likelihood, sigma, hidden):
    torch.manual_seed(0)
    model = VAE(VAEConfig(12, 3, hidden_sizes=hidden, likelihood=likelihood, gaussian_sigma=sigma)).double()
    with torch.no_grad():  # logits of both signs and several sizes, not just the small ones of a fresh model
        for p in model.parameters():
            p.mul_(3.0)
    x = data(likelihood, 10, 12)
    eps = torch.randn(1, 10, 3, dtype=torch.float64)

    log_px, kl = elbo_terms(model, x, eps=eps)
    loss = (kl.sum() - log_px.sum()) / len(x)
    model.zero_grad()
    loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    expected_sums = torch.stack((log_px.sum(), kl.sum())).detach()

    sums = MLPStep(model)(x, eps)
    torch.testing.assert_close(sums, expected_sums, rtol=1e-12, atol=1e-12)
    assert set(expected) == {name for name, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        assert p.grad.abs().max() > 0, name  # every parameter gets a gradient
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-10, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}")


def test_grads_are_overwritten_every_step_not_accumulated():
    torch.manual_seed(0)
    model = VAE(VAEConfig(12, 3, hidden_sizes=[7])).double()
    x, eps = data("bernoulli", 10, 12), torch.randn(1, 10, 3, dtype=torch.float64)
    step = MLPStep(model)
    step(x, eps)
    first = [p.grad.clone() for p in model.parameters()]
    step(x, eps)
    for a, p in zip(first, model.parameters()):
        torch.testing.assert_close(p.grad, a, rtol=0, atol=0)


def test_applies_to_mlps_in_float32_and_bfloat16_not_compiled():
    mlp, conv = VAE(VAEConfig(64, 2, hidden_sizes=[8])), VAE(VAEConfig(64, 2, hidden_sizes=[8], image_shape=[1, 8, 8], architecture="conv"))
    assert supports(mlp, "float32", False)
    assert supports(mlp, "bfloat16", False)  # bf16 keeps the written-out step (autograd dispatches ~8x the operations)
    assert not supports(mlp, "float32", True)
    assert not supports(conv, "float32", False)


@pytest.mark.parametrize("likelihood,sigma", CASES)
def test_bf16_step_matches_autograd_under_bf16_autocast(likelihood, sigma):
    """bf16 matrix multiplies, float32 likelihood and KL, float32 gradients in .grad: the same as
    autograd under bf16 autocast, to bf16 rounding (8 bits of mantissa: about 1%)."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(40, 3, hidden_sizes=[32], likelihood=likelihood, gaussian_sigma=sigma))
    x, eps = data(likelihood, 64, 40).float(), torch.randn(1, 64, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_px, kl = elbo_terms(model, x, eps=eps)
    model.zero_grad()
    ((kl.sum() - log_px.sum()) / len(x)).backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    sums = MLPStep(model, "bfloat16")(x, eps)
    torch.testing.assert_close(sums, torch.stack((log_px.sum(), kl.sum())).detach(), rtol=2e-3, atol=1e-2)
    for name, p in model.named_parameters():
        assert p.grad.dtype == torch.float32, name
        scale = expected[name].abs().max().item()
        torch.testing.assert_close(p.grad, expected[name], rtol=0, atol=0.03 * scale + 1e-6, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_training_follows_the_autograd_path(likelihood):
    """A few epochs through train_vae agree with the autograd path to float32 rounding."""
    x = data(likelihood, 200, 20).float()
    runs = []
    for autograd in (False, True):
        torch.manual_seed(0)
        model = VAE(VAEConfig(20, 3, hidden_sizes=[16], likelihood=likelihood))
        history = train_vae(model, x, epochs=3, batch_size=32, lr=1e-3, seed=0, autograd=autograd).history
        runs.append((history, model.state_dict()))
    (h_fast, w_fast), (h_auto, w_auto) = runs
    for a, b in zip(h_fast, h_auto):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["kl"] == pytest.approx(b["kl"], rel=1e-4, abs=1e-5)
    for name in w_auto:
        torch.testing.assert_close(w_fast[name], w_auto[name], rtol=1e-4, atol=1e-5)
