"""The training loop: data resident on the device, shuffled batches by index, Adam, one host
synchronisation per epoch (no per-step `.item()`), a progress bar, and a stop on a NaN loss."""

from __future__ import annotations

import logging
import math
import sys
from typing import Callable

import torch

from vaebic.errors import VaebicError
from vaebic.objectives import elbo_terms

log = logging.getLogger("vaebic.training")


class DivergedError(VaebicError):
    """The loss became NaN or infinite."""


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
) -> list[dict]:
    """Maximise the mean ELBO of train_x (already on the model's device, float, shape (N, D)).

    Returns one record per epoch: mean loss (-ELBO), reconstruction term and KL, nats per example.
    on_epoch(epoch, record) is called after every epoch (1-based), e.g. to log to MLflow.
    """
    from tqdm import tqdm

    device = train_x.device
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(train_x)
    n_steps = math.ceil(n / batch_size)
    model.train()
    history: list[dict] = []
    show_bar = sys.stderr.isatty()
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not show_bar, dynamic_ncols=True)
    for epoch in bar:
        perm = torch.randperm(n, device=device, generator=gen)
        # Per-step sums stay on the device: one synchronisation per epoch, not per step.
        step_stats = torch.zeros(n_steps, 3, device=device)
        for step in range(n_steps):
            idx = perm[step * batch_size:(step + 1) * batch_size]
            x = train_x[idx]
            log_px, kl = elbo_terms(model, x, n_samples=1, generator=gen)
            loss = (kl - log_px).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step_stats[step] = torch.stack([loss.detach(), -log_px.detach().mean(), kl.detach().mean()]) * len(idx)
        stats = step_stats.cpu()
        if not torch.isfinite(stats).all():
            bad = int((~torch.isfinite(stats).all(1)).nonzero()[0])
            raise DivergedError(
                f"training diverged: the loss is {stats[bad, 0].item()} at epoch {epoch}, step {bad + 1} of {n_steps}; "
                f"likely cause: learning rate too high (train.lr={lr}); lower it and run `dvc repro` again")
        totals = stats.sum(0) / n
        record = {"loss": totals[0].item(), "recon": totals[1].item(), "kl": totals[2].item()}
        history.append(record)
        if show_bar:
            bar.set_postfix({"-ELBO": f"{record['loss']:.2f}", "KL": f"{record['kl']:.2f}"})
        else:
            log.info("%s epoch %d/%d: -ELBO %.3f (recon %.3f, KL %.3f) nats/example", desc, epoch, epochs, record["loss"], record["recon"], record["kl"])
        if on_epoch is not None:
            on_epoch(epoch, record)
    model.eval()
    return history
