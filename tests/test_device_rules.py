"""The GPU and Apple-silicon rules, checked on any machine.

Training and evaluation run here on the CPU under a torch dispatch mode that sees every operation
and the tensors it creates: none may be float64 (MPS has no float64, and one code path serves every
device), and the host synchronisations of training may not grow with the number of steps (on a GPU
each one stalls the queue). `auto` settings resolve from device facts, which the tests give for a
CUDA GPU, Apple MPS and a CPU. Out-of-memory errors of every device become one line.
"""

import warnings

import numpy as np
import pytest
import torch
from conftest import X86_ONLY
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from vaebic import device as devices
from vaebic.cli import explain_out_of_memory
from vaebic.device import DeviceFacts
from vaebic.errors import VaebicError
from vaebic.fit.training import train_vae
from vaebic.model.evaluation import evaluate_split, latent_usage, log_likelihood_estimate, reconstructions_and_samples
from vaebic.model.vae import VAE, VAEConfig

# operations that make the host wait for the device: a value read back (.item(), bool(), if t:)
# or an output whose size depends on the values
SYNCING = {
    "aten._local_scalar_dense.default",
    "aten.nonzero.default",
    "aten.masked_select.default",
    "aten.unique_dim.default",
    "aten._unique2.default",
    "aten.is_nonzero.default",
    "aten.equal.default",
}


class Recorder(TorchDispatchMode):
    """Records every float64 tensor an operation creates, and every synchronising operation."""

    def __init__(self):
        super().__init__()
        self.float64: list[str] = []
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func)
        if name in SYNCING:
            self.syncs.append(name)
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tree_flatten(out)[0]):
            self.float64.append(name)
        return out


def binary(n=96, dim=36, seed=0):
    return (torch.rand(n, dim, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


MODELS = {
    "mlp bernoulli": lambda: VAE(VAEConfig(36, 3, hidden_sizes=[16])),
    "mlp gaussian, learned sigma": lambda: VAE(VAEConfig(36, 3, hidden_sizes=[16], likelihood="gaussian", gaussian_sigma="learned")),
    "mlp gaussian, calibrated sigma": lambda: VAE(VAEConfig(36, 3, hidden_sizes=[16], likelihood="gaussian", gaussian_sigma="optimal")),
    "mlp continuous bernoulli": lambda: VAE(VAEConfig(36, 3, hidden_sizes=[16], likelihood="continuous_bernoulli")),
    "conv": lambda: VAE(VAEConfig(36, 3, hidden_sizes=[16], image_shape=[1, 6, 6], architecture="conv", conv_channels=[4, 8])),
}


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("kind", list(MODELS))
def test_training_and_evaluation_create_no_float64_tensor(kind, precision):
    torch.manual_seed(0)
    model, x = MODELS[kind](), binary()
    with Recorder() as rec:
        train_vae(model, x, epochs=2, batch_size=32, lr=1e-3, seed=0, precision=precision)
        train_vae(MODELS[kind](), x, epochs=1, batch_size=32, lr=1e-3, seed=0, precision=precision, autograd=True)
        evaluate_split(model, x, n_samples=2, batch_size=40, seed=0, precision=precision)
        log_likelihood_estimate(model, x, k_samples=20, batch_size=40, max_chunk_mb=0.01, seed=0, precision=precision)
        latent_usage(model, x, batch_size=40)
        reconstructions_and_samples(model, x[:4], 4)
    assert rec.float64 == [], f"float64 tensors created by: {sorted(set(rec.float64))}"


def syncs_of_training(batch_size: int, epochs: int = 2, **kw) -> int:
    from vaebic.fit.training import Adam

    Adam([torch.zeros(1)], lr=1e-3)  # the once-per-process trial of the private Adam kernel reads a value back: not counted
    torch.manual_seed(0)
    with Recorder() as rec:
        train_vae(VAE(VAEConfig(36, 3, hidden_sizes=[16])), binary(), epochs=epochs, batch_size=batch_size, lr=1e-3, seed=0, **kw)
    return len(rec.syncs)


@pytest.mark.parametrize("kw", [{}, {"precision": "bfloat16"}, {"autograd": True}], ids=["written-out step", "bf16", "autograd"])
def test_training_synchronises_per_epoch_not_per_step(kw):
    few, many = syncs_of_training(batch_size=48, **kw), syncs_of_training(batch_size=8, **kw)  # 2 against 12 steps per epoch
    assert few > 0  # the per-epoch read-back is seen, so a per-step one would be too
    assert few == many
    assert syncs_of_training(batch_size=48, epochs=4, **kw) == 2 * few  # and it is per epoch


CUDA_A100 = DeviceFacts("cuda", "A100", native_bf16=True, memory_bytes=40 * 2**30, capability=(8, 0))
CUDA_T4 = DeviceFacts("cuda", "Tesla T4", native_bf16=False, memory_bytes=16 * 2**30, capability=(7, 5))
MPS = DeviceFacts("mps", "Apple MPS", native_bf16=False, memory_bytes=16 * 2**30)
CPU_BF16 = DeviceFacts("cpu", "EPYC", native_bf16=True)
CPU_PLAIN = DeviceFacts("cpu", "old x86", native_bf16=False)


@pytest.mark.parametrize(
    "facts, expected",
    [
        (CPU_BF16, 8.0),
        (CPU_PLAIN, 8.0),
        (CUDA_A100, 1024.0),  # 40 GiB / 32 = 1280 MiB, capped at 1024
        (CUDA_T4, 512.0),
        (MPS, 512.0),
        (DeviceFacts("cuda", "small", False, 1 * 2**30, (6, 1)), 64.0),  # 32 MiB, raised to 64
    ],
)
def test_auto_block_size_follows_the_device(facts, expected):
    mb, why = devices.chunk_mb("auto", facts)
    assert mb == expected and why.startswith("auto")
    assert devices.chunk_mb(16, facts) == (16.0, "set in params.yaml")


@pytest.mark.parametrize(
    "facts, steps, expected",
    [
        (CPU_BF16, 10**6, False),
        (MPS, 10**6, False),
        (CUDA_A100, 29, False),  # the default sweep: 29 steps per epoch, far too short to repay compiling
        (CUDA_A100, devices.COMPILE_MIN_STEPS_PER_EPOCH, True),
    ],
)
def test_auto_compile_only_on_cuda_for_long_epochs(facts, steps, expected):
    on, why = devices.compile_setting("auto", facts, steps)
    assert on is expected and why.startswith("auto")
    assert devices.compile_setting(True, CPU_BF16, 10) == (True, "set in params.yaml")


def test_bfloat16_only_where_the_hardware_has_it(caplog):
    assert devices.check_precision("bfloat16", CUDA_A100, "train.precision") == "bfloat16"
    assert devices.check_precision("bfloat16", CPU_BF16, "train.precision") == "bfloat16"
    assert devices.check_precision("float32", CUDA_T4, "train.precision") == "float32"
    with pytest.raises(VaebicError, match=r"train.precision is bfloat16, but Tesla T4 \(compute capability 7.5\) has no native bf16"):
        devices.check_precision("bfloat16", CUDA_T4, "train.precision")
    with pytest.raises(VaebicError, match="on Apple MPS set it to float32"):
        devices.check_precision("bfloat16", MPS, "evaluate.precision")
    assert devices.check_precision("bfloat16", CPU_PLAIN, "train.precision") == "bfloat16"
    assert "emulated" in caplog.text


def test_native_bf16_is_read_from_the_cpu_flags():
    assert devices.cpu_has_native_bf16("flags : fpu sse avx512f avx512_bf16 avx512_vnni", environ={})
    assert devices.cpu_has_native_bf16("flags : fpu amx_bf16 amx_tile", environ={})
    assert not devices.cpu_has_native_bf16("flags : fpu sse avx2 avx512f", environ={})
    assert devices.facts(torch.device("cpu")).type == "cpu"


BF16_FLAGS = "flags : fpu sse avx2 avx512f avx512_bf16 avx512_vnni"


@pytest.mark.parametrize("name", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
@pytest.mark.parametrize("cap", ["AVX2", "avx512_core_vnni", "AVX2_VNNI_2", "SSE41"])
def test_onednn_capped_below_bf16_is_not_native(name, cap):
    """oneDNN, which multiplies torch's bf16 matrices on a CPU, obeys ONEDNN_MAX_CPU_ISA (or its old
    name DNNL_MAX_CPU_ISA): capped below AVX512_CORE_BF16 it emulates bf16, measured 0.9 GFLOP/s
    against 210 on an AVX512_BF16 EPYC. auto must then choose float32, and say why."""
    env = {name: cap}
    assert devices.onednn_isa_cap(env) == f"{name}={cap}"
    assert not devices.cpu_has_native_bf16(BF16_FLAGS, environ=env)
    f = devices.DeviceFacts("cpu", "EPYC", native_bf16=False, bf16_note=f"{name}={cap} keeps oneDNN from its bf16 instructions")
    precision, why = devices.resolve_precision("auto", f, "evaluate.precision")
    assert precision == "float32" and why == f"auto: {name}={cap} keeps oneDNN from its bf16 instructions"


@pytest.mark.parametrize(
    "env", [{}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, {"ONEDNN_MAX_CPU_ISA": "all"}, {"DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"}]
)
def test_onednn_left_at_or_above_bf16_keeps_native(env):
    assert devices.onednn_isa_cap(env) is None
    assert devices.cpu_has_native_bf16(BF16_FLAGS, environ=env)


def test_the_cpu_facts_name_a_onednn_cap(monkeypatch):
    monkeypatch.setattr(devices, "_cpuinfo", lambda: BF16_FLAGS + "\nmodel name : EPYC")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    f = devices.facts(torch.device("cpu"))
    assert not f.native_bf16 and "ONEDNN_MAX_CPU_ISA=AVX2" in f.bf16_note
    assert devices.resolve_precision("auto", f, "evaluate.precision") == ("float32", f"auto: {f.bf16_note}")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert devices.facts(torch.device("cpu")).native_bf16 == torch.backends.mkldnn.is_available()


def test_float32_on_cuda_means_float32_and_deterministic_cudnn():
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    try:
        devices.configure(torch.device("cuda"), "float32")
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        devices.configure(torch.device("cuda"), "bfloat16")
        assert torch.backends.cuda.matmul.allow_tf32
    finally:
        (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic,
        ) = saved


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(
            "MPS backend out of memory (MPS allocated: 17.10 GB, other allocations: 1.2 GB, max allowed: 18.13 GB). "
            "Tried to allocate 256.00 MB on private pool.\nUse PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper limit"
        ),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)\nallocator detail"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate 4000000 bytes"),
    ],
    ids=["mps", "cuda", "cpu"],
)
def test_out_of_memory_of_every_device_becomes_one_line(error):
    with pytest.raises(VaebicError) as err:
        with explain_out_of_memory("the batch size is train.batch_size=128: lower it"):
            raise error
    message = str(err.value)
    assert "\n" not in message and message.startswith("out of device memory: ") and "train.batch_size=128" in message
    with pytest.raises(RuntimeError, match="not about memory"):
        with explain_out_of_memory("unused"):
            raise RuntimeError("not about memory")


def test_a_data_set_too_large_for_the_device_is_one_line():
    """A real allocation failure: 10 million examples of a million values (a zero-stride view that
    takes no memory here) need 40 TB as float32."""
    huge = np.broadcast_to(np.zeros(1, np.uint8), (10**7, 10**6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that the view is not writable
        with pytest.raises(VaebicError) as err:
            devices.to_device(huge, torch.device("cpu"), "training data")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("the training data (10000000 examples x 1000000 values, 37252.9 GiB as float32) do not fit")
    assert "data.max_examples" in message
    assert devices.to_device(np.ones((3, 4), np.uint8), torch.device("cpu"), "x").dtype == torch.float32


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="mallopt is glibc's (Linux)")
def test_training_and_evaluation_hold_freed_memory_for_the_next_tensor():
    """A process that has trained or evaluated keeps freed memory for reuse: three 2 MiB tensors
    made and freed 100 times fault their pages in once, not each time (glibc's default returned
    them to the kernel in about half of the processes: ~150,000 page faults for this loop)."""
    import subprocess
    import sys

    code = """
import resource, torch
from vaebic import device
from vaebic.model.evaluation import log_likelihood_estimate
from vaebic.model.vae import VAE, VAEConfig
assert device._held is None  # nothing set at import
m = VAE(VAEConfig(input_dim=6, latent_dim=2, hidden_sizes=[4]))
log_likelihood_estimate(m, torch.ones(3, 6), k_samples=2, batch_size=3, max_chunk_mb=1, seed=0)
assert device._held is True  # set by the evaluation (once per process)
n = 2**19
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    a = torch.ones(n); b = torch.ones(n); c = torch.ones(n); del a, b, c
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    faults, pages = int(out.stdout.split()[-1]), 100 * 3 * (2**21 // 4096)
    assert faults < 0.05 * pages, faults


@X86_ONLY
def test_subnormals_are_flushed_in_every_thread_only_when_set_before_the_pool_starts():
    """torch's pool threads copy the subnormal flag when the pool starts: set first, every thread
    flushes (and Adam's tiny second moments come out zero in every thread's share); set after a
    parallel operation, only the calling thread does. Two threads, each case in a fresh process."""
    import os
    import subprocess
    import sys

    code = """
import sys, torch
from vaebic import device
if sys.argv[1] == "late":
    torch.ones(1 << 20) * 2.0  # a parallel operation starts the pool
print(device.flush_subnormals_everywhere())
from vaebic.fit.training import Adam
p = torch.zeros(1 << 20)
p.grad = torch.full((1 << 20,), 1e-21)  # its square, 1e-42, is subnormal
opt = Adam([p], lr=1e-3)
opt.step()
print(int(opt.exp_avg_sq[0].view(torch.int32).count_nonzero()))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}  # two threads also under pytest -n
    outs = {
        when: subprocess.run([sys.executable, "-c", code, when], capture_output=True, text=True, timeout=120, env=env)
        for when in ("first", "late")
    }
    assert all(o.returncode == 0 for o in outs.values()), {k: o.stderr for k, o in outs.items()}
    assert outs["first"].stdout.split() == ["True", "0"]
    flushed, unflushed = outs["late"].stdout.split()
    assert flushed == "False" and 0 < int(unflushed) < 1 << 20  # the other thread's share stayed subnormal


def test_each_of_n_jobs_gets_an_equal_share_of_the_cores_in_every_thread_pool(monkeypatch):
    # the sweep's stage processes and the pytest workers: BLAS, OpenMP and torch.compile's compiler pool
    import os

    from vaebic.sweep import cpu_thread_share

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert cpu_thread_share(2) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4", "TORCHINDUCTOR_COMPILE_THREADS": "4"}
    assert set(cpu_thread_share(16).values()) == {"1"}  # at least one thread each
