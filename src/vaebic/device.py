"""The compute device: which one, what it can do, and the settings whose best value depends on it.

Settings that differ between a CPU, a CUDA GPU and Apple's MPS are ``auto`` by default and
resolved here from :class:`DeviceFacts`, so that every device's rules run (and are tested) on any
machine:

- ``evaluate.max_chunk_mb``: 8 MiB blocks on a CPU (a server's L3 cache); on a GPU 1/32 of its
  memory, within 64-1024 MiB, so that one block holds hundreds of importance samples rather
  than one (thousands of tiny kernel launches).
- ``train.compile``: torch.compile only on CUDA and only where an epoch is long enough that a run
  to its plateau repays tens of seconds of compiling per train stage (at least
  COMPILE_MIN_STEPS_PER_EPOCH optimiser steps per epoch). Not decided by train.epochs, the cap:
  raising a cap that no model reaches must not change a single weight.
- ``train.precision`` and ``evaluate.precision``: ``auto`` is bfloat16 on hardware with native
  bf16 matrix multiplies (a CPU with AVX512_BF16 or AMX, a CUDA GPU of compute capability 8.0 or
  later), float32 elsewhere; bfloat16 is refused on GPUs without it.

Rules that hold on every device, so that one code path serves them all: no float64 tensor on the
compute device (MPS has none; float64 sums happen on the host, in numpy); one host
synchronisation per epoch of training; float32 runs on CUDA use deterministic cuDNN algorithms
and no TF32 (see :func:`configure`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from dataclasses import dataclass

import numpy as np
import torch

from vaebic.errors import VaebicError

log = logging.getLogger("vaebic.device")

# ~30 s of compiling is repaid by a faster step on a GPU from about 20,000 steps; a run to its
# validation plateau takes about 100 epochs or more, hence 200 steps per epoch
COMPILE_MIN_STEPS_PER_EPOCH = 200
# 2 MiB (one core's L2) until 2026-12: with freed memory held for reuse (hold_freed_memory), larger
# blocks no longer fault their pages in each time, and fewer blocks mean fewer small operations;
# on a 2-core Intel Xeon the estimate took 1.64 s at 2 MiB, 1.29 s at 8 and 1.21 s at 16 (the
# same numbers, bit for bit). 8, not 16: its working set (about 3x the block) stays within a
# typical server L3 cache.
CPU_CHUNK_MB = 8.0


@dataclass(frozen=True)
class DeviceFacts:
    """What the settings depend on. type: cpu, cuda or mps; native_bf16: bf16 matrix multiplies in
    hardware; memory_bytes: the device's memory (None on a CPU, whose blocks are cache-sized)."""

    type: str
    name: str
    native_bf16: bool
    memory_bytes: int | None = None
    capability: tuple[int, int] | None = None  # CUDA compute capability
    bf16_note: str = ""  # why a device whose hardware has bf16 does not multiply in it here


def pick_device(name: str = "auto") -> torch.device:
    """auto: CUDA if available, then Apple MPS, then CPU. A named device must be available."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise VaebicError(f"train.device is '{name}' but no {name.upper()} device is available here; use 'auto' or 'cpu'")
    return torch.device(name)


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:  # not Linux
        return ""


#: oneDNN's instruction sets below AVX512_CORE_BF16: capped at one of them (ONEDNN_MAX_CPU_ISA), oneDNN
#: emulates bf16 matrix multiplies (0.9 GFLOP/s at AVX2 against 210 uncapped, AMD EPYC, one thread)
ONEDNN_BELOW_BF16 = {"sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core", "avx512_core_vnni"}


def onednn_isa_cap(environ=None) -> str | None:
    """`NAME=value` when ONEDNN_MAX_CPU_ISA (or its old name DNNL_MAX_CPU_ISA, read when the new one
    is unset, as oneDNN does) caps oneDNN, which multiplies torch's bf16 matrices on a CPU, below
    its bf16 instructions; else None."""
    env = os.environ if environ is None else environ
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        if env.get(name):
            return f"{name}={env[name]}" if env[name].strip().lower() in ONEDNN_BELOW_BF16 else None
    return None


def cpu_has_native_bf16(cpuinfo: str | None = None, environ=None) -> bool:
    """Whether torch multiplies bf16 matrices in this CPU's hardware: the AVX512_BF16 or AMX-BF16
    flags of /proc/cpuinfo (Linux), torch built with oneDNN, and oneDNN not capped below them
    (onednn_isa_cap). Otherwise False: bf16 would be emulated, slower than float32."""
    flags = set((_cpuinfo() if cpuinfo is None else cpuinfo).split())
    return bool({"avx512_bf16", "amx_bf16"} & flags) and torch.backends.mkldnn.is_available() and onednn_isa_cap(environ) is None


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module knows."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def facts(device: torch.device) -> DeviceFacts:
    """The facts about a real device."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return DeviceFacts("cuda", props.name, props.major >= 8, props.total_memory, (props.major, props.minor))
    if device.type == "mps":
        memory = torch.mps.recommended_max_memory() if hasattr(torch.mps, "recommended_max_memory") else None
        return DeviceFacts("mps", "Apple MPS", False, memory)
    hardware = cpu_has_native_bf16(environ={})  # the CPU's flags and torch's oneDNN, whatever the cap
    cap = onednn_isa_cap()
    note = f"{cap} keeps oneDNN from {cpu_name()}'s bf16 instructions" if hardware and cap else ""
    return DeviceFacts("cpu", cpu_name(), hardware and cap is None, bf16_note=note)


def chunk_mb(setting, f: DeviceFacts) -> tuple[float, str]:
    """The memory bound of one block of importance samples (MiB), and why."""
    if setting != "auto":
        return float(setting), "set in params.yaml"
    if f.type == "cpu":
        return CPU_CHUNK_MB, "auto on a CPU: blocks whose working set stays in the L3 cache"
    memory = f.memory_bytes or 8 * 2**30
    mb = float(min(1024, max(64, memory / 2**20 / 32)))
    return mb, f"auto on {f.type}: 1/32 of its {memory / 2**30:.0f} GiB of memory, within 64-1024 MiB"


def compile_setting(setting, f: DeviceFacts, steps_per_epoch: int) -> tuple[bool, str]:
    """Whether to torch.compile the training step, and why."""
    if setting != "auto":
        return bool(setting), "set in params.yaml"
    if f.type != "cuda":
        return False, f"auto on {f.type}: torch.compile pays only on a CUDA GPU"
    if steps_per_epoch < COMPILE_MIN_STEPS_PER_EPOCH:
        return False, (
            f"auto: {steps_per_epoch} optimiser steps per epoch are too few to repay tens of seconds of compiling "
            f"(compiled from {COMPILE_MIN_STEPS_PER_EPOCH} per epoch)"
        )
    return True, f"auto on CUDA: {steps_per_epoch} optimiser steps per epoch repay the compiling"


def resolve_precision(setting: str, f: DeviceFacts, key: str) -> tuple[str, str]:
    """The precision of the matrix multiplies, and why: auto is bfloat16 where the device
    multiplies bf16 natively (a CPU with AVX512_BF16 or AMX, a CUDA GPU of compute capability 8.0
    or later) and float32 elsewhere; float32 and bfloat16 are taken as given (see check_precision)."""
    if setting == "auto":
        if f.native_bf16:
            return "bfloat16", f"auto: {f.name} multiplies bf16 natively"
        return "float32", f"auto: {f.bf16_note or f.name + ' has no native bf16 matrix multiplies'}"
    return check_precision(setting, f, key), "set in params.yaml"


def check_precision(precision: str, f: DeviceFacts, key: str) -> str:
    """precision as given, refused where bf16 is not native on a GPU (emulated or missing);
    on a CPU without native bf16 it runs, emulated, with a warning."""
    if precision != "bfloat16" or f.native_bf16:
        return precision
    if f.type == "cuda":
        major, minor = f.capability or (0, 0)
        raise VaebicError(
            f"{key} is bfloat16, but {f.name} (compute capability {major}.{minor}) has no native bf16 matrix "
            "multiplies (they need 8.0 or later); set it to float32"
        )
    if f.type == "mps":
        raise VaebicError(
            f"{key} is bfloat16, but vaebic runs bf16 only where the hardware multiplies bf16 natively; on Apple MPS set it to float32"
        )
    log.warning(
        "%s is bfloat16 but %s: bf16 is emulated and slower than float32",
        key,
        f.bf16_note or "this CPU has no native bf16 matrix multiplies (AVX512_BF16 or AMX)",
    )
    return precision


def configure(device: torch.device, precision: str) -> None:
    """Numerics that must not depend on the GPU model: float32 means float32 (no TF32 in matrix
    multiplies or convolutions, which Ampere and newer use by default), and cuDNN picks
    deterministic algorithms, so that a resumed run ends with the weights of an uninterrupted one."""
    if device.type != "cuda":
        return
    float32 = precision == "float32"
    torch.backends.cuda.matmul.allow_tf32 = not float32
    torch.backends.cudnn.allow_tf32 = not float32
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory errors: torch.OutOfMemoryError (CUDA), and the plain RuntimeErrors of
    MPS ("MPS backend out of memory") and of the CPU allocator ("can't allocate memory")."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def to_device(a: np.ndarray, device: torch.device, what: str) -> torch.Tensor:
    """a as float32 on device. Data too large for the device's memory is one plain line that
    says how large they are and what to do, not an allocator's traceback."""
    try:
        return torch.from_numpy(a).to(device=device, dtype=torch.float32)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        gib = a.size * 4 / 2**30
        where = "the machine's memory" if device.type == "cpu" else f"the memory of {device}"
        fix = "use fewer examples (data.max_examples)" + ("" if device.type == "cpu" else " or train.device: cpu")
        raise VaebicError(
            f"the {what} ({a.shape[0]} examples x {int(np.prod(a.shape[1:]))} values, {gib:.1f} GiB as float32) "
            f"do not fit in {where}; {fix}"
        ) from None


#: glibc's mallopt parameters (malloc.h) and the values hold_freed_memory sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD = 2**30  # freed memory kept for reuse, at most
MMAP_THRESHOLD = 2**25  # blocks up to this size come from the heap (glibc's largest allowed value)
_held: bool | None = None


def hold_freed_memory() -> bool:
    """Keep freed memory in the process for the next tensor instead of returning it to the
    kernel (glibc, i.e. Linux; elsewhere nothing). Once per process; True when it is set.

    torch's CPU tensors come straight from malloc. glibc's default hands the top of its heap back
    to the kernel when a few MiB are free there, and each new tensor then faults its pages in
    again, zeroed by the kernel. The importance-weighted estimate allocates a few 2 MiB tensors per
    block: on a 2-core EPYC its likelihood pass took 1.66 ms per block instead of 0.36 ms in about
    half of the processes, depending only on where the heap happened to end. Setting both
    thresholds (mallopt) ends that; a process keeps at most TRIM_THRESHOLD of freed memory.
    """
    global _held
    if _held is None:
        _held = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            import ctypes

            try:
                libc = ctypes.CDLL(None)
                _held = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
            except (OSError, AttributeError):
                pass
    return _held


_flush_everywhere = False


def flush_subnormals_everywhere() -> bool:
    """Treat float subnormals as zero in this thread and in every thread of torch's CPU pool, for
    the rest of the process; True when every thread does. Call it before the process's first
    parallel torch operation: the flag is per thread, and the pool's threads copy it from the
    thread that starts them, at the first parallel operation. Set later, it reaches only the
    calling thread, and the pool's threads keep the slow path for their share of every operation.

    A train stage whose first parallel operation (reading the data) came before the flag ran every
    Adam step from about epoch 20 on at 1 ms instead of 0.27 ms (d = 16, 2 threads, Intel Xeon):
    the other thread's half of the second moments was subnormal. That was about 15% of training.
    The weights came out bit for bit the same either way (subnormals are 1e-38 beside Adam's eps
    of 1e-8); only the thread that happened to hold a number decided whether it was flushed.
    """
    global _flush_everywhere
    _flush_everywhere = True
    torch.set_flush_denormal(True)
    return every_thread_flushes()


def every_thread_flushes() -> bool:
    """Whether every thread of torch's CPU pool treats subnormals as zero now: subnormals times 3,
    each thread multiplying its own share, are all zero only then. Starts the pool if not yet started."""
    # made from their bits: a subnormal written as a number would already be zero under the flag
    x = torch.full((1 << 20,), 1 << 20, dtype=torch.int32).view(torch.float32)  # 1.5e-39
    return not bool((x * 3.0).view(torch.int32).any())


@contextlib.contextmanager
def cpu_slow_paths_off():
    """The CPU's two slow paths kept away from training and evaluation: freed memory is held for
    reuse (hold_freed_memory, once per process), and float subnormals (below 1.2e-38) are treated
    as zero while inside.

    Adam's second moments of always-dark output pixels sink into the subnormal range, where x86
    arithmetic is many times slower (Adam's step ran 2-3x slower on a 2-core EPYC); flushing them
    to zero changes no result that matters (they are 1e-38 beside numbers of order 1). Set here,
    the flag reaches torch's other threads only if their pool has not started yet: the stage
    processes call flush_subnormals_everywhere first, so that every thread has it; elsewhere the
    other threads' share of an operation may take the slow path (slower, and unflushed subnormals).
    """
    hold_freed_memory()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(_flush_everywhere)  # torch's default (False), unless set for the whole process


def autocast(device: torch.device, precision: str):
    """bfloat16 autocast for the matrix multiplies (precision 'bfloat16'), or nothing ('float32').
    Parameters, optimiser state and the likelihood and KL arithmetic stay in float32."""
    if precision not in ("float32", "bfloat16"):
        raise VaebicError(f"unknown precision {precision!r}; known: float32, bfloat16")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def host_float64(t: torch.Tensor) -> np.ndarray:
    """A device tensor as a float64 numpy array on the host: where sums that need float64 happen
    (MPS has no float64, and nothing else needs it on the device)."""
    return t.detach().to("cpu").numpy().astype(np.float64)
