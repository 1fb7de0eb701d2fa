"""Stage `evaluate@<latent_dim>-<seed>`: reconstruction, KL, ELBO, the importance-weighted log-likelihood
estimate, per-unit KL and active units of one model, on train and test; each example's ELBO and
importance-weighted estimate beside them (metrics/<d>-<seed>.examples.npz, for select's bootstrap);
the training loss's fall over its last epochs (convergence).

Computation only: no MLflow and no matplotlib here, whose imports would cost more than a small
model's evaluation. The report stage logs these numbers and the model's pictures to its MLflow run.

This module is the evaluate stage's wiring: the device and precision, both splits'
metrics of one model, their log lines, and the out-of-memory advice.
"""

from __future__ import annotations

import logging

from vaebic.cli import stage_parser

log = logging.getLogger("vaebic.evaluate")  # the stage's name in its log lines


def estimate_oom_advice(chunk_mb: float, batch_size: int) -> str:
    return f"evaluation works in blocks of {chunk_mb:g} MiB (evaluate.max_chunk_mb) over evaluate.batch_size={batch_size} examples: lower either"


def evaluate(params_path: str, data_dir: str, model_dir: str, latent_dim: int, seed: int) -> tuple[dict, dict]:
    """(record, examples) of the model in model_dir on both splits of data_dir: record is the
    metrics file's content; examples each example's ELBO and importance-weighted estimate, named
    <kind>_<split> (e.g. iwae_train)."""
    from vaebic import params
    from vaebic.data.prepared import load_prepared

    p = params.load(params_path)
    prepared = load_prepared(data_dir)
    meta = prepared.meta

    from vaebic import device as devices
    from vaebic.cli import compute
    from vaebic.model.vae import count_params, load_model
    from vaebic.selection.trajectory import read_training_summary

    devices.flush_subnormals_everywhere()  # before the first parallel torch operation (see there)
    device = devices.pick_device(p["train"]["device"])
    ev, d = p["evaluate"], latent_dim
    precision, precision_why, chunk_mb = _configure(device, ev, d, seed)
    model = load_model(model_dir, device=device)
    record = {
        "latent_dim": d,
        "seed": seed,
        "dataset": meta["dataset"],
        "data_fingerprint": meta["fingerprint"],
        "likelihood": meta["likelihood"],
        "n_params": {"decoder": count_params(model, "decoder"), "all": count_params(model, "all")},
        "precision": {"value": precision, "why": precision_why},
        "training": read_training_summary(model_dir),
        "gaussian_sigma": model.sigma(),  # the Gaussian decoder's final sigma; None for other likelihoods
    }
    examples = {}
    with compute(f"evaluate@{d}-{seed}", estimate_oom_advice(chunk_mb, ev["batch_size"])):
        for split, arr in (("train", prepared.train), ("test", prepared.test)):
            kept = {}
            record[split] = evaluate_and_keep_split(model, devices.to_device(arr, device, f"{split} split"), ev, precision, chunk_mb, kept)
            log_split(record[split], d, seed, split)
            examples.update({f"{kind}_{split}": values for kind, values in kept.items()})
    return record, examples


def _configure(device, ev: dict, d: int, seed: int) -> tuple[str, str, float]:
    """Set the device up for evaluate.precision and say what it runs with; (precision, why, block size in MiB)."""
    from vaebic import device as devices

    facts = devices.facts(device)
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
    return precision, precision_why, chunk_mb


def evaluate_and_keep_split(model, x, ev: dict, precision: str, chunk_mb: float, kept: dict) -> dict:
    """ELBO terms, the importance-weighted estimate and latent usage of model on x (one split);
    each example's estimates go into kept."""
    from vaebic.model import evaluation

    return {
        **evaluation.evaluate_split(
            model, x, n_samples=ev["n_samples"], batch_size=ev["batch_size"], seed=ev["seed"], precision=precision, per_example=kept
        ),
        **evaluation.log_likelihood_estimate(
            model,
            x,
            k_samples=ev["k_samples"],
            batch_size=ev["batch_size"],
            max_chunk_mb=chunk_mb,
            seed=ev["seed"],
            precision=precision,
            per_example=kept,
        ),
        **evaluation.latent_usage(model, x, batch_size=ev["batch_size"], threshold=ev["active_threshold"]),
    }


def log_split(r: dict, d: int, seed: int, split: str) -> None:
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


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, per_model=True)
    ap.add_argument("--model", required=True, help="model folder, e.g. models/8-0")
    ap.add_argument("--out", required=True, help="metrics file to write, e.g. metrics/8-0.json")
    ap.add_argument("--examples", required=True, help="per-example estimates to write, e.g. metrics/8-0.examples.npz")
    args = ap.parse_args(argv)
    from vaebic.files import write_json_atomic, write_npz_atomic

    record, examples = evaluate(args.params, args.data, args.model, args.latent_dim, args.seed)
    write_npz_atomic(args.examples, examples)
    write_json_atomic(args.out, record)
