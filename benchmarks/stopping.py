"""Which early-stopping rule decides best, and does a learning-rate schedule reach the plateau sooner?

    python benchmarks/stopping.py                 # the default sweep, about an hour on 2 cores
    python benchmarks/stopping.py --dims 2,16 --json out.json
    python benchmarks/stopping.py --lr-patience 10 --configs 128:0.001,256:0.002 --default-rule-only

On the default data and model (params.yaml: the prepared splits, the MLP), each latent dimension
trains once per (batch size, learning rate) of --configs (default: params.yaml's) and learning-rate
schedule (constant, and halved after every --lr-patience epochs without improvement of the
validation estimate), in vaebic's own training loop. Along that one trajectory, several stopping
rules are followed at once: the validation objective (the ELBO with one draw, or the
importance-weighted estimate with K = 10), the patience, min_delta. Each rule keeps the weights
of its own best epoch, as EarlyStopping(restore_best_weights) does; at the end, each rule's kept
model is scored on the test split (importance-weighted estimate, K = 100: the held-out
number the selection uses) and the training split (for BIC and AIC). The rule that decides better
keeps models with the higher held-out log-likelihood, in fewer epochs, with picks that do not move
when its patience moves; the better batch size and learning rate reach as high a plateau after
fewer examples seen (epochs x training examples) and seconds. --default-rule-only follows only
params.yaml's rule (and stops there). The results are in benchmarks/README.md, "Early stopping"
and "Batch size and learning rate".
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vaebic import params
from vaebic.data import preparation
from vaebic.data.prepared import load_prepared
from vaebic.fit.training import EarlyStopping, split_elbo, train_vae
from vaebic.model.objectives import iwae_log_likelihood
from vaebic.model.vae import VAE, VAEConfig, count_params

ROOT = Path(__file__).resolve().parents[1]
#: (validation objective, patience, min_delta) followed along every trajectory
RULES = [(m, p, 0.0) for m in ("elbo", "iwae") for p in (10, 20, 30)] + [("elbo", 20, 0.05), ("iwae", 20, 0.05)]
TEST_K = 100


def load(p: dict):
    """The default prepared splits as float tensors: train, validation, test."""
    with tempfile.TemporaryDirectory() as tmp:
        preparation.prepare(p["data"], p["model"]["likelihood"], tmp)
        prepared = load_prepared(tmp)
    return [torch.from_numpy(a).float() for a in (prepared.train, prepared.validation, prepared.test)]


class _AllStopped(Exception):
    """Raised from train_vae's on_epoch once every rule has stopped: the trajectory is long enough."""


def trajectory(d: int, splits, p: dict, lr_patience: int, cap: int, rules_followed: list[tuple] = RULES, seed: int = 0) -> dict:
    """Train one model with vaebic's own loop (train_vae: its learning-rate schedule on the
    importance-weighted estimate, never stopping by itself), following every rule of
    rules_followed after each epoch; return each rule's kept weights, the epochs run and the
    seconds spent when each epoch ended (training and validation, not the rules' own ELBO)."""
    train, val, _ = splits
    pt = p["train"]
    torch.manual_seed(seed)
    model = VAE(VAEConfig(train.shape[1], d, hidden_sizes=p["model"]["hidden_sizes"]))
    rules = {r: EarlyStopping(r[1], r[2]) for r in rules_followed}
    kept, stopped, epochs, seconds = {}, {}, [0], {}
    clock = {"start": time.perf_counter(), "own": 0.0}

    def follow(epoch: int, record: dict) -> None:
        seconds[epoch] = time.perf_counter() - clock["start"] - clock["own"]
        t = time.perf_counter()
        value = {"iwae": record["val_iwae"]}
        if any(r[0] == "elbo" for r in rules):
            value["elbo"] = split_elbo(model, val, 0, "float32")
        for r, rule in rules.items():
            if r not in stopped and rule.update(epoch, value[r[0]]):
                kept[r] = {k: v.clone() for k, v in model.state_dict().items()}
            if r not in stopped and rule.stop:
                stopped[r] = epoch
        epochs[0] = epoch
        clock["own"] += time.perf_counter() - t
        if len(stopped) == len(rules):
            raise _AllStopped

    try:
        train_vae(
            model,
            train,
            epochs=cap,
            batch_size=pt["batch_size"],
            lr=pt["lr"],
            seed=seed,
            val_x=val,
            patience=cap + 1,
            lr_patience=lr_patience,
            on_epoch=follow,
            desc=f"d={d}",
        )
    except _AllStopped:
        pass
    return {"model": model, "kept": kept, "rules": rules, "stopped": stopped, "epochs": epochs[0], "seconds": seconds}


@torch.no_grad()
def score(model, state: dict, splits) -> tuple[float, float]:
    """(training-split, test-split) mean importance-weighted estimate (K = TEST_K) of the weights in state."""
    model.load_state_dict(state)
    out = []
    for x, seed in ((splits[0], 7), (splits[2], 8)):
        est = iwae_log_likelihood(model, x, TEST_K, generator=torch.Generator().manual_seed(seed), batch_size=500)
        out.append(float(est.log_px.double().mean()))
    return out[0], out[1]


def measure(
    dims: list[int],
    lr_patiences: list[int],
    cap: int,
    max_examples: int | None = None,
    configs: list[tuple[int, float]] | None = None,
    default_rule_only: bool = False,
    seed: int = 0,
) -> list[dict]:
    """One row per (batch size, learning rate, schedule, latent dimension, rule)."""
    p = params.load(ROOT / "params.yaml")
    if max_examples:
        p["data"]["max_examples"] = max_examples
    splits = load(p)
    pt = p["train"]
    rules = [("iwae", pt["patience"], pt["min_delta"])] if default_rule_only else RULES
    rows = []
    for batch_size, lr in configs or [(pt["batch_size"], pt["lr"])]:
        p = {**p, "train": {**pt, "batch_size": batch_size, "lr": lr}}
        for lr_patience in lr_patiences:
            for d in dims:
                t0 = time.perf_counter()
                run = trajectory(d, splits, p, lr_patience, cap, rules, seed)
                scores = {}  # by best epoch: rules that kept the same epoch kept the same weights
                for r in rules:
                    best = run["rules"][r].best_epoch
                    if best not in scores:
                        scores[best] = score(run["model"], run["kept"][r], splits)
                    rows.append(_row(run, r, scores[best], splits, batch_size, lr, lr_patience, d, seed))
                print(
                    f"batch {batch_size}, lr {lr:g}, lr_patience {lr_patience}, d={d}: {run['epochs']} epochs, "
                    f"{time.perf_counter() - t0:.0f} s",
                    flush=True,
                )
    return rows


def _row(run: dict, r: tuple, scores: tuple, splits, batch_size: int, lr: float, lr_patience: int, d: int, seed: int) -> dict:
    """One rule's kept model along one trajectory: where it stopped, what it cost, its scores
    (training split, test split)."""
    train, test = scores
    epochs = run["stopped"].get(r, run["epochs"])
    return {
        "batch_size": batch_size,
        "lr": lr,
        "lr_patience": lr_patience,
        "latent_dim": d,
        "monitor": r[0],
        "patience": r[1],
        "min_delta": r[2],
        "best_epoch": run["rules"][r].best_epoch,
        "best_validation": run["rules"][r].best,  # the plateau the rule saw (nats per example)
        "epochs": epochs,
        "examples_seen": epochs * len(splits[0]),
        "seconds": run["seconds"][epochs],
        "train": train,
        "test": test,
        "k": count_params(run["model"], "decoder"),
        "n": len(splits[0]),
        "seed": seed,
    }


def summary(rows: list[dict]) -> list[dict]:
    """Per (batch size, learning rate, schedule, rule): the picks of BIC, AIC and the held-out
    estimate, the epochs, examples seen and seconds to the stop, the mean test estimate."""
    out = []
    key = ("batch_size", "lr", "lr_patience", "monitor", "patience", "min_delta", "seed")
    for g in sorted({tuple(r[k] for k in key) for r in rows}):
        rs = sorted((r for r in rows if tuple(r[k] for k in key) == g), key=lambda r: r["latent_dim"])
        dims = [r["latent_dim"] for r in rs]
        bic = [r["k"] * math.log(r["n"]) - 2 * r["n"] * r["train"] for r in rs]
        aic = [2 * r["k"] - 2 * r["n"] * r["train"] for r in rs]
        test = [r["test"] for r in rs]
        out.append(
            {
                "batch_size": g[0],
                "lr": g[1],
                "lr_patience": g[2],
                "rule": f"{g[3]}, patience {g[4]}, min_delta {g[5]:g}",
                "bic": dims[int(np.argmin(bic))],
                "aic": dims[int(np.argmin(aic))],
                "heldout": dims[int(np.argmax(test))],
                "epochs": sum(r["epochs"] for r in rs),
                "examples_seen": sum(r["examples_seen"] for r in rs),
                "seconds": sum(r["seconds"] for r in rs),
                "validation_mean": float(np.mean([r["best_validation"] for r in rs])),
                "test_mean": float(np.mean(test)),
                "seed": g[6],
            }
        )
    return out


def print_summary(rows: list[dict]) -> None:
    print(
        "| batch | lr | learning rate | validation objective, patience, min_delta | BIC | AIC | held-out "
        "| epochs (all d) | examples seen (M) | seconds | mean validation plateau | mean test estimate | seed |"
    )
    print("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in summary(rows):
        lr = "constant" if not s["lr_patience"] else f"halved after {s['lr_patience']} epochs without improvement"
        print(
            f"| {s['batch_size']} | {s['lr']:g} | {lr} | {s['rule']} | {s['bic']} | {s['aic']} | {s['heldout']} | {s['epochs']} "
            f"| {s['examples_seen'] / 1e6:.2f} | {s['seconds']:.0f} | {s['validation_mean']:.2f} | {s['test_mean']:.2f} | {s['seed']} |"
        )


def print_by_model(rows: list[dict], patience: int, min_delta: float) -> None:
    """Per latent dimension, each (batch size, learning rate, schedule)'s epochs and test estimate
    under params.yaml's rule: a mean over dimensions can hide a worse plateau where BIC decides."""
    rows = [r for r in rows if (r["monitor"], r["patience"], r["min_delta"]) == ("iwae", patience, min_delta)]
    key = ("batch_size", "lr", "lr_patience", "seed")
    groups = sorted({tuple(r[k] for k in key) for r in rows})
    if len(groups) < 2:
        return
    print(f"\nepochs / test estimate (nats per example) by latent dimension, iwae, patience {patience}, min_delta {min_delta:g}:")
    print("| d | " + " | ".join(f"batch {b}, lr {lr:g}, halve after {lp}, seed {s}" for b, lr, lp, s in groups) + " |")
    print("|---:|" + "---:|" * len(groups))
    for d in sorted({r["latent_dim"] for r in rows}):
        cells = []
        for g in groups:
            r = [r for r in rows if tuple(r[k] for k in key) == g and r["latent_dim"] == d]
            cells.append(f"{r[0]['epochs']} / {r[0]['test']:.2f}" if r else "")
        print(f"| {d} | " + " | ".join(cells) + " |")


def _configs(text: str | None) -> list[tuple[int, float]] | None:
    """--configs 128:0.001,256:0.002 -> [(128, 0.001), (256, 0.002)]"""
    if not text:
        return None
    return [(int(b), float(lr)) for b, lr in (c.split(":") for c in text.split(","))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", default=None, help="latent dimensions (default: params.yaml's sweep)")
    ap.add_argument("--lr-patience", default="0,10", help="schedules to compare: 0 = constant learning rate")
    ap.add_argument("--configs", help="batch_size:lr pairs to compare, e.g. 128:0.001,256:0.002 (default: params.yaml's)")
    ap.add_argument("--default-rule-only", action="store_true", help="follow only params.yaml's stopping rule, and stop there")
    ap.add_argument("--seed", type=int, default=0, help="the seed of initialisation and batches (another seed: training's own spread)")
    ap.add_argument("--cap", type=int, default=800)
    ap.add_argument("--max-examples", type=int, help="use only this many examples (a quick check; default: all)")
    ap.add_argument("--json", type=Path, help="also write every measurement here")
    args = ap.parse_args()
    dims = [int(v) for v in args.dims.split(",")] if args.dims else params.load(ROOT / "params.yaml")["sweep"]["latent_dims"]
    lr_patiences = [int(v) for v in args.lr_patience.split(",")]
    rows = measure(dims, lr_patiences, args.cap, args.max_examples, _configs(args.configs), args.default_rule_only, args.seed)
    print_summary(rows)
    train = params.load(ROOT / "params.yaml")["train"]
    print_by_model(rows, train["patience"], train["min_delta"])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
