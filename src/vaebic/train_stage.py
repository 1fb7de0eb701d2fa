"""The train stage's wiring (stages/train.py): one model's MLflow run, resuming from a checkpoint
and saving new ones, the out-of-memory advice, and the model folder it writes.

Torch and MLflow are imported only once the prepared data have been read and checked, so that a
wrong input fails at once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from vaebic.errors import VaebicError

log = logging.getLogger("vaebic.train")  # the stage's name in its log lines


@dataclass(frozen=True)
class Job:
    """What one train stage trains, from which params and data, on which device, with the
    settings it resolved (precision, torch.compile)."""

    params: dict
    params_path: str
    meta: dict
    latent_dim: int
    seed: int
    out: str
    device: object
    resolved: dict

    @property
    def stage(self) -> str:
        return os.environ.get("DVC_STAGE", f"train@{self.latent_dim}-{self.seed}")


class Checkpointer:
    """Saves the training state to path with the checkpoint's key and the MLflow run that wrote
    it, and remembers the last epoch saved (that Ctrl-C names)."""

    def __init__(self, path: Path | None, key: str, last_saved: int = 0):
        self.path, self.key, self.last_saved, self.run_id = path, key, last_saved, None

    def __call__(self, state: dict) -> None:
        from vaebic import checkpoint

        checkpoint.save(self.path, {**state, "key": self.key, "mlflow_run_id": self.run_id})
        self.last_saved = state["epoch"]

    def kept(self, epochs: int) -> str:
        return (
            f"the checkpoint of epoch {self.last_saved} of {epochs} is kept in {self.path}; "
            "run the same `dvc repro` command again to resume from it"
        )


def log_epoch(epoch: int, rec: dict) -> None:
    """One epoch's training losses into the active MLflow run."""
    from vaebic import tracking

    tracking.log_metrics({"train_loss": rec["loss"], "train_recon": rec["recon"], "train_kl": rec["kl"]}, step=epoch)


def oom_advice(batch_size: int) -> str:
    return (
        f"the batch size is train.batch_size={batch_size}: lower it (e.g. to {max(1, batch_size // 2)}), or use smaller model.hidden_sizes"
    )


def load_data(data_dir: str | Path, likelihood: str):
    """The training split and meta.json of data_dir, which must be prepared for likelihood."""
    from vaebic import data

    train_x, _, meta = data.load_prepared(data_dir)
    if meta["likelihood"] != likelihood:
        raise VaebicError(f"{data_dir} was prepared for the {meta['likelihood']} likelihood, params say {likelihood}; run `dvc repro`")
    return train_x, meta


def build_model(meta: dict, pm: dict, d: int):
    from vaebic.model import VAE, VAEConfig

    return VAE(VAEConfig(meta["input_dim"], d, image_shape=meta["image_shape"], **pm))


def resolve_device(pt: dict, n_examples: int):
    """(device, its facts, the train settings this run actually uses, why torch.compile is on or off)."""
    from vaebic import device as devices

    device = devices.pick_device(pt["device"])
    facts = devices.facts(device)
    n_steps = pt["epochs"] * -(-n_examples // pt["batch_size"])
    precision, precision_why = devices.resolve_precision(pt["precision"], facts, "train.precision")
    compile_, compile_why = devices.compile_setting(pt["compile"], facts, n_steps)
    devices.configure(device, precision)
    resolved = {**pt, "precision": precision, "compile": compile_, "precision_why": precision_why}  # what this run actually does
    return device, facts, resolved, compile_why


def run_params(job: Job, model) -> dict:
    """The MLflow params of a model's run."""
    from vaebic.model import count_params

    meta = job.meta
    return {
        "latent_dim": job.latent_dim,
        "seed": job.seed,
        "dataset": meta["dataset"],
        "n_train": meta["n_train"],
        "device": str(job.device),
        "data.intensity": meta.get("intensity", {}).get("rule", "not recorded"),
        **job.params["model"],  # likelihood, gaussian_sigma, architecture, hidden_sizes, conv_channels
        **{f"train.{k}": v for k, v in job.resolved.items() if k != "device"},
        "n_params_decoder": count_params(model, "decoder"),
        "n_params_all": count_params(model, "all"),
    }


def train(params_path: str, data_dir: str, out: str, latent_dim: int, seed: int, checkpoint_path: str | Path | None = None) -> None:
    """Train the VAE of (latent_dim, seed) on data_dir's training split and write its folder out
    (weights, config, history, MLflow run id), resuming from checkpoint_path if it holds this
    model's unfinished training; the checkpoint is removed once the model is written."""
    from vaebic import params

    p = params.load(params_path)
    pm, pt, d = p["model"], p["train"], latent_dim
    checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
    train_x, meta = load_data(data_dir, pm["likelihood"])

    import torch

    from vaebic import checkpoint
    from vaebic import device as devices

    device, facts, resolved, compile_why = resolve_device(pt, len(train_x))
    x = devices.to_device(train_x, device, "training data")
    torch.manual_seed(seed)
    model = build_model(meta, pm, d).to(device)
    log.info(
        "training latent_dim=%d seed=%d on %s (%s): %d examples, %d epochs, %s (%s), torch.compile %s (%s)",
        d,
        seed,
        device,
        facts.name,
        len(x),
        pt["epochs"],
        resolved["precision"],
        resolved["precision_why"],
        "on" if resolved["compile"] else "off",
        compile_why,
    )
    key = checkpoint.config_key(latent_dim=d, seed=seed, model=pm, train=resolved, data_fingerprint=meta["fingerprint"], device=str(device))
    resume = checkpoint.load(checkpoint_path, key, pt["epochs"]) if checkpoint_path else None
    saver = Checkpointer(checkpoint_path, key, resume["epoch"] if resume else 0)
    job = Job(p, params_path, meta, d, seed, out, device, resolved)
    try:
        history = tracked_training(job, model, x, resume, saver)
    except KeyboardInterrupt:
        if saver.last_saved:
            raise KeyboardInterrupt(saver.kept(pt["epochs"])) from None
        raise
    if checkpoint_path:
        checkpoint_path.unlink(missing_ok=True)  # the model folder now holds the finished model
    log.info("wrote %s (final -ELBO %.3f nats/example on the training split)", out, history[-1]["loss"])


def tracked_training(job: Job, model, x, resume: dict | None, saver: Checkpointer) -> list[dict]:
    """Train and write the model folder inside the model's MLflow run; return the history."""
    from vaebic import tracking
    from vaebic.cli import compute
    from vaebic.files import atomic_folder, write_json_atomic
    from vaebic.model import save_model
    from vaebic.training import train_vae

    p, pt, meta, d, seed = job.params, job.params["train"], job.meta, job.latent_dim, job.seed
    tags = {**tracking.provenance(job.stage, job.params_path, meta["fingerprint"]), "dataset": meta["dataset"]}
    with tracking.model_run(p["mlflow"]["experiment"], d, seed, tracking.sweep_key(p, meta["fingerprint"]), tags) as run:
        tracking.log_params(run_params(job, model))
        if resume is not None:
            tracking.link_resumed(resume["mlflow_run_id"] or None, resume["epoch"])
            for epoch, rec in enumerate(resume["history"], 1):  # the whole curve in this run too
                log_epoch(epoch, rec)
        saver.run_id = run.info.run_id
        with compute(job.stage, oom_advice(pt["batch_size"])):
            history = train_vae(
                model,
                x,
                epochs=pt["epochs"],
                batch_size=pt["batch_size"],
                lr=pt["lr"],
                seed=seed,
                on_epoch=log_epoch,
                desc=f"d={d} seed={seed}",
                precision=job.resolved["precision"],
                compile=job.resolved["compile"],
                resume=resume,
                checkpoint=saver if saver.path else None,
                checkpoint_every=pt["checkpoint_every"],
            )
        with atomic_folder(job.out) as tmp:
            save_model(model, tmp, extra_config={"seed": seed, "data_fingerprint": meta["fingerprint"], "train": job.resolved})
            write_json_atomic(tmp / "history.json", history)
            tracking.save_run_id(tmp, run.info.run_id)
    return history
