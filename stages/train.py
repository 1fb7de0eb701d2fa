"""Stage `train@<latent_dim>-<seed>`: train one VAE and write models/<latent_dim>-<seed>/."""

import logging
import os

from vaebic.cli import compute_timer, explain_out_of_memory, run_cli, stage_parser
from vaebic.errors import VaebicError

log = logging.getLogger("vaebic.train")


def main() -> None:
    ap = stage_parser(__doc__, per_model=True)
    ap.add_argument("--out", required=True, help="model folder to write, e.g. models/8-0")
    args = ap.parse_args()
    from vaebic import data, params, tracking

    p = params.load(args.params)
    pm = p["model"]
    d, seed = args.latent_dim, args.seed
    train_x, _, meta = data.load_prepared(args.data)
    if meta["likelihood"] != pm["likelihood"]:
        raise VaebicError(f"{args.data} was prepared for the {meta['likelihood']} likelihood, params say {pm['likelihood']}; run `dvc repro`")

    import torch

    from vaebic.files import atomic_folder, write_json_atomic
    from vaebic.model import VAE, count_params, pick_device, save_model
    from vaebic.training import train_vae

    device = pick_device(p["train"]["device"])
    x = torch.from_numpy(train_x).to(device=device, dtype=torch.float32)
    torch.manual_seed(seed)
    model = VAE(meta["input_dim"], d, pm["hidden_sizes"], meta["image_shape"], pm["likelihood"], pm["gaussian_sigma"],
                pm["architecture"], pm["conv_channels"]).to(device)
    stage = os.environ.get("DVC_STAGE", f"train@{d}-{seed}")
    log.info("training latent_dim=%d seed=%d on %s: %d examples, %d epochs", d, seed, device, len(x), p["train"]["epochs"])

    tags = {**tracking.provenance(stage, args.params, meta["fingerprint"]), "dataset": meta["dataset"]}
    sweep = tracking.sweep_key(p, meta["fingerprint"])
    with tracking.model_run(p["mlflow"]["experiment"], d, seed, sweep, tags) as run:
        tracking.log_params({
            "latent_dim": d, "seed": seed, "dataset": meta["dataset"], "n_train": meta["n_train"], "device": str(device),
            **pm,  # likelihood, gaussian_sigma, architecture, hidden_sizes, conv_channels
            **{f"train.{k}": v for k, v in p["train"].items() if k != "device"},
            "n_params_decoder": count_params(model, "decoder"), "n_params_all": count_params(model, "all"),
        })

        def on_epoch(epoch, rec):
            tracking.log_metrics({"train_loss": rec["loss"], "train_recon": rec["recon"], "train_kl": rec["kl"]}, step=epoch)

        pt = p["train"]
        oom_fix = (f"the batch size is train.batch_size={pt['batch_size']}: lower it (e.g. to {max(1, pt['batch_size'] // 2)}), "
                   "use smaller model.hidden_sizes, or set train.precision: bfloat16")
        with compute_timer(stage), explain_out_of_memory(oom_fix):
            history = train_vae(model, x, epochs=pt["epochs"], batch_size=pt["batch_size"], lr=pt["lr"], seed=seed, on_epoch=on_epoch,
                                desc=f"d={d} seed={seed}", precision=pt["precision"], compile=pt["compile"])
        with atomic_folder(args.out) as tmp:
            save_model(model, tmp, extra_config={"seed": seed, "data_fingerprint": meta["fingerprint"], "train": p["train"]})
            write_json_atomic(tmp / "history.json", history)
            tracking.save_run_id(tmp, run.info.run_id)
    log.info("wrote %s (final -ELBO %.3f nats/example on the training split)", args.out, history[-1]["loss"])


if __name__ == "__main__":
    run_cli(main)
