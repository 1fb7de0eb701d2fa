"""The training loop: data resident on the device, shuffled batches by index, Adam, one host
synchronisation per epoch (no per-step `.item()`), a progress bar, a stop on a NaN loss, and
checkpoints to resume from (see vaebic.checkpoint)."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable

import torch

from vaebic import mlp_step, torch_fast
from vaebic.device import autocast, denormals_flushed
from vaebic.errors import VaebicError
from vaebic.objectives import elbo_terms, reparameterize

log = logging.getLogger("vaebic.training")


class DivergedError(VaebicError):
    """The loss became NaN or infinite."""


class Adam:
    """Adam (Kingma & Ba 2015), the same update as ``torch.optim.Adam(fused=True)``: one fused
    kernel for all parameters instead of a dozen passes over them (vaebic.torch_fast.adam_step).
    Its state (moments and step counts, the checkpoint's "adam") is the same on either path.

    Not torch.optim itself: its first use imports torch._dynamo, 1.5 s of start-up in every train
    stage, longer than many of the small models here take to train. torch.optim is the fallback
    where the fused kernel cannot be called directly.
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]
        self._step = torch_fast.adam_step(self.params, self.exp_avg, self.exp_avg_sq, self.steps, lr=lr, betas=betas, eps=eps)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state(self) -> dict:
        return {name: [t.to("cpu", copy=True) for t in getattr(self, name)] for name in ("exp_avg", "exp_avg_sq", "steps")}

    @torch.no_grad()
    def load_state(self, state: dict) -> None:
        for name in ("exp_avg", "exp_avg_sq", "steps"):
            mine, saved = getattr(self, name), state[name]
            if len(saved) != len(mine) or any(a.shape != b.shape for a, b in zip(mine, saved)):
                raise VaebicError(f"the checkpoint's optimiser state ({name}) does not fit this model")
            for a, b in zip(mine, saved):
                a.copy_(b)

    @torch.no_grad()
    def step(self) -> None:
        self._step()


@denormals_flushed()
def train_vae(
    model,
    train_x: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    on_epoch: Callable[[int, dict], None] | None = None,
    desc: str = "train",
    precision: str = "float32",
    compile: bool = False,
    resume: dict | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    checkpoint_every: int = 1,
    autograd: bool = False,
) -> list[dict]:
    """Maximise the mean ELBO of train_x (already on the model's device, float, shape (N, D)).

    Returns one record per epoch: mean loss (-ELBO), reconstruction term and KL, nats per example.
    on_epoch(epoch, record) is called after every epoch (1-based), e.g. to log to MLflow.
    precision 'bfloat16' runs the network's matrix multiplies in bf16 (the written-out step, or
    autograd under bf16 autocast); compile=True compiles the loss and, through AOTAutograd, its
    backward with torch.compile (worth it on a GPU for long runs; its first step takes tens of
    seconds to compile; see vaebic.device.compile_setting).

    checkpoint(state) is called every checkpoint_every epochs (0: never) but the last, with the
    training state (weights, Adam's state, random-number generators, history, epoch); passing such
    a state back as resume= continues from its epoch and ends with the same weights, bit for bit,
    as a run that was never interrupted (same device, same torch).

    An MLP (not compiled) takes its gradients from vaebic.mlp_step (the backward pass written out,
    the same gradients, 5% to 20% faster on a CPU, far fewer kernel launches on a GPU);
    autograd=True makes autograd compute them anyway.
    """
    from tqdm import tqdm

    device = train_x.device
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    opt = Adam(model.parameters(), lr=lr)
    n = len(train_x)
    n_steps = math.ceil(n / batch_size)
    # Compiled for the full batch size only: the last, shorter batch of an epoch runs eagerly
    # rather than triggering a second compilation.
    compiled = torch.compile(elbo_terms, dynamic=False) if compile else None
    written_out = None if autograd or not mlp_step.supports(model, precision, compile) else mlp_step.MLPStep(model, precision)
    model.train()
    history: list[dict] = []
    start = 1
    if resume is not None:
        _restore(resume, model, opt, gen)
        history, start = list(resume["history"]), resume["epoch"] + 1
        log.info("%s: resuming at epoch %d of %d", desc, start, epochs)
    show_bar = sys.stderr.isatty()
    bar = tqdm(range(start, epochs + 1), desc=desc, unit="epoch", disable=not show_bar, dynamic_ncols=True, initial=start - 1, total=epochs)
    for epoch in bar:
        perm = torch.randperm(n, device=device, generator=gen)
        # Per-step sums stay on the device: one synchronisation per epoch, not per step.
        step_sums = torch.zeros(n_steps, 2, device=device)  # sum over the batch of log p(x|z) and of KL
        for step in range(n_steps):
            idx = perm[step * batch_size : (step + 1) * batch_size]
            x = train_x.index_select(0, idx)  # 4x to 7x faster than train_x[idx] here
            eps = torch.randn((1, len(x), model.latent_dim), device=device, generator=gen)
            if written_out is not None:
                sums = written_out(x, eps)  # and the gradients of the batch's mean -ELBO in .grad
            else:
                terms = compiled if compiled is not None and len(x) == batch_size else elbo_terms
                with autocast(device, precision):
                    log_px, kl = terms(model, x, eps=eps)
                sums = torch.stack((log_px.sum(), kl.sum()))  # sum over the batch of log p(x|z) and of KL
                loss = (sums[1] - sums[0]) / len(x)  # the mean -ELBO of the batch
                opt.zero_grad()
                loss.backward()
            opt.step()
            step_sums[step] = sums.detach()
        stats = step_sums.cpu()
        if not torch.isfinite(stats).all():
            bad = int((~torch.isfinite(stats).all(1)).nonzero()[0])
            raise DivergedError(
                f"training diverged: the loss is {(stats[bad, 1] - stats[bad, 0]).item()} at epoch {epoch}, step {bad + 1} of {n_steps}; "
                f"likely cause: learning rate too high (train.lr={lr}); lower it and run `dvc repro` again"
            )
        recon, kl_mean = (-stats[:, 0].sum() / n).item(), (stats[:, 1].sum() / n).item()
        record = {"loss": recon + kl_mean, "recon": recon, "kl": kl_mean}
        history.append(record)
        if show_bar:
            bar.set_postfix({"-ELBO": f"{record['loss']:.2f}", "KL": f"{record['kl']:.2f}"})
        else:
            log.info(
                "%s epoch %d/%d: -ELBO %.3f (recon %.3f, KL %.3f) nats/example",
                desc,
                epoch,
                epochs,
                record["loss"],
                record["recon"],
                record["kl"],
            )
        if on_epoch is not None:
            on_epoch(epoch, record)
        if checkpoint is not None and checkpoint_every and epoch % checkpoint_every == 0 and epoch < epochs:
            checkpoint(_state(model, opt, gen, epoch, history))
    model.eval()
    if model.calibrated:
        calibrate_sigma(model, train_x, batch_size, gen)
        history[-1]["sigma"] = model.sigma()
        log.info(
            "%s: calibrated sigma %.5f (the root mean squared error of the training split's reconstructions)", desc, history[-1]["sigma"]
        )
    return history


@torch.no_grad()
def calibrate_sigma(model, x: torch.Tensor, batch_size: int, gen: torch.Generator) -> None:
    """Set a calibrated Gaussian decoder's sigma to its maximum-likelihood value on x: sigma^2 = the
    mean squared error of the reconstructions, one draw z ~ q(z|x) per example (the ELBO's
    reconstruction term, as in training), summed in float64 on the host."""
    from vaebic.device import host_float64
    from vaebic.model import MIN_SIGMA

    squared = torch.empty(len(x), device=x.device)  # per example, summed over pixels; one transfer at the end
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        mu, logvar = model.encode(xb)
        eps = torch.randn(mu.shape, device=x.device, generator=gen)
        means = torch.sigmoid(model.decode(reparameterize(mu, logvar, eps)).float())
        squared[start : start + len(xb)] = (xb.flatten(1) - means).pow(2).sum(1)
    mse = float(host_float64(squared).sum()) / (len(x) * x[0].numel())
    model.log_sigma.fill_(0.5 * math.log(max(mse, MIN_SIGMA**2)))


def _state(model, opt: Adam, gen: torch.Generator, epoch: int, history: list[dict]) -> dict:
    """Everything the next epoch depends on, on the CPU, as plain tensors and values."""
    rng = {"cpu": torch.get_rng_state(), "generator": gen.get_state()}
    if gen.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(gen.device)
    return {
        "epoch": epoch,
        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "adam": opt.state(),
        "rng": rng,
        "history": [dict(r) for r in history],
    }


def _restore(state: dict, model, opt: Adam, gen: torch.Generator) -> None:
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise VaebicError(f"the checkpoint's weights do not fit this model ({str(exc).splitlines()[0]})") from None
    opt.load_state(state["adam"])
    torch.set_rng_state(state["rng"]["cpu"])
    gen.set_state(state["rng"]["generator"])
    if "cuda" in state["rng"]:
        torch.cuda.set_rng_state(state["rng"]["cuda"], gen.device)
