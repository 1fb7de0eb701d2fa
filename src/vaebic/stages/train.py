"""Stage `train@<latent_dim>-<seed>`: train one VAE and write models/<latent_dim>-<seed>/.

With --checkpoint, the training state is saved every train.checkpoint_every epochs; a stage that
was interrupted (Ctrl-C, SIGTERM, SIGKILL, a crash) resumes from it when run again, and ends with
the weights an uninterrupted run would have had. The checkpoint is removed once the model is written.

This module is the train stage's wiring: one model's MLflow run, resuming from a checkpoint
and saving new ones, the out-of-memory advice, and the model folder it writes.

Torch and MLflow are imported only once the prepared data have been read and checked, so that a
wrong input fails at once; MLflow in the stage's tracking process (vaebic.tracking_process),
which loads it on the other core while this process loads torch.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from vaebic.cli import stage_parser
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
    it, and remembers the last epoch it saved."""

    def __init__(self, path: Path | None, key: str, last_saved: int = 0):
        self.path, self.key, self.last_saved, self.run_id = path, key, last_saved, None

    def __call__(self, state: dict) -> None:
        from vaebic.fit import checkpoint

        checkpoint.save(self.path, {**state, "key": self.key, "mlflow_run_id": self.run_id})
        self.last_saved = state["epoch"]

    def saved_epoch(self, epochs: int) -> int:
        """The epoch of this training's checkpoint on disk (0: none). Read from the file, since
        Ctrl-C can land after a save replaced the file and before last_saved was updated."""
        from vaebic.fit import checkpoint

        try:
            state = checkpoint.load_checkpoint(self.path, self.key, epochs)
        except VaebicError:  # unreadable: what this process knows
            return self.last_saved
        return state["epoch"] if state is not None else self.last_saved

    def kept(self, epochs: int, epoch: int) -> str:
        return (
            f"the checkpoint of epoch {epoch} (of at most {epochs}) is kept in {self.path}; "
            "run the same `dvc repro` command again to resume from it"
        )


#: history.json's per-epoch values and their MLflow metric names (absent values are not logged)
EPOCH_METRICS = {
    "loss": "train_loss",
    "recon": "train_recon",
    "kl": "train_kl",
    "lr": "lr",
    "val_iwae": "val_iwae",
    "train_elbo": "train_elbo",
    "sigma": "sigma",
}


#: seconds between writes of the per-epoch metrics to MLflow
METRICS_EVERY_S = 1.0


class EpochLog:
    """Each epoch's training losses, learning rate and validation estimate into the MLflow run,
    with the step and time of its epoch, by write([(epoch, {metric: value}, time in ms), ...]),
    in batches: when every_s seconds have passed since the last write, whenever flush() is called
    (before each checkpoint), and when a `with` block over it ends, however it ends (finished,
    Ctrl-C, an error). One write per epoch cost about 4 ms (a SQLite transaction through MLflow's
    ORM), several per cent of a small model's epoch. An epoch longer than every_s is written as it
    ends; shorter ones reach the MLflow UI within every_s and an epoch. The run holds every epoch
    that a checkpoint holds."""

    def __init__(self, write, every_s: float | None = None):
        self.write, self.every_s = write, METRICS_EVERY_S if every_s is None else every_s
        self.pending: list[tuple[int, dict, int]] = []
        self.written = time.monotonic()

    def __call__(self, epoch: int, rec: dict) -> None:
        self.pending.append((epoch, {name: rec[key] for key, name in EPOCH_METRICS.items() if key in rec}, int(time.time() * 1000)))
        if time.monotonic() - self.written >= self.every_s:
            self.flush()

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        self.write(pending)
        self.written = time.monotonic()

    def __enter__(self) -> EpochLog:
        return self

    def __exit__(self, *exc) -> None:
        self.flush()


def stopping_record(fit, pt: dict) -> dict:
    """How a model's training ended (models/<d>-<seed>/stopping.json, and its MLflow run)."""
    return {
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "stop_reason": fit.stop_reason,
        "cap": pt["epochs"],
        "patience": pt["patience"],
        "min_delta": pt["min_delta"],
        "lr_patience": pt["lr_patience"],
    }


def training_oom_advice(batch_size: int) -> str:
    return (
        f"the batch size is train.batch_size={batch_size}: lower it (e.g. to {max(1, batch_size // 2)}), or use smaller model.hidden_sizes"
    )


def load_data(data_dir: str | Path, likelihood: str, patience: int):
    """The prepared data of data_dir, which must be prepared for likelihood and, for early stopping, have a validation split."""
    from vaebic.data.prepared import load_prepared

    prepared = load_prepared(data_dir)
    meta = prepared.meta
    if meta["likelihood"] != likelihood:
        raise VaebicError(f"{data_dir} was prepared for the {meta['likelihood']} likelihood, params say {likelihood}; run `dvc repro`")
    if patience and not len(prepared.validation):
        raise VaebicError(
            f"{data_dir} has no validation split, which train.patience={patience} needs; set data.validation_fraction > 0 and run `dvc repro`"
        )
    return prepared


def build_model(meta: dict, pm: dict, d: int):
    from vaebic.model.vae import VAE, VAEConfig

    return VAE(VAEConfig(meta["input_dim"], d, image_shape=meta["image_shape"], **pm))


def resolve_device(pt: dict, n_examples: int):
    """(device, its facts, the train settings this run actually uses, why torch.compile is on or off)."""
    from vaebic import device as devices

    device = devices.pick_device(pt["device"])
    facts = devices.facts(device)
    steps_per_epoch = -(-n_examples // pt["batch_size"])
    precision, precision_why = devices.resolve_precision(pt["precision"], facts, "train.precision")
    compile_, compile_why = devices.compile_setting(pt["compile"], facts, steps_per_epoch)
    devices.configure(device, precision)
    resolved = {**pt, "precision": precision, "compile": compile_, "precision_why": precision_why}  # what this run actually does
    return device, facts, resolved, compile_why


def run_params(job: Job, model) -> dict:
    """The MLflow params of a model's run."""
    from vaebic.model.vae import count_params

    meta = job.meta
    return {
        "latent_dim": job.latent_dim,
        "seed": job.seed,
        "dataset": meta["dataset"],
        "n_train": meta["n_train"],
        "n_validation": meta.get("n_validation", 0),
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
    pm, pt = p["model"], p["train"]
    checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
    prepared = load_data(data_dir, pm["likelihood"], pt["patience"])
    from vaebic.tracking_process import TrackingProcess

    with TrackingProcess() as tracker:  # it imports MLflow while this process imports torch
        _train(tracker, p, params_path, prepared, out, latent_dim, seed, checkpoint_path)


def _train(tracker, p: dict, params_path: str, prepared, out: str, d: int, seed: int, checkpoint_path: Path | None) -> None:
    """train's work once the data are read and the tracking process is starting: the model, its
    checkpoint to resume from, and training inside its MLflow run (tracked_training)."""
    pm, pt, meta = p["model"], p["train"], prepared.meta
    import torch

    from vaebic import device as devices
    from vaebic.fit import checkpoint

    devices.flush_subnormals_everywhere()  # before the first parallel torch operation (see there)
    device, facts, resolved, compile_why = resolve_device(pt, len(prepared.train))
    x = devices.to_device(prepared.train, device, "training data")
    val = devices.to_device(prepared.validation, device, "validation data") if len(prepared.validation) else None
    torch.manual_seed(seed)
    model = build_model(meta, pm, d).to(device)
    log.info(
        "training latent_dim=%d seed=%d on %s (%s): %d examples, %s, %s (%s), torch.compile %s (%s)",
        d,
        seed,
        device,
        facts.name,
        len(x),
        budget_text(pt, len(prepared.validation)),
        resolved["precision"],
        resolved["precision_why"],
        "on" if resolved["compile"] else "off",
        compile_why,
    )
    key = checkpoint.config_key(latent_dim=d, seed=seed, model=pm, train=resolved, data_fingerprint=meta["fingerprint"], device=str(device))
    resume = checkpoint.load_checkpoint(checkpoint_path, key, pt["epochs"]) if checkpoint_path else None
    saver = Checkpointer(checkpoint_path, key, resume["epoch"] if resume else 0)
    job = Job(p, params_path, meta, d, seed, out, device, resolved)
    try:
        fit = tracked_training(tracker, job, model, (x, val), resume, saver)
    except KeyboardInterrupt:
        if saver.path and (epoch := saver.saved_epoch(pt["epochs"])):
            raise KeyboardInterrupt(saver.kept(pt["epochs"], epoch)) from None
        raise
    if checkpoint_path:
        checkpoint_path.unlink(missing_ok=True)  # the model folder now holds the finished model
    log.info(
        "wrote %s: epoch %d of %d (%s), -ELBO %.3f nats/example on the training split",
        out,
        fit.best_epoch,
        fit.epochs_run,
        fit.stop_reason,
        fit.history[fit.best_epoch - 1]["loss"],
    )


def budget_text(pt: dict, n_validation: int) -> str:
    """How long training goes, in words for the stage's log."""
    if not pt["patience"]:
        return f"{pt['epochs']} epochs (no early stopping)"
    return (
        f"until the estimate on {n_validation} validation examples has not risen by more than {pt['min_delta']:g} nats for "
        f"{pt['patience']} epochs (at most {pt['epochs']})"
    )


def tracked_training(tracker, job: Job, model, data: tuple, resume: dict | None, saver: Checkpointer):
    """Train on data = (training split, validation split or None) and write the model folder
    inside the model's MLflow run, whose calls tracker (a TrackingProcess) makes; return the Fit."""
    from vaebic import tracking
    from vaebic.cli import compute
    from vaebic.files import atomic_folder, write_json_atomic
    from vaebic.fit.training import train_vae
    from vaebic.model.vae import save_model
    from vaebic.selection.trajectory import STOPPING_FILE

    p, pt, meta, d, seed = job.params, job.params["train"], job.meta, job.latent_dim, job.seed
    tags = {**tracking.provenance(job.stage, job.params_path, meta["fingerprint"]), "dataset": meta["dataset"]}
    with tracker.model_run(p["mlflow"]["experiment"], d, seed, tracking.sweep_key(p, meta["fingerprint"]), tags) as run_id:
        tracker.call("log_params", run_params(job, model))
        epoch_log = EpochLog(lambda epochs: tracker.call("log_epochs", epochs))
        if resume is not None:
            tracker.call("link_resumed", resume["mlflow_run_id"] or None, resume["epoch"])
            for epoch, rec in enumerate(resume["history"], 1):  # the whole curve in this run too
                epoch_log(epoch, rec)
            epoch_log.flush()
        saver.run_id = run_id

        def save(state: dict) -> None:  # the run holds every epoch the checkpoint holds
            epoch_log.flush()
            saver(state)

        with compute(job.stage, training_oom_advice(pt["batch_size"])), epoch_log:
            fit = train_vae(
                model,
                data[0],
                epochs=pt["epochs"],
                batch_size=pt["batch_size"],
                lr=pt["lr"],
                seed=seed,
                val_x=data[1],
                patience=pt["patience"],
                min_delta=pt["min_delta"],
                lr_patience=pt["lr_patience"],
                on_epoch=epoch_log,
                desc=f"d={d} seed={seed}",
                precision=job.resolved["precision"],
                compile=job.resolved["compile"],
                resume=resume,
                checkpoint=save if saver.path else None,
                checkpoint_every=pt["checkpoint_every"],
            )
        stopping = stopping_record(fit, pt)
        tracker.call("log_metrics", {"best_epoch": fit.best_epoch, "epochs_run": fit.epochs_run})
        tracker.call("set_tags", {"stop_reason": fit.stop_reason})
        with atomic_folder(job.out) as tmp:
            save_model(model, tmp, extra_config={"seed": seed, "data_fingerprint": meta["fingerprint"], "train": job.resolved})
            write_json_atomic(tmp / "history.json", fit.history)
            write_json_atomic(tmp / STOPPING_FILE, stopping)
            tracking.save_run_id(tmp, run_id)
    return fit


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, per_model=True)
    ap.add_argument("--out", required=True, help="model folder to write, e.g. models/8-0")
    ap.add_argument("--checkpoint", type=Path, help="checkpoint file to save to and resume from, e.g. checkpoints/8-0.pt")
    args = ap.parse_args(argv)
    train(args.params, args.data, args.out, args.latent_dim, args.seed, checkpoint_path=args.checkpoint)
