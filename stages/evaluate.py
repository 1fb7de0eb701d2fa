"""Stage `evaluate@<latent_dim>-<seed>`: reconstruction, KL, ELBO, the importance-weighted log-likelihood
estimate, per-unit KL and active units of one model, on train and test; each example's ELBO and
importance-weighted estimate beside them (metrics/<d>-<seed>.examples.npz, for select's bootstrap);
the training loss's fall over its last epochs (convergence).

Computation only: no MLflow and no matplotlib here, whose imports would cost more than a small
model's evaluation. The report stage logs these numbers and the model's pictures to its MLflow run.
"""

import logging
from pathlib import Path

from vaebic.cli import compute_timer, explain_out_of_memory, run_cli, stage_parser

log = logging.getLogger("vaebic.evaluate")


def main() -> None:
    ap = stage_parser(__doc__, per_model=True)
    ap.add_argument("--model", required=True, help="model folder, e.g. models/8-0")
    ap.add_argument("--out", required=True, help="metrics file to write, e.g. metrics/8-0.json")
    ap.add_argument("--examples", required=True, help="per-example estimates to write, e.g. metrics/8-0.examples.npz")
    args = ap.parse_args()
    from vaebic import data, params

    p = params.load(args.params)
    d, seed = args.latent_dim, args.seed
    train_x, test_x, meta = data.load_prepared(args.data)

    from vaebic import confidence
    from vaebic import device as devices
    from vaebic.evaluation import evaluate_split, latent_usage, log_likelihood_estimate
    from vaebic.files import write_json_atomic, write_npz_atomic
    from vaebic.model import count_params, load_model

    device = devices.pick_device(p["train"]["device"])
    facts = devices.facts(device)
    ev = p["evaluate"]
    precision, precision_why = devices.resolve_precision(ev["precision"], facts, "evaluate.precision")
    chunk_mb, chunk_why = devices.chunk_mb(ev["max_chunk_mb"], facts)
    devices.configure(device, precision)
    log.info(
        "evaluating latent_dim=%d seed=%d on %s (%s): %s (%s), blocks of %g MiB (%s)",
        d,
        seed,
        device,
        facts.name,
        precision,
        precision_why,
        chunk_mb,
        chunk_why,
    )
    model = load_model(args.model, device=device)
    record = {
        "latent_dim": d,
        "seed": seed,
        "dataset": meta["dataset"],
        "data_fingerprint": meta["fingerprint"],
        "likelihood": meta["likelihood"],
        "n_params": {"decoder": count_params(model, "decoder"), "all": count_params(model, "all")},
        "precision": {"value": precision, "why": precision_why},
        "training": confidence.training_summary(Path(args.model) / "history.json"),
        "gaussian_sigma": model.sigma(),  # the Gaussian decoder's final sigma; None for other likelihoods
    }
    examples = {}
    oom_fix = (
        f"evaluation works in blocks of {chunk_mb:g} MiB (evaluate.max_chunk_mb) over evaluate.batch_size={ev['batch_size']} "
        "examples: lower either"
    )
    with compute_timer(f"evaluate@{d}-{seed}"):
        for split, arr in (("train", train_x), ("test", test_x)):
            x = devices.to_device(arr, device, f"{split} split")
            kept = {}
            with explain_out_of_memory(oom_fix):
                record[split] = {
                    **evaluate_split(
                        model,
                        x,
                        n_samples=ev["n_samples"],
                        batch_size=ev["batch_size"],
                        seed=ev["seed"],
                        precision=precision,
                        per_example=kept,
                    ),
                    **log_likelihood_estimate(
                        model,
                        x,
                        k_samples=ev["k_samples"],
                        batch_size=ev["batch_size"],
                        max_chunk_mb=chunk_mb,
                        seed=ev["seed"],
                        precision=precision,
                        per_example=kept,
                    ),
                    **latent_usage(model, x, batch_size=ev["batch_size"], threshold=ev["active_threshold"]),
                }
            r = record[split]
            log.info(
                "latent_dim=%d seed=%d %s: log p(x) >= %.3f +- %.3f (IWAE, K=%d), ELBO %.3f (recon %.3f, KL %.3f) nats/example, %d of %d units active",
                d,
                seed,
                split,
                r["iwae_nats"],
                r["iwae_std_err_nats"],
                r["k_samples"],
                r["elbo_nats"],
                r["recon_nats"],
                r["kl_nats"],
                r["active_units"],
                d,
            )
            examples.update({f"{kind}_{split}": values for kind, values in kept.items()})

    write_npz_atomic(args.examples, examples)
    write_json_atomic(args.out, record)


if __name__ == "__main__":
    run_cli(main)
