"""The private torch ops (vaebic.fit.torch_fast) against their public fallbacks: Adam, the ReLU's
backward in the written-out step, training and resuming from a checkpoint, with the fallback
forced by VAEBIC_TORCH_FALLBACK and with the private ops gone, as after a torch upgrade."""

import logging

import pytest
import torch

from vaebic.fit import torch_fast
from vaebic.fit.mlp_step import MLPStep
from vaebic.fit.training import Adam, train_vae
from vaebic.model.vae import VAE, VAEConfig

PRIVATE_OPS = ["torch._fused_adam_", "torch.ops.aten.threshold_backward"]


@pytest.fixture
def fallback(monkeypatch):
    monkeypatch.setenv(torch_fast.FALLBACK_ENV, "1")


@pytest.fixture
def without_private_ops(monkeypatch):
    """torch as a release without the private ops might be: the capability checks see them fail
    (and torch.optim.Adam(fused=True), which calls the same kernel)."""

    def gone(*args, **kwargs):
        raise AttributeError("no such op")

    monkeypatch.delenv(torch_fast.FALLBACK_ENV, raising=False)  # the checks run only where nothing is forced
    monkeypatch.delattr(torch, "_fused_adam_")
    monkeypatch.setattr(torch.ops.aten, "threshold_backward", gone)
    checks = (torch_fast.private_op_works, torch_fast.public_fused_adam_works)
    for check in checks:
        check.cache_clear()
    yield
    for check in checks:
        check.cache_clear()


def binary(n=200, dim=20):
    return (torch.rand(n, dim, generator=torch.Generator().manual_seed(0)) < 0.3).float()


def train(epochs=3, **kw):
    torch.manual_seed(0)
    model = VAE(VAEConfig(20, 3, hidden_sizes=[16, 8]))
    saved = []
    history = train_vae(model, binary(), epochs=epochs, batch_size=32, lr=3e-3, seed=1, checkpoint=saved.append, **kw).history
    return history, model.state_dict(), saved


def adam_steps(steps=5) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = VAE(VAEConfig(20, 3, hidden_sizes=[8]))
    opt = Adam(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return [p.detach().clone() for p in model.parameters()] + opt.state()["exp_avg"] + opt.state()["exp_avg_sq"] + opt.state()["steps"]


@pytest.mark.parametrize("name", PRIVATE_OPS)
def test_the_private_ops_pass_their_check_so_the_default_is_the_fast_path(name, monkeypatch):
    monkeypatch.delenv(torch_fast.FALLBACK_ENV, raising=False)
    assert torch_fast.private_op_works(name, "cpu"), f"{name} fails on torch {torch.__version__}: vaebic.fit.torch_fast needs updating"
    assert torch_fast.use_private(name, "cpu")


@pytest.mark.parametrize("value,forced", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_the_environment_forces_the_fallback(value, forced, monkeypatch):
    monkeypatch.setenv(torch_fast.FALLBACK_ENV, value)
    assert torch_fast.fallback_forced() is forced
    assert all(torch_fast.use_private(name, "cpu") is not forced for name in PRIVATE_OPS)


@pytest.mark.parametrize("public_fused", [True, False])
def test_adam_fallback_follows_the_fused_kernel(public_fused, monkeypatch):
    fast = adam_steps()
    monkeypatch.setenv(torch_fast.FALLBACK_ENV, "1")
    monkeypatch.setattr(torch_fast, "public_fused_adam_works", lambda device_type: public_fused)
    slow = adam_steps()
    for a, b in zip(fast, slow):
        if public_fused:  # torch.optim.Adam(fused=True) runs the same kernel
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9)


def test_relu_backward_fallback_gives_the_same_numbers(fallback):
    a = torch.tensor([[1.0, 0.0, -0.0, -2.0, float("nan"), 1e-30]])
    g = torch.tensor([[3.0, 4.0, 5.0, 6.0, 7.0, -0.0]])
    expected = torch.ops.aten.threshold_backward(g, a, 0)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        got = torch_fast.relu_backward("cpu")(g.to(dtype), a.to(dtype))
        assert torch.equal(got.float(), expected) and torch.equal(got.float().signbit(), expected.signbit())


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_written_out_step_on_the_fallback_leaves_the_same_gradients(likelihood, precision, monkeypatch):
    torch.manual_seed(0)
    model = VAE(VAEConfig(20, 3, hidden_sizes=[16, 8], likelihood=likelihood))
    x, eps = binary(64), torch.randn(1, 64, 3)
    grads = []
    for forced in ("0", "1"):
        monkeypatch.setenv(torch_fast.FALLBACK_ENV, forced)
        sums = MLPStep(model, precision)(x, eps)
        grads.append([sums] + [p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def default_run():
    return train()


def test_training_and_resuming_on_the_fallback(default_run, fallback):
    """On a CPU the fallback trains to the same weights, bit for bit; a checkpoint from either
    path resumes on the other, and on the fallback itself exactly."""
    h_fast, w_fast, saved_fast = default_run
    h_slow, w_slow, saved_slow = train()
    assert h_slow == h_fast
    assert all(torch.equal(w_slow[k], w_fast[k]) for k in w_fast)
    for state in (saved_slow[0], saved_fast[1]):
        h, w, _ = train(resume=state)
        assert h == h_slow
        assert all(torch.equal(w[k], w_slow[k]) for k in w_slow)


def test_without_the_private_ops_training_falls_back_once_with_a_warning(default_run, without_private_ops, caplog):
    h_fast, w_fast, saved = default_run
    with caplog.at_level(logging.WARNING, logger="vaebic.torch_fast"):
        assert not any(torch_fast.use_private(name, "cpu") for name in PRIVATE_OPS)
        h, w, _ = train(resume=saved[0])
        assert not any(torch_fast.use_private(name, "cpu") for name in PRIVATE_OPS)
    assert [r.getMessage().split(" ")[0] for r in caplog.records] == PRIVATE_OPS  # once each
    # torch.optim.Adam's plain implementation: the same update, rounded differently
    for a, b in zip(h, h_fast):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    for k in w_fast:
        torch.testing.assert_close(w[k], w_fast[k], rtol=1e-5, atol=1e-6)
