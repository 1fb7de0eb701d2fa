"""Benchmark: how close vaebic's training and log-likelihood estimate come to the hardware's limit,
and how much of a `dvc repro` is fixed cost, each against a baseline measured in the same run.

Everything runs on the embedded data set (binarised, the prepare stage's train split) with the
default architecture and batch size from params.yaml:

  peaks      the machine's dense matrix-multiply throughput: torch.mm of two n x n matrices
             (n = 4096) in float32 and, where the hardware multiplies bf16 natively, in bfloat16;
             the faster one is the real limit, and every "fraction of the peak" is of it;
  training   examples/s of vaebic's loop in --precision (default auto: bf16 where the hardware
             has it) and in float32, and of the canonical loop written here the way the official
             PyTorch VAE example does it (a DataLoader over the tensors, torch.optim.Adam, `.item()`
             on the loss every step), same model sizes, batch size and epochs; their ratios; and
             the model FLOP/s as a fraction of the peak;
  estimate   examples/s of the importance-weighted log-likelihood at K = 1000, in --precision and
             in float32, and of a one-example-at-a-time loop drawing its K samples in batches of
             100, which encodes the repeated example for every batch (as pythae's `get_nll` does);
  pipeline   wall time of the default `dvc repro` in a fresh copy of the project, split into
             compute (the time the train and evaluate stages spend training and evaluating, timed
             inside them through VAEBIC_TIMINGS) and fixed cost (the rest: process starts, imports,
             DVC, MLflow, the report); a no-op `dvc repro`; the same pipeline with float32
             everywhere, with the accuracy of the default against it model by model (IWAE within 2
             Monte-Carlo standard errors, final training losses within 0.3 nats, the same picks);
             and `python -m vaebic.sweep --jobs 2`, each in a fresh copy.

FLOPs are model FLOPs of the matrix multiplies: 2 per multiply-add of the forward pass, and for
training 3x the forward pass (backward = 2x forward, the usual 6N rule). Elementwise work, which
the hardware must also do, counts for nothing: that is what makes the fraction a fair measure.

A shared machine's speed drifts between phases, so the compute parts run in interleaved rounds
(both peaks, vaebic, vaebic in float32, baseline), every ratio and fraction is taken within a
round, and medians over rounds are printed. Each target is printed with whether it is met;
--json FILE writes the figures.

    python benchmarks/speed.py                    # everything (about 30 minutes on 2 CPU cores)
    python benchmarks/speed.py --skip-pipeline    # the compute parts only (about 4 minutes)
    python benchmarks/speed.py --pipeline-only    # the pipeline parts only (about 20 minutes on 2 CPU cores)
    python benchmarks/speed.py --pipeline-only --baseline 1323bfd   # and the default run of that commit, side by side
    python benchmarks/speed.py --device cuda      # on a GPU (also reports TFLOP/s); --device mps on Apple silicon
    python benchmarks/speed.py --device cuda --compile --max-chunk-mb 512   # the GPU switches
    python benchmarks/speed.py --quick            # a smoke run in seconds, tiny sizes
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from vaebic import params
from vaebic.data import preparation
from vaebic.data.prepared import load_prepared
from vaebic.device import _cpuinfo, chunk_mb, cpu_name, facts, flush_subnormals_everywhere, pick_device, resolve_precision, synchronize
from vaebic.fit.training import train_vae
from vaebic.model.evaluation import log_likelihood_estimate
from vaebic.model.objectives import iwae_log_likelihood
from vaebic.model.vae import VAE, VAEConfig

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "train_vs_canonical": 1.5,
    "train_fraction_of_peak": 0.45,  # of the faster matmul peak: bf16 on a CPU with AVX512_BF16
    "estimate_fraction_of_peak": 0.60,
    "estimate_vs_one_at_a_time": 3.0,
    "fixed_cost_fraction": 0.25,
    "fixed_per_stage_s": 1.5,  # a stage process's wall time less its compute: start, imports, files
    "noop_repro_s": 5.0,
    "repro_vs_float32": 1.4,
    "sweep_vs_sequential": 0.85,
    "repro_vs_baseline": 1.0,  # today's default dvc repro (converged) against --baseline's (1323bfd: 30 fixed epochs)
}


def timed(fn, device: torch.device, repeats: int = 1):
    """fn's result and the median of its wall times over repeats (the machine may be shared and noisy)."""
    times, result = [], None
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return result, sorted(times)[len(times) // 2]


def matmul_flops_per_s(device: torch.device, n: int, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    _, seconds = timed(lambda: torch.mm(a, b), device, repeats)
    return 2 * n**3 / seconds


def peaks(device: torch.device, n: int, repeats: int = 3) -> dict:
    """torch.mm throughput in float32 and, where the hardware multiplies bf16 natively, bfloat16:
    the real limit is the faster one."""
    out = {"float32": matmul_flops_per_s(device, n, repeats)}
    if facts(device).native_bf16:
        out["bfloat16"] = matmul_flops_per_s(device, n, repeats, torch.bfloat16)
    return out


def forward_flops(input_dim: int, hidden: list[int], latent_dim: int) -> tuple[int, int]:
    """Matmul FLOPs of one example through the encoder (to 2d outputs) and of one z through the decoder."""
    enc = [input_dim, *hidden, 2 * latent_dim]
    dec = [latent_dim, *reversed(hidden), input_dim]
    return (sum(2 * a * b for a, b in zip(enc, enc[1:])), sum(2 * a * b for a, b in zip(dec, dec[1:])))


# --- the canonical training loop, as the official PyTorch VAE example (pytorch/examples, vae/main.py) writes it


class CanonicalVAE(nn.Module):
    def __init__(self, input_dim: int, hidden: int, latent_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden)
        self.fc21 = nn.Linear(hidden, latent_dim)
        self.fc22 = nn.Linear(hidden, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden)
        self.fc4 = nn.Linear(hidden, input_dim)

    def forward(self, x):
        h1 = F.relu(self.fc1(x))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def canonical_training(
    train_x: torch.Tensor, latent_dim: int, hidden: int, epochs: int, batch_size: int, lr: float, device: torch.device
) -> float:
    """The example's loop; returns the last epoch's mean loss (nats per example)."""
    model = CanonicalVAE(train_x.shape[1], hidden, latent_dim).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_x), batch_size=batch_size, shuffle=True)
    train_loss = 0.0
    for _ in range(epochs):
        model.train()
        train_loss = 0.0
        for (x,) in loader:
            x = x.to(device)
            optimizer.zero_grad()
            recon, mu, logvar = model(x)
            bce = F.binary_cross_entropy(recon, x, reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())  # Kingma & Welling 2014, appendix B
            loss = bce + kld
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
    return train_loss / len(train_x)


# --- the one-example-at-a-time importance-sampling loop, as pythae's get_nll does it


@torch.no_grad()
def one_example_at_a_time(model: VAE, x: torch.Tensor, k_samples: int, sample_batch: int = 100) -> torch.Tensor:
    out = []
    for i in range(len(x)):
        xi = x[i : i + 1]
        log_ws = []
        for _ in range(max(1, k_samples // sample_batch)):
            x_rep = torch.cat(sample_batch * [xi])
            mu, logvar = model.encode(x_rep)
            std = torch.exp(0.5 * logvar)
            z = mu + std * torch.randn_like(std)
            log_q = -0.5 * (logvar + (z - mu) ** 2 / torch.exp(logvar)).sum(-1)
            log_p_z = -0.5 * (z**2).sum(-1)  # the log(2 pi) terms of p(z) and q(z|x) cancel
            recon = torch.sigmoid(model.decode(z))
            log_p_x_given_z = -F.binary_cross_entropy(recon, x_rep, reduction="none").sum(-1)
            log_ws.append(log_p_x_given_z + log_p_z - log_q)
        log_w = torch.cat(log_ws)
        out.append((torch.logsumexp(log_w, 0) - math.log(len(log_w))).item())
    return torch.tensor(out)


# --- the parts


def median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2


def rounds(
    ours, ours_f32, baseline, n_ours: int, n_baseline: int, flops_per_example: float, repeats: int, device: torch.device, matmul_size: int
) -> dict:
    """Interleaved rounds of (both matmul peaks, ours, ours in float32, baseline): a shared
    machine's speed drifts between phases, so every ratio and fraction is taken within one round
    (fractions of that round's faster peak), and the medians over rounds are reported."""
    keys = (
        "rate",
        "f32_rate",
        "base_rate",
        "ratio",
        "vs_f32",
        "fraction",
        "f32_fraction",
        "base_fraction",
        "peak",
        "peak_f32",
        "peak_bf16",
    )
    per_round = {k: [] for k in keys}
    result = f32_result = base_result = None
    for _ in range(repeats):
        mm = peaks(device, matmul_size)
        peak = max(mm.values())
        result, seconds = timed(ours, device)
        f32_result, f32_seconds = timed(ours_f32, device)
        base_result, base_seconds = timed(baseline, device)
        rate, f32_rate, base_rate = n_ours / seconds, n_ours / f32_seconds, n_baseline / base_seconds
        for k, v in (
            ("rate", rate),
            ("f32_rate", f32_rate),
            ("base_rate", base_rate),
            ("ratio", rate / base_rate),
            ("vs_f32", rate / f32_rate),
            ("fraction", rate * flops_per_example / peak),
            ("f32_fraction", f32_rate * flops_per_example / peak),
            ("base_fraction", base_rate * flops_per_example / peak),
            ("peak", peak),
            ("peak_f32", mm["float32"]),
            ("peak_bf16", mm.get("bfloat16", float("nan"))),
        ):
            per_round[k].append(v)
    out = {k: median(v) for k, v in per_round.items()}
    return {
        **out,
        "result": result,
        "f32_result": f32_result,
        "base_result": base_result,
        "ratios": per_round["ratio"],
        "fractions": per_round["fraction"],
    }


def _figures(r: dict, flops_per_example: float, ours: str, base: str) -> dict:
    """The per-round medians of rounds() under the names the printout and --json use."""
    return {
        "peak_flops_per_s": r["peak"],
        "matmul_float32_flops_per_s": r["peak_f32"],
        "matmul_bfloat16_flops_per_s": r["peak_bf16"],
        "vaebic_examples_per_s": r["rate"],
        "vaebic_float32_examples_per_s": r["f32_rate"],
        f"{base}_examples_per_s": r["base_rate"],
        f"vaebic_vs_{base}": r["ratio"],
        f"vaebic_vs_{base}_per_round": r["ratios"],
        "vaebic_vs_vaebic_float32": r["vs_f32"],
        "vaebic_flops_per_s": r["rate"] * flops_per_example,
        "vaebic_fraction_of_peak": r["fraction"],
        "vaebic_fraction_of_peak_per_round": r["fractions"],
        "vaebic_float32_fraction_of_peak": r["f32_fraction"],
        f"{base}_fraction_of_peak": r["base_fraction"],
        "model_flops_per_example": flops_per_example,
    }


def bench_training(
    p: dict,
    train_x: torch.Tensor,
    latent_dim: int,
    epochs: int,
    repeats: int,
    device: torch.device,
    matmul_size: int,
    precision: str = "float32",
    compile: bool = False,
) -> dict:
    pt, hidden = p["train"], p["model"]["hidden_sizes"]
    kw = dict(epochs=epochs, batch_size=pt["batch_size"], lr=pt["lr"])
    enc, dec = forward_flops(train_x.shape[1], hidden, latent_dim)
    flops_per_example = 3 * (enc + dec)

    def vaebic(prec: str):
        torch.manual_seed(0)
        model = VAE(VAEConfig(train_x.shape[1], latent_dim, hidden_sizes=hidden)).to(device)
        return train_vae(model, train_x, seed=0, precision=prec, compile=compile, **kw).history[-1]["loss"]

    def canonical():
        torch.manual_seed(0)
        return canonical_training(train_x.cpu(), latent_dim, hidden[0], device=device, **kw)

    # one warm-up epoch each: one-off costs (lazy imports, kernel selection) are not throughput
    for prec in {precision, "float32"}:
        train_vae(
            VAE(VAEConfig(train_x.shape[1], latent_dim, hidden_sizes=hidden)).to(device),
            train_x,
            epochs=1,
            batch_size=pt["batch_size"],
            lr=pt["lr"],
            seed=1,
            precision=prec,
            compile=compile,
        )
    canonical_training(train_x.cpu(), latent_dim, hidden[0], 1, pt["batch_size"], pt["lr"], device)
    n = len(train_x) * epochs
    r = rounds(lambda: vaebic(precision), lambda: vaebic("float32"), canonical, n, n, flops_per_example, repeats, device, matmul_size)
    return {
        "latent_dim": latent_dim,
        "epochs": epochs,
        "batch_size": pt["batch_size"],
        "n_train": len(train_x),
        "rounds": repeats,
        "precision": precision,
        "compile": compile,
        **_figures(r, flops_per_example, "vaebic", "canonical"),
        "vaebic_final_loss_nats": r["result"],
        "vaebic_float32_final_loss_nats": r["f32_result"],
        "canonical_final_loss_nats": r["base_result"],
    }


def bench_estimate(
    p: dict,
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    latent_dim: int,
    k: int,
    n_examples: int,
    n_loop: int,
    repeats: int,
    device: torch.device,
    matmul_size: int,
    precision: str = "float32",
    max_chunk_mb: float = 2.0,
) -> dict:
    pt, pe, hidden = p["train"], p["evaluate"], p["model"]["hidden_sizes"]
    torch.manual_seed(0)
    model = VAE(VAEConfig(train_x.shape[1], latent_dim, hidden_sizes=hidden)).to(device)
    train_vae(model, train_x, epochs=min(pt["epochs"], 5), batch_size=pt["batch_size"], lr=pt["lr"], seed=0)
    enc, dec = forward_flops(train_x.shape[1], hidden, latent_dim)
    flops_per_example = enc + k * dec
    x = test_x[:n_examples]

    def vaebic(prec: str):
        return log_likelihood_estimate(
            model, x, k_samples=k, batch_size=pe["batch_size"], max_chunk_mb=max_chunk_mb, seed=0, precision=prec
        )

    def loop():
        return one_example_at_a_time(model, x[:n_loop], k)

    for prec in {precision, "float32"}:
        log_likelihood_estimate(model, x[:10], k_samples=k, batch_size=pe["batch_size"], max_chunk_mb=max_chunk_mb, seed=0, precision=prec)
    r = rounds(lambda: vaebic(precision), lambda: vaebic("float32"), loop, len(x), n_loop, flops_per_example, repeats, device, matmul_size)
    est, est_f32, loop_est = r["result"], r["f32_result"], r["base_result"]
    # the same estimator on the same examples: agreement within Monte-Carlo error
    check = iwae_log_likelihood(model, x[:n_loop], k, generator=torch.Generator(device=device).manual_seed(1))
    return {
        "latent_dim": latent_dim,
        "k_samples": k,
        "n_examples": len(x),
        "n_loop_examples": n_loop,
        "rounds": repeats,
        "precision": precision,
        "max_chunk_mb": max_chunk_mb,
        **_figures(r, flops_per_example, "vaebic", "one_at_a_time"),
        "vaebic_mean_nats": est["iwae_nats"],
        "vaebic_mean_std_err_nats": est["iwae_std_err_nats"],
        "vaebic_float32_mean_nats": est_f32["iwae_nats"],
        "vaebic_float32_mean_std_err_nats": est_f32["iwae_std_err_nats"],
        "loop_examples_vaebic_mean_nats": check.log_px.mean().item(),
        "loop_mean_nats": loop_est.mean().item(),
        "loop_examples_std_err_nats": check.mean_std_err(),
    }


def cpu_times() -> tuple[int, int] | None:
    """(all, not working) clock ticks of every core since boot, from /proc/stat (Linux); None
    elsewhere. Not working: idle, waiting for I/O, or stolen by the hypervisor for other guests."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]  # user .. steal
    except (OSError, ValueError):
        return None
    return sum(ticks), ticks[3] + ticks[4] + ticks[7]


def busy_fraction(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the machine's core time that was busy between two cpu_times() readings."""
    if before is None or after is None or after[0] == before[0]:
        return None
    return 1.0 - (after[1] - before[1]) / (after[0] - before[0])


def run_command(args: list[str], cwd: Path, env_extra: dict | None = None) -> tuple[float, float | None]:
    """(wall seconds, share of all cores busy meanwhile) of a command; a failure ends the benchmark."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "VAEBIC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(env_extra or {})
    before, start = cpu_times(), time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    seconds, busy = time.perf_counter() - start, busy_fraction(before, cpu_times())
    if proc.returncode != 0:
        sys.exit(f"benchmark: `{' '.join(args)}` failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return seconds, busy


#: what `dvc repro` reads from the project: files, and folders copied whole
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore", ".dvcignore", "data/raw/README.md")
PROJECT_FOLDERS = ("stages", "src")


def copy_project(folder: Path, changes: dict, source: Path = ROOT) -> None:
    """What `dvc repro` needs from the project in source, in a fresh git repository: no outputs, no
    MLflow store; params.yaml with changes ({section: {key: value}}) applied. The same copy the
    end-to-end tests make."""
    for name in PROJECT_FILES:
        if (source / name).exists():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / name, folder / name)
    for sub in PROJECT_FOLDERS:
        shutil.copytree(source / sub, folder / sub, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    path = folder / "params.yaml"
    p = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        p.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(p, sort_keys=False))


def export_commit(rev: str, dest: Path) -> str:
    """The project's files at git revision rev (`git archive`), unpacked into dest; the work tree
    and the repository are not touched. Returns rev's short hash."""
    git = [["git", "rev-parse", "--short", f"{rev}^{{commit}}"], ["git", "archive", "--format=tar", rev]]
    sha, archive = (subprocess.run(cmd, cwd=ROOT, capture_output=True) for cmd in git)
    if sha.returncode != 0 or archive.returncode != 0:
        sys.exit(f"benchmark: --baseline {rev}: not a commit of this repository ({(sha.stderr or archive.stderr).decode().strip()})")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:  # this repository's own commit
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return sha.stdout.decode().strip()


def baseline_repro(rev: str, changes: dict, tmp: str) -> dict:
    """The default `dvc repro` of commit rev, with its own code, stages and params.yaml (changes
    applied but for the mlflow section) in a fresh copy: the stages import that commit's vaebic
    (PYTHONPATH), not this one."""
    sha = export_commit(rev, Path(tmp) / "baseline-commit")
    folder = Path(tmp) / "baseline"
    folder.mkdir()
    # the sizes only: the commit keeps its own MLflow settings (before a384108, params.yaml's
    # validation refuses a null mlflow.registered_model)
    sizes = {section: values for section, values in changes.items() if section != "mlflow"}
    copy_project(folder, sizes, source=Path(tmp) / "baseline-commit")
    seconds, busy = run_command(["dvc", "repro"], folder, {"PYTHONPATH": str(folder / "src")})
    train = yaml.safe_load((folder / "params.yaml").read_text())["train"]
    return {
        "rev": rev,
        "commit": sha,
        "repro_s": seconds,
        "cores_busy": busy,
        "epochs": train["epochs"],
        "patience": train.get("patience", 0),
    }


def startup_seconds(code: str, repeats: int = 3) -> float:
    """Median wall time of a fresh Python process that runs code (imports: a stage's start-up)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


FLOAT32_EVERYWHERE = {"train": {"precision": "float32"}, "evaluate": {"precision": "float32"}}


def run_results(project: Path, names: list[str]) -> dict:
    """What a pipeline run decided: each model's IWAE estimates with their Monte-Carlo standard
    errors and final training loss, and the three criteria's picks."""
    models = {}
    for n in names:
        m = json.loads((project / "metrics" / f"{n}.json").read_text())
        models[n] = {
            "final_train_loss": json.loads((project / "models" / n / "history.json").read_text())[-1]["loss"],
            **{f"iwae_{split}": m[split]["iwae_nats"] for split in ("train", "test")},
            **{f"iwae_se_{split}": m[split]["iwae_std_err_nats"] for split in ("train", "test")},
        }
    return {"models": models, "picks": json.loads((project / "reports/selection.json").read_text())["selected_by"]}


def precision_accuracy(auto: dict, f32: dict) -> dict:
    """The issue's accuracy bar for `auto` against float32 everywhere, model by model: the IWAE
    estimates within 2 Monte-Carlo standard errors of float32's, final training losses within
    0.3 nats per example, the same BIC, AIC and held-out picks."""
    rows, worst_se, worst_loss = [], 0.0, 0.0
    for n, a in auto["models"].items():
        b = f32["models"][n]
        in_se = max(abs(a[f"iwae_{s}"] - b[f"iwae_{s}"]) / b[f"iwae_se_{s}"] for s in ("train", "test"))
        loss = abs(a["final_train_loss"] - b["final_train_loss"])
        worst_se, worst_loss = max(worst_se, in_se), max(worst_loss, loss)
        rows.append(
            {
                "model": n,
                "iwae_train_diff": a["iwae_train"] - b["iwae_train"],
                "iwae_test_diff": a["iwae_test"] - b["iwae_test"],
                "diff_in_se": in_se,
                "final_loss_diff": a["final_train_loss"] - b["final_train_loss"],
            }
        )
    return {
        "rows": rows,
        "worst_diff_in_se": worst_se,
        "worst_final_loss_diff": worst_loss,
        "same_picks": auto["picks"] == f32["picks"],
        "picks": auto["picks"],
        "float32_picks": f32["picks"],
    }


def bench_pipeline(p: dict, changes: dict, default_is_float32: bool, startup_repeats: int = 3, baseline: str | None = None) -> dict:
    """The default `dvc repro`, its no-op rerun, the same with float32 everywhere, the sweep at
    --jobs 2 and, given a baseline commit, that commit's default `dvc repro`, each in a fresh copy
    of the project, one after the other in this run (see _time_pipelines); then the start-up
    costs of fresh processes. Where the default already is float32 everywhere (no native bf16),
    the float32 run would repeat it: its figures are then the default run's."""
    for section, values in changes.items():
        p[section].update(values)
    names = [f"{d}-{s}" for d in p["sweep"]["latent_dims"] for s in p["sweep"]["seeds"]]
    runs = _time_pipelines(changes, names, default_is_float32, baseline)
    python_s = startup_seconds("pass", startup_repeats)
    torch_s = startup_seconds("import torch", startup_repeats) - python_s
    torch_mlflow_s = startup_seconds("import torch, mlflow", startup_repeats) - python_s
    return _pipeline_figures(p, len(names), runs, default_is_float32, python_s, torch_s, torch_mlflow_s)


def _fresh_copy(tmp: str, name: str, changes: dict, extra: dict) -> Path:
    """A fresh copy of the project in tmp/name, params.yaml with changes and then extra applied."""
    folder = Path(tmp) / name
    folder.mkdir()
    merged = {k: dict(v) for k, v in changes.items()}
    for section, values in extra.items():
        merged.setdefault(section, {}).update(values)
    copy_project(folder, merged)
    return folder


def _time_pipelines(changes: dict, names: list[str], default_is_float32: bool, baseline: str | None = None) -> dict:
    """The pipeline runs, each in a fresh copy: the default `dvc repro` (wall seconds, cores busy,
    each stage's compute seconds from VAEBIC_TIMINGS), its no-op rerun, float32 everywhere (unless
    the default is), the accuracy of the default against it, `python -m vaebic.sweep --jobs 2`,
    and the baseline commit's default `dvc repro` (if given)."""
    with tempfile.TemporaryDirectory() as tmp:
        timings = Path(tmp) / "timings.jsonl"
        project = _fresh_copy(tmp, "default", changes, {})
        repro_s, repro_busy = run_command(["dvc", "repro"], project, {"VAEBIC_TIMINGS": str(timings)})
        noop_s, _ = run_command(["dvc", "repro"], project)
        stage_compute = [json.loads(line) for line in timings.read_text().splitlines()]
        default_results = run_results(project, names)
        if default_is_float32:
            float32_s, float32_results = repro_s, default_results
        else:
            float32 = _fresh_copy(tmp, "float32", changes, FLOAT32_EVERYWHERE)
            float32_s, float32_results = run_command(["dvc", "repro"], float32)[0], run_results(float32, names)
        accuracy = precision_accuracy(default_results, float32_results)
        swept = _fresh_copy(tmp, "swept", changes, {})  # the same pipeline, 2 models at a time (python -m vaebic.sweep)
        sweep_s, sweep_busy = run_command([sys.executable, "-m", "vaebic.sweep", "--jobs", "2"], swept)
        base = baseline_repro(baseline, changes, tmp) if baseline else None
    return {
        "baseline": base,
        "repro_s": repro_s,
        "repro_busy": repro_busy,
        "noop_s": noop_s,
        "stage_compute": stage_compute,
        "float32_s": float32_s,
        "accuracy": accuracy,
        "sweep_s": sweep_s,
        "sweep_busy": sweep_busy,
    }


def _pipeline_figures(
    p: dict, n_models: int, runs: dict, default_is_float32: bool, python_s: float, torch_s: float, torch_mlflow_s: float
) -> dict:
    """_time_pipelines' runs and the start-up costs under the names the printout and --json use:
    fixed cost = wall time of `dvc repro` - the compute timed inside its stages."""
    repro_s, repro_busy = runs["repro_s"], runs["repro_busy"]
    stage_compute = [t for t in runs["stage_compute"] if "seconds" in t]
    compute_s = sum(t["seconds"] for t in stage_compute)
    fixed_s = repro_s - compute_s
    stages = stage_times(runs["stage_compute"])
    return {
        "latent_dims": p["sweep"]["latent_dims"],
        "seeds": p["sweep"]["seeds"],
        "epochs": p["train"]["epochs"],
        "k_samples": p["evaluate"]["k_samples"],
        "n_stages": 4 + 2 * n_models,  # validate, prepare, select, report + 2 per model
        "train_precision": p["train"]["precision"],
        "evaluate_precision": p["evaluate"]["precision"],
        "repro_s": repro_s,
        "compute_s": compute_s,
        "fixed_s": fixed_s,
        "fixed_fraction": fixed_s / repro_s,
        "train_compute_s": sum(t["seconds"] for t in stage_compute if t["stage"].startswith("train@")),
        "evaluate_compute_s": sum(t["seconds"] for t in stage_compute if t["stage"].startswith("evaluate@")),
        # each stage process: its wall time from start to exit, the compute timed inside it, and the rest
        # (starting Python, imports, reading and writing files); what the processes leave of the wall
        # time is DVC's own (hashing, the lock file, the run-cache) and starting the processes
        "stages": stages,
        "fixed_per_stage_mean_s": sum(t["fixed_s"] for t in stages) / len(stages),
        "fixed_per_stage_max_s": max(t["fixed_s"] for t in stages),
        "dvc_own_s": repro_s - sum(t["process_s"] for t in stages),
        "noop_repro_s": runs["noop_s"],
        "float32_repro_s": runs["float32_s"],
        "float32_is_the_default": default_is_float32,
        "speedup_vs_float32": runs["float32_s"] / repro_s,
        "accuracy_vs_float32": runs["accuracy"],
        "sweep_jobs2_s": runs["sweep_s"],
        "sweep_vs_sequential": runs["sweep_s"] / repro_s,
        # the share of all cores busy during each run: the sweep can only fill the core time that
        # `dvc repro` leaves idle, so doing the same work it needs at least repro_busy x its wall time
        "repro_cores_busy": repro_busy,
        "sweep_cores_busy": runs["sweep_busy"],
        "sweep_bound_vs_sequential": repro_busy,
        # --baseline: that commit's default dvc repro, its own code and params, in this run
        "baseline": runs["baseline"],
        "repro_vs_baseline": repro_s / runs["baseline"]["repro_s"] if runs["baseline"] else None,
        # where the fixed cost goes, from fresh processes: every stage starts Python; the train stages
        # and report import torch and mlflow, the evaluate stages torch only
        "python_start_s": python_s,
        "import_torch_s": torch_s,
        "import_torch_and_mlflow_s": torch_mlflow_s,
        "est_process_start_and_imports_s": (4 + 2 * n_models) * python_s + (n_models + 1) * torch_mlflow_s + n_models * torch_s,
    }


def stage_times(records: list[dict]) -> list[dict]:
    """Per stage process, in the order they ran: {stage, process_s, compute_s, fixed_s} from the
    VAEBIC_TIMINGS records ({stage, process_seconds} at a process's exit, {stage, seconds} of its compute)."""
    compute = {}
    for t in records:
        if "seconds" in t:
            compute[t["stage"]] = compute.get(t["stage"], 0.0) + t["seconds"]
    return [
        {
            "stage": t["stage"],
            "process_s": t["process_seconds"],
            "compute_s": compute.get(t["stage"], 0.0),
            "fixed_s": t["process_seconds"] - compute.get(t["stage"], 0.0),
        }
        for t in records
        if "process_seconds" in t
    ]


def verdicts(fig: dict) -> list[tuple[str, float, float, bool | None]]:
    """(what, measured, target, met) for each target the figures cover; met is None where the
    target does not apply to this hardware."""
    out = []

    def at_least(what, value, key):
        out.append((what, value, TARGETS[key], value >= TARGETS[key]))

    def at_most(what, value, key):
        out.append((what, value, TARGETS[key], value <= TARGETS[key]))

    if "training" in fig:
        t = fig["training"]
        at_least("training vs canonical loop (x)", t["vaebic_vs_canonical"], "train_vs_canonical")
        at_least("training, fraction of the faster matmul peak", t["vaebic_fraction_of_peak"], "train_fraction_of_peak")
    if "estimate" in fig:
        e = fig["estimate"]
        at_least("estimate, fraction of the faster matmul peak", e["vaebic_fraction_of_peak"], "estimate_fraction_of_peak")
        at_least("estimate vs one-at-a-time loop (x)", e["vaebic_vs_one_at_a_time"], "estimate_vs_one_at_a_time")
    if "pipeline" in fig:
        q = fig["pipeline"]
        at_most("fixed cost, fraction of dvc repro", q["fixed_fraction"], "fixed_cost_fraction")
        at_most("fixed cost per stage process, mean (s)", q["fixed_per_stage_mean_s"], "fixed_per_stage_s")
        out.append(("no-op dvc repro (s)", q["noop_repro_s"], TARGETS["noop_repro_s"], q["noop_repro_s"] < TARGETS["noop_repro_s"]))
        if fig.get("precision") == "bfloat16":
            at_least("default dvc repro vs float32 everywhere (x)", q["speedup_vs_float32"], "repro_vs_float32")
        else:  # without native bf16, auto is float32: both runs are the same configuration
            out.append(("default dvc repro vs float32 everywhere (x)", q["speedup_vs_float32"], TARGETS["repro_vs_float32"], None))
        at_most("sweep --jobs 2, fraction of sequential dvc repro", q["sweep_vs_sequential"], "sweep_vs_sequential")
        if q["baseline"]:
            at_most(f"default dvc repro vs {q['baseline']['rev']}'s (x)", q["repro_vs_baseline"], "repro_vs_baseline")
    return out


def _quick_pipeline_changes() -> dict:
    """--quick's params.yaml changes for the pipeline runs: one tiny model (each more costs two stage
    processes in each of the four pipelines), and no Model Registry version (torch.export and the
    registration take seconds of each report that a smoke run does not need; the full run registers
    the champion, as the default `dvc repro` does)."""
    return {
        "data": {"max_examples": 500},
        "sweep": {"latent_dims": [2]},
        "train": {"epochs": 1},
        "evaluate": {"k_samples": 10},
        "report": {"dpi": 40, "n_samples": 4},
        "mlflow": {"registered_model": None},
    }


def _parse_args() -> argparse.Namespace:
    """The command line; --quick sets tiny sizes."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto")
    ap.add_argument("--latent-dim", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3, help="training epochs of both loops, per round")
    ap.add_argument("--k-samples", type=int, default=1000)
    ap.add_argument("--examples", type=int, default=500, help="examples for vaebic's estimate")
    ap.add_argument("--loop-examples", type=int, default=30, help="examples for the one-at-a-time loop")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds; figures are medians over them")
    ap.add_argument("--matmul-size", type=int, default=4096)
    ap.add_argument("--skip-pipeline", action="store_true", help="leave out the `dvc repro` timings")
    ap.add_argument("--pipeline-only", action="store_true", help="only the `dvc repro` timings (and the peaks)")
    ap.add_argument(
        "--baseline",
        metavar="REV",
        help="also time the default `dvc repro` of this git commit (its own code and params.yaml), e.g. 1323bfd, in a fresh copy",
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes and a one-model pipeline: checks that it all runs")
    ap.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="vaebic's training and estimate (auto: bf16 where the hardware has it); float32 is measured beside it",
    )
    ap.add_argument("--compile", action="store_true", help="torch.compile vaebic's training step")
    ap.add_argument("--max-chunk-mb", default="auto", help="the estimate's block size in MiB, or auto (the device's default)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    if args.skip_pipeline and args.pipeline_only:
        ap.error("--skip-pipeline and --pipeline-only leave nothing to run")
    if args.quick:
        args.epochs, args.k_samples, args.examples, args.loop_examples, args.repeats, args.matmul_size = 1, 100, 50, 3, 1, 512
    return args


def _prepared_splits(p: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The prepare stage's train and test splits of the default data set, float32 on device, and its meta."""
    with tempfile.TemporaryDirectory() as tmp:
        preparation.prepare(p["data"], p["model"]["likelihood"], tmp)
        prepared = load_prepared(tmp)
        train_np, test_np, meta = prepared.train, prepared.test, prepared.meta
    train_x, test_x = (torch.from_numpy(a).to(device=device, dtype=torch.float32) for a in (train_np, test_np))
    return train_x, test_x, meta


#: the instruction sets of /proc/cpuinfo that decide how fast a CPU multiplies matrices: float32
#: (AVX2 and FMA, AVX-512), bf16 (AVX512_BF16, AMX), and the rest of the family
MATMUL_INSTRUCTIONS = tuple("avx2 fma avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8 amx_fp16".split())


def cpu_instructions(cpuinfo: str | None = None) -> str:
    """The CPU's matrix-multiply instruction sets (MATMUL_INSTRUCTIONS it has, from Linux's
    /proc/cpuinfo, read as vaebic.device reads it), printed beside every figure."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    if not cpuinfo:  # not Linux
        return "instruction sets not known (no /proc/cpuinfo)"
    flags = set(cpuinfo.split())
    return " ".join(name for name in MATMUL_INSTRUCTIONS if name in flags) or "no AVX2, AVX-512 or AMX"


def _machine_figures(p: dict, meta: dict, device: torch.device, device_facts, precision: str, precision_why: str, args, mm: dict) -> dict:
    """What the figures were measured on: the machine, the data, the model, the precision and the matmul peaks."""
    return {
        "machine": f"{device_facts.name}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "cpu": f"{cpu_name()}: {cpu_instructions()}",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "data": f"{meta['dataset']}: {meta['n_train']} train / {meta['n_test']} test examples of {meta['input_dim']} pixels",
        "hidden_sizes": p["model"]["hidden_sizes"],
        "precision": precision,
        "precision_why": precision_why,
        "matmul_size": args.matmul_size,
        **{f"matmul_{k}_flops_per_s": v for k, v in mm.items()},
    }


def _default_is_float32(p: dict, device_facts) -> bool:
    """Whether the pipeline's default precisions (train and evaluate) resolve to float32 on this hardware."""
    return all(
        resolve_precision(p[stage]["precision"], device_facts, f"{stage}.precision")[0] == "float32" for stage in ("train", "evaluate")
    )


def _flops_unit(device: torch.device) -> tuple[str, float]:
    """The unit FLOP/s are printed in: GFLOP/s on a CPU, TFLOP/s elsewhere."""
    return ("GFLOP/s", 1e9) if device.type == "cpu" else ("TFLOP/s", 1e12)


def _print_header(fig: dict, meta: dict, p: dict, mm: dict, args, chunk: float, unit: str, scale: float) -> None:
    print(f"vaebic speed benchmark on {fig['device']} ({fig['machine']})")
    print(f"  CPU: {fig['cpu']}")
    print(f"  data: {fig['data']}; model {meta['input_dim']}-{p['model']['hidden_sizes']}-d, batch size {p['train']['batch_size']}")
    print(
        "  peaks: torch.mm "
        + ", ".join(f"{k} {v / scale:.1f} {unit}" for k, v in mm.items())
        + f" ({args.matmul_size}x{args.matmul_size}; both again in every round, fractions are of the faster one)"
    )
    print(
        f"  vaebic runs in {fig['precision']} ({fig['precision_why']}){', compiled' if args.compile else ''}, and in float32 beside it; "
        f"estimate blocks of {chunk:g} MiB"
    )


def _print_training(t: dict, precision: str, unit: str, scale: float) -> None:
    print(f"training, d={t['latent_dim']}, {t['epochs']} epochs of {t['n_train']} examples (medians of {t['rounds']} rounds; {t['cpu']}):")
    print(
        f"  vaebic, {precision}: {t['vaebic_examples_per_s']:9.0f} examples/s   {t['vaebic_flops_per_s'] / scale:7.1f} {unit} = "
        f"{t['vaebic_fraction_of_peak']:.0%} of the peak"
    )
    print(
        f"  vaebic, float32:  {t['vaebic_float32_examples_per_s']:9.0f} examples/s   {t['vaebic_float32_fraction_of_peak']:.0%} of the peak"
        f"   ({precision} / float32: {t['vaebic_vs_vaebic_float32']:.2f}x)"
    )
    print(f"  canonical loop:   {t['canonical_examples_per_s']:9.0f} examples/s   {t['canonical_fraction_of_peak']:.0%} of the peak")
    print(
        f"  ratio vaebic / canonical: {t['vaebic_vs_canonical']:.2f}x   (final -ELBO {t['vaebic_final_loss_nats']:.1f}, "
        f"float32 {t['vaebic_float32_final_loss_nats']:.1f}, canonical {t['canonical_final_loss_nats']:.1f} nats)"
    )


def _print_estimate(e: dict, precision: str, unit: str, scale: float) -> None:
    print(f"importance-weighted log-likelihood, K={e['k_samples']}, d={e['latent_dim']} (medians of {e['rounds']} rounds; {e['cpu']}):")
    print(
        f"  vaebic, {precision}: {e['vaebic_examples_per_s']:9.1f} examples/s   {e['vaebic_flops_per_s'] / scale:7.1f} {unit} = "
        f"{e['vaebic_fraction_of_peak']:.0%} of the peak"
    )
    print(
        f"  vaebic, float32:  {e['vaebic_float32_examples_per_s']:9.1f} examples/s   {e['vaebic_float32_fraction_of_peak']:.0%} of the peak"
        f"   ({precision} / float32: {e['vaebic_vs_vaebic_float32']:.2f}x)"
    )
    print(
        f"  one at a time:    {e['one_at_a_time_examples_per_s']:9.1f} examples/s   {e['one_at_a_time_fraction_of_peak']:.0%} of the peak"
    )
    print(
        f"  ratio vaebic / one-at-a-time: {e['vaebic_vs_one_at_a_time']:.2f}x   (on the loop's {e['n_loop_examples']} examples: "
        f"{e['loop_examples_vaebic_mean_nats']:.2f} +- {e['loop_examples_std_err_nats']:.2f} vs {e['loop_mean_nats']:.2f} nats)"
    )
    print(
        f"  the estimates, {precision} and float32: {e['vaebic_mean_nats']:.3f} and {e['vaebic_float32_mean_nats']:.3f} "
        f"+- {e['vaebic_float32_mean_std_err_nats']:.3f} nats"
    )


def _print_pipeline(q: dict) -> None:
    print(
        f"dvc repro, {len(q['latent_dims'])} latent dims x {len(q['seeds'])} seeds, {q['epochs']} epochs, K={q['k_samples']}, "
        f"{q['n_stages']} stages (train.precision {q['train_precision']}, evaluate.precision {q['evaluate_precision']}; {q['cpu']}):"
    )
    print(f"  wall {q['repro_s']:.1f} s = compute {q['compute_s']:.1f} s + fixed cost {q['fixed_s']:.1f} s ({q['fixed_fraction']:.0%})")
    print(f"  compute: training {q['train_compute_s']:.1f} s + evaluation {q['evaluate_compute_s']:.1f} s, timed inside the stages")
    print(
        f"  of the fixed cost, about {q['est_process_start_and_imports_s']:.0f} s is starting Python and importing torch "
        f"({q['import_torch_s']:.2f} s) and mlflow (with torch {q['import_torch_and_mlflow_s']:.2f} s) where a stage needs them"
    )
    _print_stages(q)
    print(f"  no-op dvc repro: {q['noop_repro_s']:.1f} s")
    if q["float32_is_the_default"]:
        print("  with float32 everywhere: the default already is (no native bf16 here), so it is not run twice")
    else:
        print(
            f"  with float32 everywhere (a fresh copy): {q['float32_repro_s']:.1f} s: the default is {q['speedup_vs_float32']:.2f}x faster"
        )
    _print_accuracy(q["accuracy_vs_float32"])
    print(
        f"  python -m vaebic.sweep --jobs 2 (a fresh copy): {q['sweep_jobs2_s']:.1f} s = {q['sweep_vs_sequential']:.2f} x sequential dvc repro"
    )
    if q["baseline"]:
        b = q["baseline"]
        print(
            f"  the default dvc repro of {b['rev']} ({b['commit']}; its own code and params.yaml: at most {b['epochs']} epochs, "
            f"patience {b['patience'] or 'none'}), a fresh copy: {b['repro_s']:.1f} s; today's default takes {q['repro_vs_baseline']:.2f}x as long"
        )
    if q["repro_cores_busy"] is not None:
        print(
            f"  cores busy: {q['repro_cores_busy']:.0%} during dvc repro, {q['sweep_cores_busy']:.0%} during the sweep; "
            f"the sweep can only fill the core time dvc repro leaves idle, so with the same work it takes at least "
            f"{q['sweep_bound_vs_sequential']:.2f} x dvc repro's wall time"
        )


def _print_stages(q: dict) -> None:
    """Each kind of stage's process time, compute and fixed cost (means over its runs), and DVC's own."""
    kinds: dict[str, list[dict]] = {}
    for t in q["stages"]:
        kinds.setdefault(t["stage"].split("@")[0], []).append(t)
    print(
        f"  fixed cost by stage process (start to exit, less the compute timed inside): mean {q['fixed_per_stage_mean_s']:.2f} s, "
        f"largest {q['fixed_per_stage_max_s']:.2f} s; outside the stage processes (DVC's own work) {q['dvc_own_s']:.1f} s"
    )
    for kind, runs in kinds.items():
        n = len(runs)
        mean = {k: sum(t[k] for t in runs) / n for k in ("process_s", "compute_s", "fixed_s")}
        print(
            f"    {kind:<10} x{n:<3} process {mean['process_s']:6.2f} s = compute {mean['compute_s']:6.2f} s + fixed {mean['fixed_s']:5.2f} s"
            + (" (means)" if n > 1 else "")
        )


def _print_accuracy(a: dict) -> None:
    print(
        f"  accuracy against float32 everywhere: IWAE estimates within {a['worst_diff_in_se']:.2f} Monte-Carlo standard errors "
        f"(bar: 2), final training losses within {a['worst_final_loss_diff']:.3f} nats (bar: 0.3), picks "
        f"{'the same' if a['same_picks'] else 'DIFFERENT'} ({a['picks']})"
    )
    for row in a["rows"]:
        print(
            f"    d-seed {row['model']:>5}: IWAE train {row['iwae_train_diff']:+.4f}, test {row['iwae_test_diff']:+.4f} nats "
            f"({row['diff_in_se']:.2f} SE); final training loss {row['final_loss_diff']:+.4f}"
        )


def _print_targets(fig: dict, quick: bool) -> None:
    print(f"targets (for a 2-core CPU; measured on {fig['cpu']}):")
    if quick:
        print("  (--quick runs tiny sizes to check that everything works: the targets are for the full run)")
    for v in fig["targets"]:
        w, m, tgt, ok = v["what"], v["measured"], v["target"], v["met"]
        verdict = "n/a    " if ok is None else "met    " if ok else "NOT MET"
        why = f"; {fig['precision_why']}, so the default is float32" if ok is None else ""
        print(f"  {verdict}  {w}: {m:.2f} (target {tgt}{why})")


def main() -> None:
    args = _parse_args()
    p = params.load(ROOT / "params.yaml")
    flush_subnormals_everywhere()  # as the stage processes do, before the first parallel operation
    device = pick_device(args.device)
    device_facts = facts(device)
    precision, precision_why = resolve_precision(args.precision, device_facts, "--precision")
    train_x, test_x, meta = _prepared_splits(p, device)
    mm = peaks(device, args.matmul_size)
    fig = _machine_figures(p, meta, device, device_facts, precision, precision_why, args, mm)
    unit, scale = _flops_unit(device)
    chunk, _ = chunk_mb(args.max_chunk_mb if args.max_chunk_mb == "auto" else float(args.max_chunk_mb), device_facts)
    _print_header(fig, meta, p, mm, args, chunk, unit, scale)
    if not args.pipeline_only:
        t = fig["training"] = bench_training(
            p, train_x, args.latent_dim, args.epochs, args.repeats, device, args.matmul_size, precision, args.compile
        )
        t["cpu"] = fig["cpu"]
        _print_training(t, precision, unit, scale)
        e = fig["estimate"] = bench_estimate(
            p,
            train_x,
            test_x,
            args.latent_dim,
            args.k_samples,
            args.examples,
            args.loop_examples,
            args.repeats,
            device,
            args.matmul_size,
            precision,
            chunk,
        )
        e["cpu"] = fig["cpu"]
        _print_estimate(e, precision, unit, scale)
    if not args.skip_pipeline:
        changes = _quick_pipeline_changes() if args.quick else {}
        fig["pipeline"] = bench_pipeline(
            p, changes, _default_is_float32(p, device_facts), startup_repeats=min(3, args.repeats), baseline=args.baseline
        )
        fig["pipeline"]["cpu"] = fig["cpu"]
        _print_pipeline(fig["pipeline"])
    fig["targets"] = [{"what": w, "measured": m, "target": tgt, "met": ok} for w, m, tgt, ok in verdicts(fig)]
    _print_targets(fig, args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2) + "\n")


if __name__ == "__main__":
    main()
