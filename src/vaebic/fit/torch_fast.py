"""Every private torch API vaebic calls, each behind a capability check, each with a public
fallback.

Private APIs (names with a leading underscore, ``torch.ops.aten.*``) carry no compatibility
promise: a torch release may rename them, change their arguments or drop them. So each one is
tried once per device type, on a tiny tensor whose answer is known, before it is used; where the
trial fails (or the fallback is forced) the public fallback runs instead, with the same results
to float rounding. A torch upgrade can then cost speed, never correctness.

- ``adam_step``: Adam as one fused kernel (``torch._fused_adam_``, step counts by
  ``torch._foreach_add_``). Fallback: ``torch.optim.Adam(fused=True)``, the same kernel through
  the public API (its default implementation on a device without a fused kernel). The private
  call is the default because ``torch.optim`` imports ``torch._dynamo`` on first use: over a
  second of start-up in every train stage, longer than many small models take to train.
- ``relu_backward``: the ReLU's backward pass in one kernel
  (``torch.ops.aten.threshold_backward``), for vaebic.fit.mlp_step. Fallback: ``masked_fill_``, the
  same numbers.

Setting the environment variable ``VAEBIC_TORCH_FALLBACK=1`` forces every fallback; it is read
when an optimiser or a written-out training step is built. tests/test_torch_fast.py trains,
steps and resumes from checkpoints on both paths; any test runs on the fallback with
``VAEBIC_TORCH_FALLBACK=1 python -m pytest ...``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable

import torch

log = logging.getLogger("vaebic.torch_fast")

FALLBACK_ENV = "VAEBIC_TORCH_FALLBACK"


def fallback_forced() -> bool:
    """True when VAEBIC_TORCH_FALLBACK asks for the public fallbacks (any value but '', '0')."""
    return os.environ.get(FALLBACK_ENV, "") not in ("", "0")


def _fused_adam(params, grads, exp_avg, exp_avg_sq, steps, *, lr: float, betas: tuple[float, float], eps: float) -> None:
    torch._foreach_add_(steps, 1)
    torch._fused_adam_(
        params,
        grads,
        exp_avg,
        exp_avg_sq,
        [],
        steps,
        lr=lr,
        beta1=betas[0],
        beta2=betas[1],
        weight_decay=0.0,
        eps=eps,
        amsgrad=False,
        maximize=False,
    )


def _try_fused_adam(device: str) -> bool:
    # Adam's first step from zero moments moves a parameter by lr against the gradient's sign
    # (bias-corrected m / sqrt(v) = g / |g|), whatever the gradient's size.
    p, g = torch.ones(2, device=device), torch.tensor([3.0, -0.5], device=device)
    exp_avg, exp_avg_sq, steps = torch.zeros(2, device=device), torch.zeros(2, device=device), torch.zeros((), device=device)
    _fused_adam([p], [g], [exp_avg], [exp_avg_sq], [steps], lr=0.25, betas=(0.9, 0.999), eps=1e-8)
    return torch.allclose(p.cpu(), torch.tensor([0.75, 1.25]), rtol=0, atol=1e-6) and steps.item() == 1.0


def _try_threshold_backward(device: str) -> bool:
    g, a = torch.tensor([1.0, 2.0, 3.0], device=device), torch.tensor([0.5, 0.0, -1.0], device=device)
    return torch.ops.aten.threshold_backward(g, a, 0).tolist() == [1.0, 0.0, 0.0]


_TRIALS = {"torch._fused_adam_": _try_fused_adam, "torch.ops.aten.threshold_backward": _try_threshold_backward}


@functools.cache
def private_op_works(name: str, device_type: str) -> bool:
    """Whether the private op `name` runs on `device_type` and gives the known answer on a tiny
    tensor; tried once per process. A failure is logged once: the fallback is slower."""
    try:
        with torch.no_grad():
            works = _TRIALS[name](device_type)
        why = "gave a wrong answer"
    except Exception as exc:  # a missing op, changed arguments, no kernel for the device: all mean "do not use it"
        first_line = (str(exc).splitlines() or [""])[0][:120]
        works, why = False, f"failed ({type(exc).__name__}: {first_line})"
    if not works:
        log.warning("%s %s on %s with torch %s; using its public fallback (slower)", name, why, device_type, torch.__version__)
    return works


def use_private(name: str, device: torch.device | str) -> bool:
    """True when the private op `name` is to be used on device: it works, and no fallback is forced."""
    return not fallback_forced() and private_op_works(name, torch.device(device).type)


def adam_step(
    params: list[torch.Tensor],
    exp_avg: list[torch.Tensor],
    exp_avg_sq: list[torch.Tensor],
    steps: list[torch.Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> Callable[[], None]:
    """A function that makes one Adam step (Kingma & Ba 2015, no weight decay) on params from
    their .grad, the update of ``torch.optim.Adam(fused=True)``, updating the moments exp_avg and
    exp_avg_sq and the step counts `steps` (float32 scalars on the parameters' device) in place:
    whoever holds those tensors (a checkpoint's state, a resume) sees every step."""
    device = params[0].device
    if use_private("torch._fused_adam_", device):

        def step() -> None:
            _fused_adam(params, [p.grad for p in params], exp_avg, exp_avg_sq, steps, lr=lr, betas=betas, eps=eps)

        return step
    opt = torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, fused=public_fused_adam_works(device.type))
    # The optimiser's state is our tensors, so its steps update them in place; a state present before
    # the first step is used as it is (torch.optim fills in only an empty one).
    for p, m, v, n in zip(params, exp_avg, exp_avg_sq, steps):
        opt.state[p] = {"step": n, "exp_avg": m, "exp_avg_sq": v}
    return opt.step


@functools.cache
def public_fused_adam_works(device_type: str) -> bool:
    """Whether torch.optim.Adam(fused=True) runs on device_type (older torch: only on CUDA); where
    it does not, torch.optim.Adam's default implementation, plain tensor operations, takes over."""
    p = torch.ones(1, device=device_type, requires_grad=True)
    p.grad = torch.ones(1, device=device_type)
    try:
        torch.optim.Adam([p], fused=True).step()
    except Exception:  # no fused kernel for the device, or none left at all: the plain one will do
        return False
    return True


def relu_backward(device: torch.device | str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """f(g, a): the gradient g through a ReLU whose output was a, i.e. g where a > 0, else 0.
    f may write into g."""
    if use_private("torch.ops.aten.threshold_backward", device):
        return lambda g, a: torch.ops.aten.threshold_backward(g, a, 0)
    return lambda g, a: g.masked_fill_(a <= 0, 0)
