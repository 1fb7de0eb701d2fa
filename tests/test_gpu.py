"""The GPU paths, CUDA and Apple MPS: `python -m pytest -m gpu` on a machine with either.

Each test runs on every accelerator present and skips cleanly where there is none (as on the
reference CI machine, where tests/test_device_rules.py checks the same rules on the CPU). What
they check, so that a first session with a GPU learns something real: the host synchronisations of
training are counted (not zero) and do not grow with steps; a whole train and evaluate stage runs
through `dvc repro` on the device; resuming from a checkpoint gives the uninterrupted weights bit
for bit, for an MLP and for a conv model (deterministic cuDNN); the written-out step matches
autograd, in float64 and in bf16; the estimate agrees with the CPU's within Monte-Carlo error;
compiling runs one graph, the short last batch eagerly; out-of-memory is one line.
"""

import json
import warnings

import pytest
import torch

from vaebic.fit.training import train_vae
from vaebic.model.evaluation import log_likelihood_estimate
from vaebic.model.vae import VAE, VAEConfig

ACCELERATORS = [
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
    pytest.param("mps", marks=pytest.mark.skipif(not torch.backends.mps.is_available(), reason="needs Apple MPS")),
]
pytestmark = pytest.mark.gpu
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(params=ACCELERATORS)
def device(request):
    return torch.device(request.param)


def binary_data(device, n=512, dim=64):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, dim, generator=g) < 0.3).float().to(device)


def trained(device, epochs=5, **kw):
    torch.manual_seed(0)
    model = VAE(VAEConfig(64, 4, hidden_sizes=[32], **kw)).to(device)
    x = binary_data(device)
    train_vae(model, x, epochs=epochs, batch_size=64, lr=1e-3, seed=0)
    return model, x


def count_cuda_syncs(batch_size: int, epochs: int = 2, **kw) -> int:
    x = binary_data("cuda")
    torch.manual_seed(0)
    model = VAE(VAEConfig(64, 4, hidden_sizes=[32])).cuda()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_vae(model, x, epochs=epochs, batch_size=batch_size, lr=1e-3, seed=0, **kw)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@cuda_only
@pytest.mark.parametrize("kw", [{}, {"precision": "bfloat16"}, {"autograd": True}], ids=["written-out", "bf16", "autograd"])
def test_training_synchronises_with_the_host_per_epoch_not_per_step(kw):
    few, many = count_cuda_syncs(batch_size=64, **kw), count_cuda_syncs(batch_size=16, **kw)  # 8 against 32 steps per epoch
    assert few > 0, "no synchronisation recorded at all: the sync debug mode did not work"
    assert few == many


def test_a_train_and_evaluate_stage_run_on_the_device(device, new_project, tmp_path):
    from pipeline_project import repro, tiny

    project = new_project(
        tmp_path,
        tiny(sweep={"latent_dims": [2]}, train={"device": device.type}, evaluate={"k_samples": 50}, report={"n_samples": 8, "dpi": 40}),
    )
    _, out, ran = repro(project)
    assert {"train@2-0", "evaluate@2-0", "report"} <= set(ran)
    assert f"on {device.type}" in out  # the stages say where they ran
    metrics = json.loads((project / "metrics/2-0.json").read_text())
    assert metrics["test"]["iwae_nats"] >= metrics["test"]["elbo_nats"] - 3 * metrics["test"]["iwae_std_err_nats"]


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_resuming_on_the_device_gives_the_uninterrupted_weights(device, architecture):
    kw = {"image_shape": [1, 8, 8], "architecture": "conv", "conv_channels": [8, 16]} if architecture == "conv" else {}
    x = binary_data(device)

    def fresh():
        torch.manual_seed(0)
        return VAE(VAEConfig(64, 4, hidden_sizes=[32], **kw)).to(device)

    straight, saved = fresh(), []
    history = train_vae(straight, x, epochs=4, batch_size=64, lr=1e-3, seed=3, checkpoint=saved.append, checkpoint_every=1).history
    resumed = fresh()
    assert train_vae(resumed, x, epochs=4, batch_size=64, lr=1e-3, seed=3, resume=saved[1]).history == history
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_written_out_training_step_matches_autograd_on_the_device(device):
    from vaebic.fit.mlp_step import MLPStep
    from vaebic.model.objectives import elbo_terms

    dtype = torch.float64 if device.type == "cuda" else torch.float32  # MPS has no float64
    torch.manual_seed(0)
    model = VAE(VAEConfig(64, 4, hidden_sizes=[32])).to(device=device, dtype=dtype)
    x, eps = binary_data(device).to(dtype)[:100], torch.randn(1, 100, 4, dtype=dtype).to(device)
    log_px, kl = elbo_terms(model, x, eps=eps)
    ((kl.sum() - log_px.sum()) / len(x)).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    MLPStep(model)(x, eps)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, **tol)


@cuda_only
def test_bf16_written_out_step_matches_autocast_on_cuda():
    from vaebic.fit.mlp_step import MLPStep
    from vaebic.model.objectives import elbo_terms

    torch.manual_seed(0)
    model = VAE(VAEConfig(64, 4, hidden_sizes=[32])).cuda()
    x, eps = binary_data("cuda")[:128], torch.randn(1, 128, 4, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        log_px, kl = elbo_terms(model, x, eps=eps)
    ((kl.sum() - log_px.sum()) / len(x)).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    MLPStep(model, "bfloat16")(x, eps)
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0.03 * g.abs().max().item() + 1e-6)


def test_device_and_cpu_estimates_agree_within_monte_carlo_error(device):
    model, x = trained(device)
    kw = dict(k_samples=500, batch_size=256, max_chunk_mb=64, seed=0)
    gpu = log_likelihood_estimate(model, x, **kw)
    cpu = log_likelihood_estimate(model.cpu(), x.cpu(), **kw)
    se = (gpu["iwae_std_err_nats"] ** 2 + cpu["iwae_std_err_nats"] ** 2) ** 0.5
    assert abs(gpu["iwae_nats"] - cpu["iwae_nats"]) < 5 * se


@cuda_only
def test_bf16_estimate_on_cuda_is_within_monte_carlo_error():
    model, x = trained(torch.device("cuda"))
    kw = dict(k_samples=500, batch_size=256, max_chunk_mb=256, seed=0)
    full = log_likelihood_estimate(model, x, **kw)
    half = log_likelihood_estimate(model, x, precision="bfloat16", **kw)
    assert abs(half["iwae_nats"] - full["iwae_nats"]) < 3 * full["iwae_std_err_nats"]


@cuda_only
def test_compiled_training_compiles_one_graph_and_matches_eager():
    """520 examples in batches of 64: 8 full batches and a short one of 8, which runs eagerly."""
    import torch._dynamo

    x = binary_data("cuda", n=520)
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = train_vae(VAE(VAEConfig(64, 4, hidden_sizes=[32])).cuda(), x, epochs=2, batch_size=64, lr=1e-3, seed=0, autograd=True).history
    torch.manual_seed(0)
    compiled = train_vae(VAE(VAEConfig(64, 4, hidden_sizes=[32])).cuda(), x, epochs=2, batch_size=64, lr=1e-3, seed=0, compile=True).history
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    for a, b in zip(eager, compiled):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)


def test_a_real_out_of_memory_on_the_device_becomes_one_plain_line(device):
    from vaebic.cli import explain_out_of_memory
    from vaebic.errors import VaebicError

    with pytest.raises(VaebicError, match="out of device memory: .*lower it"):
        with explain_out_of_memory("the batch size is train.batch_size=1: lower it"):
            torch.empty(2**45, device=device)  # 128 TiB of float32


def test_float32_conv_training_is_deterministic_on_the_device(device):
    """Deterministic cuDNN algorithms and no TF32 (vaebic.device.configure): two runs, the same weights."""
    from vaebic.device import configure

    configure(device, "float32")
    runs = [trained(device, epochs=2, image_shape=[1, 8, 8], architecture="conv", conv_channels=[8, 16])[0] for _ in range(2)]
    for (name, a), (_, b) in zip(runs[0].state_dict().items(), runs[1].state_dict().items()):
        assert torch.equal(a, b), name
