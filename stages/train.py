"""Stage `train@<latent_dim>-<seed>`: train one VAE and write models/<latent_dim>-<seed>/.

With --checkpoint, the training state is saved every train.checkpoint_every epochs; a stage that
was interrupted (Ctrl-C, SIGTERM, SIGKILL, a crash) resumes from it when run again, and ends with
the weights an uninterrupted run would have had. The checkpoint is removed once the model is written.
"""

import logging
import os
from pathlib import Path

from vaebic.cli import compute_timer, explain_out_of_memory, run_cli, stage_parser
from vaebic.errors import VaebicError

log = logging.getLogger("vaebic.train")


def main() -> None:
    ap = stage_parser(__doc__, per_model=True)
    ap.add_argument("--out", required=True, help="model folder to write, e.g. models/8-0")
    ap.add_argument("--checkpoint", type=Path, help="checkpoint file to save to and resume from, e.g. checkpoints/8-0.pt")
    args = ap.parse_args()
    from vaebic import data, params, tracking

    p = params.load(args.params)
    pm, pt = p["model"], p["train"]
    d, seed = args.latent_dim, args.seed
    train_x, _, meta = data.load_prepared(args.data)
    if meta["likelihood"] != pm["likelihood"]:
        raise VaebicError(
            f"{args.data} was prepared for the {meta['likelihood']} likelihood, params say {pm['likelihood']}; run `dvc repro`"
        )

    import torch

    from vaebic import checkpoint
    from vaebic import device as devices
    from vaebic.files import atomic_folder, write_json_atomic
    from vaebic.model import VAE, VAEConfig, count_params, save_model
    from vaebic.training import train_vae

    device = devices.pick_device(pt["device"])
    facts = devices.facts(device)
    n_steps = pt["epochs"] * -(-len(train_x) // pt["batch_size"])
    precision, precision_why = devices.resolve_precision(pt["precision"], facts, "train.precision")
    compile_, compile_why = devices.compile_setting(pt["compile"], facts, n_steps)
    devices.configure(device, precision)
    x = devices.to_device(train_x, device, "training data")
    torch.manual_seed(seed)
    model = VAE(VAEConfig(meta["input_dim"], d, image_shape=meta["image_shape"], **pm)).to(device)
    stage = os.environ.get("DVC_STAGE", f"train@{d}-{seed}")
    log.info(
        "training latent_dim=%d seed=%d on %s (%s): %d examples, %d epochs, %s (%s), torch.compile %s (%s)",
        d,
        seed,
        device,
        facts.name,
        len(x),
        pt["epochs"],
        precision,
        precision_why,
        "on" if compile_ else "off",
        compile_why,
    )
    resolved = {**pt, "precision": precision, "compile": compile_, "precision_why": precision_why}  # what this run actually does

    ckpt = args.checkpoint
    ckpt_key = checkpoint.config_key(
        latent_dim=d, seed=seed, model=pm, train=resolved, data_fingerprint=meta["fingerprint"], device=str(device)
    )
    resume = checkpoint.load(ckpt, ckpt_key, pt["epochs"]) if ckpt else None
    last_saved = resume["epoch"] if resume else 0

    tags = {**tracking.provenance(stage, args.params, meta["fingerprint"]), "dataset": meta["dataset"]}
    sweep = tracking.sweep_key(p, meta["fingerprint"])
    try:
        with tracking.model_run(p["mlflow"]["experiment"], d, seed, sweep, tags) as run:
            tracking.log_params(
                {
                    "latent_dim": d,
                    "seed": seed,
                    "dataset": meta["dataset"],
                    "n_train": meta["n_train"],
                    "device": str(device),
                    "data.intensity": meta.get("intensity", {}).get("rule", "not recorded"),
                    **pm,  # likelihood, gaussian_sigma, architecture, hidden_sizes, conv_channels
                    **{f"train.{k}": v for k, v in resolved.items() if k != "device"},
                    "n_params_decoder": count_params(model, "decoder"),
                    "n_params_all": count_params(model, "all"),
                }
            )

            def on_epoch(epoch, rec):
                tracking.log_metrics({"train_loss": rec["loss"], "train_recon": rec["recon"], "train_kl": rec["kl"]}, step=epoch)

            if resume is not None:
                tracking.link_resumed(resume["mlflow_run_id"] or None, resume["epoch"])
                for epoch, rec in enumerate(resume["history"], 1):  # the whole curve in this run too
                    on_epoch(epoch, rec)

            def save_checkpoint(state):
                nonlocal last_saved
                checkpoint.save(ckpt, {**state, "key": ckpt_key, "mlflow_run_id": run.info.run_id})
                last_saved = state["epoch"]

            oom_fix = (
                f"the batch size is train.batch_size={pt['batch_size']}: lower it (e.g. to {max(1, pt['batch_size'] // 2)}), "
                "or use smaller model.hidden_sizes"
            )
            with compute_timer(stage), explain_out_of_memory(oom_fix):
                history = train_vae(
                    model,
                    x,
                    epochs=pt["epochs"],
                    batch_size=pt["batch_size"],
                    lr=pt["lr"],
                    seed=seed,
                    on_epoch=on_epoch,
                    desc=f"d={d} seed={seed}",
                    precision=precision,
                    compile=compile_,
                    resume=resume,
                    checkpoint=save_checkpoint if ckpt else None,
                    checkpoint_every=pt["checkpoint_every"],
                )
            with atomic_folder(args.out) as tmp:
                save_model(model, tmp, extra_config={"seed": seed, "data_fingerprint": meta["fingerprint"], "train": resolved})
                write_json_atomic(tmp / "history.json", history)
                tracking.save_run_id(tmp, run.info.run_id)
    except KeyboardInterrupt:
        if last_saved:
            raise KeyboardInterrupt(
                f"the checkpoint of epoch {last_saved} of {pt['epochs']} is kept in {ckpt}; "
                "run the same `dvc repro` command again to resume from it"
            ) from None
        raise
    if ckpt:
        ckpt.unlink(missing_ok=True)  # the model folder now holds the finished model
    log.info("wrote %s (final -ELBO %.3f nats/example on the training split)", args.out, history[-1]["loss"])


if __name__ == "__main__":
    run_cli(main)
