"""The training loop: data resident on the device, shuffled batches by index, Adam, one host
synchronisation per epoch (no per-step `.item()`), a progress bar, a stop on a NaN loss, and
checkpoints to resume from (see vaebic.fit.checkpoint)."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vaebic.device import autocast, cpu_slow_paths_off, host_float64
from vaebic.errors import VaebicError
from vaebic.fit import mlp_step, torch_fast
from vaebic.model.objectives import MIN_SIGMA, elbo_terms, iwae_log_likelihood, reparameterize

log = logging.getLogger("vaebic.training")


class DivergedError(VaebicError):
    """The loss became NaN or infinite."""


class EarlyStopping:
    """When to stop, and which epoch's weights to keep: Keras' and Lightning's EarlyStopping with
    restore_best_weights, on a validation objective where higher is better (nats per example).

    An epoch improves when value - min_delta > best (the best so far); after `patience` epochs in a
    row without improvement, `stop` becomes true. The model kept is the last improving epoch's
    (best_epoch). patience 0 never stops and counts every epoch as the best: the last is kept,
    as a fixed number of epochs does.
    """

    def __init__(self, patience: int, min_delta: float):
        if not patience >= 0 or not min_delta >= 0:  # NaN fails too
            raise ValueError(f"patience must be >= 0 and min_delta >= 0, got {patience} and {min_delta}")
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best, self.best_epoch, self.wait = -math.inf, 0, 0

    def update(self, epoch: int, value: float) -> bool:
        """Take epoch's objective; True when it is the new best (its weights are the ones to keep)."""
        if self.patience == 0 or value - self.min_delta > self.best:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        return False

    @property
    def stop(self) -> bool:
        return self.patience > 0 and self.wait >= self.patience

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = float(state["best"]), int(state["best_epoch"]), int(state["wait"])


class Adam:
    """Adam (Kingma & Ba 2015), the same update as ``torch.optim.Adam(fused=True)``: one fused
    kernel for all parameters instead of a dozen passes over them (vaebic.fit.torch_fast.adam_step).
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

    def set_lr(self, lr: float) -> None:
        """Change the learning rate; the moments and step counts carry on."""
        self.lr = lr
        self._step = torch_fast.adam_step(self.params, self.exp_avg, self.exp_avg_sq, self.steps, lr=lr, betas=self.betas, eps=self.eps)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state(self) -> dict:
        return {
            "lr": self.lr,
            **{name: [t.to("cpu", copy=True) for t in getattr(self, name)] for name in ("exp_avg", "exp_avg_sq", "steps")},
        }

    @torch.no_grad()
    def load_state(self, state: dict) -> None:
        for name in ("exp_avg", "exp_avg_sq", "steps"):
            mine, saved = getattr(self, name), state[name]
            if len(saved) != len(mine) or any(a.shape != b.shape for a, b in zip(mine, saved)):
                raise VaebicError(f"the checkpoint's optimiser state ({name}) does not fit this model")
            for a, b in zip(mine, saved):
                a.copy_(b)
        self.set_lr(float(state["lr"]))

    @torch.no_grad()
    def step(self) -> None:
        self._step()


#: The validation objective that early stopping watches: the importance-weighted estimate of
#: log p(x) with K = VALIDATION_K samples per example, the same kind of number as the BIC's ln L̂
#: (the ELBO peaks earlier, when the encoder starts to overfit while the decoder, the model whose
#: likelihood is compared, still improves: benchmarks/README.md, "Early stopping"). Its noise is
#: drawn from a generator seeded afresh each epoch: every epoch is judged on the same draws.
VALIDATION_K = 10
#: the learning rate is multiplied by this after every `lr_patience` epochs without improvement
LR_FACTOR = 0.5
#: examples per block in the validation and training-split evaluations (memory, not numbers)
EVAL_BATCH = 500


@dataclass
class Fit:
    """What train_vae did: one record per epoch, the epoch whose weights the model holds at the
    end (the best validation epoch), and why training ended: "plateau" (no improvement for
    `patience` epochs) or "cap" (train.epochs reached first)."""

    history: list[dict]
    best_epoch: int
    stop_reason: str

    @property
    def epochs_run(self) -> int:
        return len(self.history)


@torch.no_grad()
def validation_objective(model, x: torch.Tensor, seed: int, precision: str) -> float:
    """Mean importance-weighted estimate of log p(x) over x (K = VALIDATION_K), nats per example,
    on draws from a generator seeded with seed: the same draws every time it is called."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    with autocast(x.device, precision):
        est = iwae_log_likelihood(model, x, VALIDATION_K, generator=gen, batch_size=EVAL_BATCH)
    return float(host_float64(est.log_px).mean())


@torch.no_grad()
def split_elbo(model, x: torch.Tensor, seed: int, precision: str) -> float:
    """Mean ELBO over x, one draw z ~ q(z|x) per example from a generator seeded with seed, nats per example."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    total = 0.0
    for start in range(0, len(x), EVAL_BATCH):
        with autocast(x.device, precision):
            log_px, kl = elbo_terms(model, x[start : start + EVAL_BATCH], generator=gen)
        total += float(host_float64(log_px - kl).sum())
    return total / len(x)


@cpu_slow_paths_off()
def train_vae(
    model,
    train_x: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    val_x: torch.Tensor | None = None,
    patience: int = 0,
    min_delta: float = 0.0,
    lr_patience: int = 0,
    on_epoch: Callable[[int, dict], None] | None = None,
    desc: str = "train",
    precision: str = "float32",
    compile: bool = False,
    resume: dict | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    checkpoint_every: int = 1,
    autograd: bool = False,
) -> Fit:
    """Maximise the mean ELBO of train_x (already on the model's device, float, shape (N, D)) for
    at most `epochs` epochs, stopping early on the plateau of the validation split val_x.

    Early stopping (EarlyStopping): after each epoch the validation objective (the
    importance-weighted estimate of log p(x) on val_x, K = VALIDATION_K, nats per example) is
    measured; after `patience` epochs without an improvement of more than min_delta, training
    stops and the model gets back the weights of its best epoch. patience 0 trains all `epochs`
    and keeps the last (val_x, if given, is still measured). lr_patience > 0 halves the learning
    rate after every lr_patience epochs without improvement (reduce on plateau, LR_FACTOR).
    Nothing depends on `epochs` but where training ends: a larger cap that is not reached gives
    the same weights, bit for bit.

    Returns a Fit: one record per epoch (see _epoch and _judge), the best epoch and the stop reason.
    on_epoch(epoch, record) is called after every epoch (1-based), e.g. to log to MLflow.
    precision, compile and autograd choose how the gradients are computed (see _step_function).
    checkpoint(state) is called every checkpoint_every epochs (0: never) but the last, with the
    training state (see _state); passing such a state back as resume= continues from its epoch and
    ends with the same weights, bit for bit, as a run that was never interrupted (same device, same torch).
    """
    gen, opt, step, rule = _start(model, train_x, val_x, seed, lr, batch_size, patience, min_delta, precision, compile, autograd)
    best, history, start = _resume(resume, model, opt, gen, rule, desc, epochs)
    progress = Progress(desc, start, epochs, patience)
    model.train()
    for epoch in range(start, epochs + 1):
        record = _epoch(model, train_x, batch_size, gen, step, opt, epoch, lr)
        best = _judge(model, record, rule, opt, best, train_x, val_x, seed, precision, batch_size, lr, lr_patience)
        history.append(record)
        progress.show(epoch, record, rule)
        if on_epoch is not None:
            on_epoch(epoch, record)
        if rule.stop:
            break
        if checkpoint is not None and checkpoint_every and epoch % checkpoint_every == 0 and epoch < epochs:
            checkpoint(_state(model, opt, gen, epoch, history, rule, best))
    progress.close()
    fit = Fit(history, rule.best_epoch, "plateau" if rule.stop else "cap")
    _finish(model, best, fit, desc)
    return fit


def _start(
    model,
    train_x: torch.Tensor,
    val_x: torch.Tensor | None,
    seed: int,
    lr: float,
    batch_size: int,
    patience: int,
    min_delta: float,
    precision: str,
    compile: bool,
    autograd: bool,
) -> tuple[torch.Generator, Adam, Callable, EarlyStopping]:
    """What a run is made of, in this order (the order the random numbers are drawn in): torch's
    global generator seeded with seed; the generator of the batches' order and noise, seeded with
    seed too; Adam; the step function; the stopping rule."""
    if patience and val_x is None:
        raise ValueError("early stopping (patience > 0) needs a validation split val_x")
    torch.manual_seed(seed)
    gen = torch.Generator(device=train_x.device).manual_seed(seed)
    opt = Adam(model.parameters(), lr=lr)
    step = _step_function(model, opt, batch_size, precision, compile, autograd)
    return gen, opt, step, EarlyStopping(patience, min_delta)


def _resume(
    resume: dict | None, model, opt: Adam, gen: torch.Generator, rule: EarlyStopping, desc: str, epochs: int
) -> tuple[dict | None, list[dict], int]:
    """(the best epoch's weights, the history, the first epoch to run): from scratch (None, [], 1)
    without resume, else the checkpoint's state put back (see _restore) and its next epoch."""
    if resume is None:
        return None, [], 1
    best = _restore(resume, model, opt, gen, rule)
    history, start = list(resume["history"]), resume["epoch"] + 1
    log.info("%s: resuming at epoch %d of at most %d", desc, start, epochs)
    return best, history, start


def _judge(
    model,
    record: dict,
    rule: EarlyStopping,
    opt: Adam,
    best: dict | None,
    train_x: torch.Tensor,
    val_x: torch.Tensor | None,
    seed: int,
    precision: str,
    batch_size: int,
    lr: float,
    lr_patience: int,
) -> dict | None:
    """After an epoch's steps: the model measured as it would be written (_measure: a calibrated
    sigma, and val_iwae when val_x is given, also with patience 0), a diverged estimate refused,
    and the stopping rule told. An epoch that becomes the best has its weights copied and the
    training split's ELBO measured (record's train_elbo: the candidates for the kept weights);
    otherwise, with lr_patience > 0, the learning rate is multiplied by LR_FACTOR after every
    lr_patience epochs without improvement (reduce on plateau). Returns the best weights so far."""
    epoch = record["epoch"]
    model.eval()  # the model as it would be written: a calibrated sigma in use, not each batch's own
    _measure(model, record, train_x, val_x, seed, precision, batch_size)
    if not math.isfinite(record.get("val_iwae", 0.0)):
        raise DivergedError(f"training diverged: the validation estimate is {record['val_iwae']} at epoch {epoch}; {_lr_hint(lr)}")
    if rule.update(epoch, record.get("val_iwae", math.nan)):
        best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        record["train_elbo"] = split_elbo(model, train_x, seed, precision)
    elif lr_patience and rule.wait % lr_patience == 0:
        opt.set_lr(opt.lr * LR_FACTOR)  # the next epoch runs with it
    model.train()
    return best


def _measure(model, record: dict, train_x: torch.Tensor, val_x: torch.Tensor | None, seed: int, precision: str, batch_size: int) -> None:
    """After an epoch: a calibrated Gaussian decoder's sigma set from the training split (it is part
    of the model, so its validation estimate and its best-epoch weights carry it), then the
    validation objective, into record."""
    if model.calibrated:
        calibrate_sigma(model, train_x, batch_size, torch.Generator(device=train_x.device).manual_seed(seed))
        record["sigma"] = model.sigma()
    if val_x is not None:
        record["val_iwae"] = validation_objective(model, val_x, seed, precision)


def _step_function(model, opt: Adam, batch_size: int, precision: str, compile: bool, autograd: bool) -> Callable:
    """step(x, eps) -> tensor([sum of log p(x|z), sum of KL]) over the batch, with the gradients of
    the batch's mean -ELBO in .grad: the written-out MLP step where it applies, autograd elsewhere.

    An MLP (not compiled) takes its gradients from vaebic.fit.mlp_step (the backward pass written out,
    the same gradients, 5% to 20% faster on a CPU, far fewer kernel launches on a GPU);
    autograd=True makes autograd compute them anyway. precision 'bfloat16' runs the network's
    matrix multiplies in bf16 (the written-out step, or autograd under bf16 autocast); compile=True
    compiles the loss and, through AOTAutograd, its backward with torch.compile (worth it on a GPU
    for long runs; its first step takes tens of seconds to compile; see vaebic.device.compile_setting).
    """
    if not autograd and mlp_step.supports(model, precision, compile):
        return mlp_step.MLPStep(model, precision)
    # Compiled for the full batch size only: the last, shorter batch of an epoch runs eagerly
    # rather than triggering a second compilation.
    compiled = torch.compile(elbo_terms, dynamic=False) if compile else None

    def step(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        terms = compiled if compiled is not None and len(x) == batch_size else elbo_terms
        with autocast(x.device, precision):
            log_px, kl = terms(model, x, eps=eps)
        sums = torch.stack((log_px.sum(), kl.sum()))
        opt.zero_grad()
        ((sums[1] - sums[0]) / len(x)).backward()  # the mean -ELBO of the batch
        return sums.detach()

    return step


def _epoch(model, train_x: torch.Tensor, batch_size: int, gen: torch.Generator, step, opt, epoch: int, lr: float) -> dict:
    """One pass over train_x in shuffled batches; its record, nats per example: loss (= -ELBO),
    recon (-sum of log p(x|z)) and kl, summed over the epoch's steps / N; and the epoch's lr."""
    n, device = len(train_x), train_x.device
    n_steps = math.ceil(n / batch_size)
    perm = torch.randperm(n, device=device, generator=gen)
    # Per-step sums stay on the device: one synchronisation per epoch, not per step.
    step_sums = torch.zeros(n_steps, 2, device=device)  # sum over the batch of log p(x|z) and of KL
    for i in range(n_steps):
        x = train_x.index_select(0, perm[i * batch_size : (i + 1) * batch_size])  # 4x to 7x faster than train_x[idx] here
        eps = torch.randn((1, len(x), model.latent_dim), device=device, generator=gen)
        step_sums[i] = step(x, eps)
        opt.step()
    stats = step_sums.cpu()
    if not torch.isfinite(stats).all():
        bad = int((~torch.isfinite(stats).all(1)).nonzero()[0])
        raise DivergedError(
            f"training diverged: the loss is {(stats[bad, 1] - stats[bad, 0]).item()} at epoch {epoch}, step {bad + 1} of {n_steps}; "
            + _lr_hint(lr)
        )
    recon, kl = (-stats[:, 0].sum() / n).item(), (stats[:, 1].sum() / n).item()
    return {"epoch": epoch, "loss": recon + kl, "recon": recon, "kl": kl, "lr": opt.lr}


def _lr_hint(lr: float) -> str:
    return f"likely cause: learning rate too high (train.lr={lr}); lower it and run `dvc repro` again"


class Progress:
    """A progress bar on a terminal; elsewhere (CI, DVC's captured output) a log line every
    LOG_EVERY epochs and at the first. With early stopping the last epoch is not known in advance:
    the bar counts epochs and shows the best one and the epochs since, instead of a share of the cap."""

    LOG_EVERY = 10

    def __init__(self, desc: str, start: int, epochs: int, patience: int):
        from tqdm import tqdm

        self.desc, self.epochs, self.start, self.tty = desc, epochs, start, sys.stderr.isatty()
        total = None if patience else epochs
        self.bar = tqdm(desc=desc, unit="epoch", disable=not self.tty, dynamic_ncols=True, initial=start - 1, total=total)

    def show(self, epoch: int, record: dict, rule: EarlyStopping) -> None:
        val = record.get("val_iwae")
        if self.tty:
            shown = {"-ELBO": f"{record['loss']:.2f}", "KL": f"{record['kl']:.2f}"}
            if val is not None:
                shown.update({"val": f"{val:.2f}", "best": rule.best_epoch})
            if rule.patience:
                shown["no gain"] = f"{rule.wait}/{rule.patience}"
            self.bar.set_postfix(shown)
            self.bar.update()
            return
        if epoch != self.start and epoch % self.LOG_EVERY:
            return
        line = "%s epoch %d (at most %d): -ELBO %.3f (recon %.3f, KL %.3f) nats/example"
        args = [self.desc, epoch, self.epochs, record["loss"], record["recon"], record["kl"]]
        if val is not None:
            line += "; validation log p(x) >= %.3f, best epoch %d"
            args += [val, rule.best_epoch]
            if rule.patience:
                line += " (%d of %d epochs without improvement)"
                args += [rule.wait, rule.patience]
        log.info(line, *args)

    def close(self) -> None:
        self.bar.close()


def _finish(model, best: dict | None, fit: Fit, desc: str) -> None:
    """Give the model its best epoch's weights (and a calibrated sigma, that epoch's), and say how training ended."""
    if best is not None and fit.best_epoch != fit.epochs_run:
        model.load_state_dict(best)
    model.eval()
    how = "stopped on the validation plateau" if fit.stop_reason == "plateau" else "reached the cap (train.epochs)"
    last, kept = fit.history[-1], fit.history[fit.best_epoch - 1]
    log.info(
        "%s: %s after %d epochs (last: -ELBO %.3f nats/example); the model is epoch %d's%s%s",
        desc,
        how,
        fit.epochs_run,
        last["loss"],
        fit.best_epoch,
        f" (validation log p(x) >= {kept['val_iwae']:.3f})" if "val_iwae" in kept else "",
        f", sigma {kept['sigma']:.5f} (calibrated: the root mean squared error of the training split's reconstructions)"
        if "sigma" in kept
        else "",
    )


@torch.no_grad()
def calibrate_sigma(model, x: torch.Tensor, batch_size: int, gen: torch.Generator) -> None:
    """Set a calibrated Gaussian decoder's sigma to its maximum-likelihood value on x: sigma^2 = the
    mean squared error of the reconstructions, one draw z ~ q(z|x) per example (the ELBO's
    reconstruction term, as in training), summed in float64 on the host."""
    from vaebic.device import host_float64

    squared = torch.empty(len(x), device=x.device)  # per example, summed over pixels; one transfer at the end
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        mu, logvar = model.encode(xb)
        eps = torch.randn(mu.shape, device=x.device, generator=gen)
        means = torch.sigmoid(model.decode(reparameterize(mu, logvar, eps)).float())
        squared[start : start + len(xb)] = (xb.flatten(1) - means).pow(2).sum(1)
    mse = float(host_float64(squared).sum()) / (len(x) * x[0].numel())
    model.log_sigma.fill_(0.5 * math.log(max(mse, MIN_SIGMA**2)))


def _state(model, opt: Adam, gen: torch.Generator, epoch: int, history: list[dict], rule: EarlyStopping, best: dict | None) -> dict:
    """Everything the next epoch depends on, on the CPU, as plain tensors and values: the weights,
    the best epoch's weights, the stopping rule's count, Adam's state, the random-number
    generators, the history and the epoch."""
    rng = {"cpu": torch.get_rng_state(), "generator": gen.get_state()}
    if gen.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(gen.device)
    return {
        "epoch": epoch,
        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "best_model": {k: v.to("cpu", copy=True) for k, v in best.items()} if best is not None else {},
        "stopping": rule.state(),
        "adam": opt.state(),
        "rng": rng,
        "history": [dict(r) for r in history],
    }


def _restore(state: dict, model, opt: Adam, gen: torch.Generator, rule: EarlyStopping) -> dict | None:
    """Put a checkpoint's training state back; return the best epoch's weights (on the model's device)."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise VaebicError(f"the checkpoint's weights do not fit this model ({str(exc).splitlines()[0]})") from None
    opt.load_state(state["adam"])
    rule.load_state(state["stopping"])
    torch.set_rng_state(state["rng"]["cpu"])
    gen.set_state(state["rng"]["generator"])
    if "cuda" in state["rng"]:
        torch.cuda.set_rng_state(state["rng"]["cuda"], gen.device)
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in state["best_model"].items()} or None
