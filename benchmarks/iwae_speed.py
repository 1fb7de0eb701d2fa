"""Benchmark: the importance-weighted log-likelihood estimate, vectorised, against a one-example loop.

Measured in one run, on the embedded data with the default architecture:
  1. training one model with the default params.yaml settings (the yardstick: the estimate
     should cost the same order of time as training, not hours);
  2. vaebic's estimate (examples x samples in memory-bounded chunks) at K importance samples;
  3. a one-example-at-a-time loop drawing its K samples in batches of 100 (how pythae's
     `get_nll` does it).
Prints examples per second of both estimates, their ratio, and the time for the whole data set
next to the training time; writes the figures as JSON with --json.

    python benchmarks/iwae_speed.py                 # K=1000, as in the issue
    python benchmarks/iwae_speed.py --quick         # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch

from vaebic import data, params
from vaebic.model import VAE, pick_device
from vaebic.objectives import iwae_log_likelihood, log_normal_diag, log_standard_normal, reparameterize
from vaebic.training import train_vae


@torch.no_grad()
def one_example_at_a_time(model, x, k_samples: int, sample_batch: int = 100) -> torch.Tensor:
    """The baseline: a Python loop over examples, K samples per example in batches of sample_batch."""
    out = torch.empty(len(x))
    for i in range(len(x)):
        xi = x[i:i + 1]
        mu, logvar = model.encode(xi)
        log_ws = []
        for _ in range(math.ceil(k_samples / sample_batch)):
            z = reparameterize(mu, logvar, torch.randn(sample_batch, *mu.shape[1:]))
            log_ws.append(model.log_likelihood(model.decode(z), xi) + log_standard_normal(z) - log_normal_diag(z, mu, logvar))
        log_w = torch.cat(log_ws)[:k_samples]
        out[i] = torch.logsumexp(log_w, 0) - math.log(k_samples)
    return out


def timed(fn, repeats: int = 1):
    """The result of fn and the median of its wall times over repeats (this machine is shared and noisy)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k-samples", type=int, default=1000)
    ap.add_argument("--latent-dim", type=int, default=16)
    ap.add_argument("--examples", type=int, default=500, help="examples for the vectorised estimate")
    ap.add_argument("--loop-examples", type=int, default=40, help="examples for the one-at-a-time loop")
    ap.add_argument("--repeats", type=int, default=3, help="timings are the median of this many runs")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that the benchmark runs")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    p = params.load("params.yaml")
    if args.quick:
        args.k_samples, args.examples, args.loop_examples, args.repeats = 50, 100, 5, 1
        p["train"]["epochs"] = 1
    device = pick_device("cpu")
    x_all, shape = data.load_raw(p["data"]["name"], p["data"]["root"], p["data"]["download"], p["data"])
    x_all = torch.from_numpy(data.binarize(x_all, p["data"]["binarize_seed"])).float()
    train_x = x_all[: int(len(x_all) * (1 - p["data"]["test_fraction"]))]

    torch.manual_seed(0)
    model = VAE(x_all.shape[1], args.latent_dim, p["model"]["hidden_sizes"], shape)
    _, train_s = timed(lambda: train_vae(model, train_x, epochs=p["train"]["epochs"], batch_size=p["train"]["batch_size"],
                                         lr=p["train"]["lr"], seed=0))
    x = x_all[-args.examples:]
    budget = p["evaluate"]["max_chunk_mb"] * 2**20 // 4
    iwae_log_likelihood(model, x[:10], args.k_samples, batch_size=p["evaluate"]["batch_size"], max_chunk_elements=budget)  # warm-up
    est, vec_s = timed(lambda: iwae_log_likelihood(model, x, args.k_samples, batch_size=p["evaluate"]["batch_size"], max_chunk_elements=budget),
                       args.repeats)
    loop_x = x[: args.loop_examples]
    loop_est, loop_s = timed(lambda: one_example_at_a_time(model, loop_x, args.k_samples), args.repeats)
    vec_rate, loop_rate = len(x) / vec_s, len(loop_x) / loop_s
    n_all = len(x_all)
    figures = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {device}",
        "k_samples": args.k_samples,
        "latent_dim": args.latent_dim,
        "hidden_sizes": p["model"]["hidden_sizes"],
        "train_one_model_s": train_s,
        "train_epochs": p["train"]["epochs"],
        "vectorised_examples_per_s": vec_rate,
        "one_at_a_time_examples_per_s": loop_rate,
        "speedup": vec_rate / loop_rate,
        "vectorised_all_examples_s": n_all / vec_rate,
        "one_at_a_time_all_examples_s": n_all / loop_rate,
        "estimate_mean_nats": est.log_px.mean().item(),
        "loop_estimate_mean_nats": loop_est.mean().item(),
    }
    print(f"importance-weighted log-likelihood, K={args.k_samples}, d={args.latent_dim}, hidden {p['model']['hidden_sizes']}, on {figures['machine']}")
    print(f"  training one model ({p['train']['epochs']} epochs, {len(train_x)} examples): {train_s:8.1f} s")
    print(f"  vaebic (vectorised, chunked):     {vec_rate:8.1f} examples/s   all {n_all} examples: {n_all / vec_rate:8.1f} s")
    print(f"  one example at a time (pythae):   {loop_rate:8.1f} examples/s   all {n_all} examples: {n_all / loop_rate:8.1f} s")
    print(f"  ratio vectorised / one-at-a-time: {vec_rate / loop_rate:8.2f}x")
    print(f"  estimate on all examples vs training one model: {n_all / vec_rate / train_s:.2f}x the training time")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
