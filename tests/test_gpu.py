"""The CUDA path: skipped cleanly where there is no GPU (as on the reference CI machine)."""

import warnings

import pytest
import torch

from vaebic.evaluation import log_likelihood_estimate
from vaebic.model import VAE
from vaebic.training import train_vae

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def binary_data(n=512, dim=64):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, dim, generator=g) < 0.3).float().cuda()


def count_host_syncs(batch_size: int, epochs: int = 2) -> int:
    x = binary_data()
    model = VAE(64, 4, [32]).cuda()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_vae(model, x, epochs=epochs, batch_size=batch_size, lr=1e-3, seed=0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_training_synchronises_with_the_host_per_epoch_not_per_step():
    # 8 steps per epoch against 32: the same number of host synchronisations
    assert count_host_syncs(batch_size=64) == count_host_syncs(batch_size=16)


def trained_on_gpu():
    x = binary_data()
    model = VAE(64, 4, [32]).cuda()
    train_vae(model, x, epochs=5, batch_size=64, lr=1e-3, seed=0)
    return model, x


def test_bf16_estimate_on_the_gpu_is_within_monte_carlo_error():
    model, x = trained_on_gpu()
    kw = dict(k_samples=500, batch_size=256, max_chunk_mb=256, seed=0)
    full = log_likelihood_estimate(model, x, **kw)
    half = log_likelihood_estimate(model, x, precision="bfloat16", **kw)
    assert abs(half["iwae_nats"] - full["iwae_nats"]) < 3 * full["iwae_std_err_nats"]


def test_cpu_and_gpu_estimates_agree_within_monte_carlo_error():
    model, x = trained_on_gpu()
    kw = dict(k_samples=500, batch_size=256, max_chunk_mb=64, seed=0)
    gpu = log_likelihood_estimate(model, x, **kw)
    cpu = log_likelihood_estimate(model.cpu(), x.cpu(), **kw)
    se = (gpu["iwae_std_err_nats"] ** 2 + cpu["iwae_std_err_nats"] ** 2) ** 0.5
    assert abs(gpu["iwae_nats"] - cpu["iwae_nats"]) < 5 * se


def test_a_real_cuda_out_of_memory_becomes_one_plain_line():
    from vaebic.cli import explain_out_of_memory
    from vaebic.errors import VaebicError

    with pytest.raises(VaebicError, match="out of device memory: .*lower it"):
        with explain_out_of_memory("the batch size is train.batch_size=1: lower it"):
            torch.empty(2**45, device="cuda")  # 128 TiB of float32


def test_written_out_training_step_matches_autograd_on_the_gpu():
    from vaebic.mlp_step import MLPStep
    from vaebic.objectives import elbo_terms

    torch.manual_seed(0)
    model = VAE(64, 4, [32]).double().cuda()
    x, eps = binary_data().double()[:100], torch.randn(1, 100, 4, dtype=torch.float64, device="cuda")
    log_px, kl = elbo_terms(model, x, eps=eps)
    ((kl.sum() - log_px.sum()) / len(x)).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    MLPStep(model)(x, eps)
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)
