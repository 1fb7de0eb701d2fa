"""The benchmarks run (tiny sizes); their figures are read by people, never asserted as timings."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def speed_module():
    """benchmarks/speed.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("vaebic_speed_benchmark", ROOT / "benchmarks" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_speed_benchmark_measures_every_part_and_judges_every_target(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/speed.py", "--quick", "--baseline", "HEAD", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in (
        "ratio vaebic / canonical",
        "ratio vaebic / one-at-a-time",
        "compute",
        "no-op dvc repro",
        "targets",
        "with float32 everywhere",
        "accuracy against float32 everywhere",
    ):
        assert line in proc.stdout
    fig = json.loads(out.read_text())
    assert fig["matmul_float32_flops_per_s"] > 0
    t, e, q = fig["training"], fig["estimate"], fig["pipeline"]
    # the CPU and its matrix-multiply instruction sets beside every figure
    assert t["cpu"] == e["cpu"] == q["cpu"] == fig["cpu"] and proc.stdout.count(fig["cpu"]) == 5
    if Path("/proc/cpuinfo").exists():
        assert set(fig["cpu"].split(": ")[-1].split()) <= set(speed_module().MATMUL_INSTRUCTIONS)
    assert t["vaebic_examples_per_s"] > 0 and t["canonical_examples_per_s"] > 0 and t["vaebic_float32_examples_per_s"] > 0
    # fractions are of the faster peak, measured in every round
    assert t["peak_flops_per_s"] >= t["matmul_float32_flops_per_s"] and 0 < t["vaebic_fraction_of_peak"] < 1
    assert len(t["vaebic_vs_canonical_per_round"]) == t["rounds"] and len(e["vaebic_vs_one_at_a_time_per_round"]) == e["rounds"]
    # both loops train the same model on the same data: losses in the same range (nats per example)
    assert 100 < t["vaebic_final_loss_nats"] < 600 and 100 < t["canonical_final_loss_nats"] < 600
    assert 100 < t["vaebic_float32_final_loss_nats"] < 600
    # the same estimator on the same examples with independent draws: the difference has about
    # sqrt(2) times the standard error of one estimate; allow 5 of those
    assert abs(e["loop_mean_nats"] - e["loop_examples_vaebic_mean_nats"]) < 5 * 2**0.5 * e["loop_examples_std_err_nats"]
    assert 0 < q["compute_s"] < q["repro_s"] and q["noop_repro_s"] > 0
    assert q["fixed_s"] == pytest.approx(q["repro_s"] - q["compute_s"])
    # every stage process timed from its start to its exit: 6 of them, compute inside, DVC's own beside
    assert [t["stage"] for t in q["stages"]][:2] == ["validate", "prepare"] and len(q["stages"]) == q["n_stages"]
    assert all(0 <= t["compute_s"] < t["process_s"] for t in q["stages"]) and 0 < q["dvc_own_s"] < q["repro_s"]
    assert q["fixed_per_stage_max_s"] >= q["fixed_per_stage_mean_s"] > 0
    assert "fixed cost by stage process" in proc.stdout
    assert [v["what"] for v in fig["targets"]] == [
        "training vs canonical loop (x)",
        "training, fraction of the faster matmul peak",
        "estimate, fraction of the faster matmul peak",
        "estimate vs one-at-a-time loop (x)",
        "fixed cost, fraction of dvc repro",
        "fixed cost per stage process, mean (s)",
        "no-op dvc repro (s)",
        "default dvc repro vs float32 everywhere (x)",
        "sweep --jobs 2, fraction of sequential dvc repro",
        "default dvc repro vs HEAD's (x)",
    ]
    a = q["accuracy_vs_float32"]
    assert q["float32_repro_s"] > 0 and q["speedup_vs_float32"] == pytest.approx(q["float32_repro_s"] / q["repro_s"])
    assert [r["model"] for r in a["rows"]] == ["2-0"] and a["worst_diff_in_se"] >= 0 and isinstance(a["same_picks"], bool)
    # --baseline: a commit's own default dvc repro, exported with git archive, timed in the same run
    b = q["baseline"]
    assert b["rev"] == "HEAD" and len(b["commit"]) >= 7 and b["repro_s"] > 0 and b["epochs"] == 1
    assert q["repro_vs_baseline"] == pytest.approx(q["repro_s"] / b["repro_s"])
    assert f"the default dvc repro of HEAD ({b['commit']}; its own code and params.yaml" in proc.stdout
    assert q["sweep_jobs2_s"] > 0 and q["sweep_vs_sequential"] == pytest.approx(q["sweep_jobs2_s"] / q["repro_s"])
    if sys.platform.startswith("linux"):  # core use from /proc/stat: the lower bound of a sweep's wall time
        assert 0 < q["repro_cores_busy"] <= 1 and 0 < q["sweep_cores_busy"] <= 1
        assert q["sweep_bound_vs_sequential"] == q["repro_cores_busy"]
        assert "cores busy:" in proc.stdout


def test_the_benchmark_names_the_cpus_matrix_multiply_instructions():
    cpu_instructions = speed_module().cpu_instructions
    avx2_only = "processor : 0\nflags : fpu sse2 avx fma avx2 bmi2\nprocessor : 1\nflags : fpu sse2 avx fma avx2 bmi2\n"
    sapphire_rapids = "flags : avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8\n"
    assert cpu_instructions(avx2_only) == "avx2 fma"
    assert cpu_instructions(sapphire_rapids) == "avx2 fma avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8"
    assert cpu_instructions("Features : fp asimd sve\n") == "no AVX2, AVX-512 or AMX"  # an ARM CPU
    assert cpu_instructions("") == "instruction sets not known (no /proc/cpuinfo)"  # not Linux


def test_prepare_benchmark_runs(tmp_path):
    out = tmp_path / "prepare.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/prepare_speed.py", "--n", "700", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ratio per-image loop / vaebic prepare" in proc.stdout
    assert json.loads(out.read_text())["n_images"] == 700


@pytest.mark.slow
def test_the_stopping_benchmark_follows_every_rule_along_one_trajectory(tmp_path):
    out = tmp_path / "stopping.json"
    cmd = [
        sys.executable,
        "benchmarks/stopping.py",
        "--dims",
        "1,2",
        "--lr-patience",
        "0,10",
        "--cap",
        "3",
        "--max-examples",
        "300",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())
    # 2 schedules x 2 dims x 8 rules, each rule's kept weights scored on both splits
    assert len(rows) == 2 * 2 * 8 and {r["monitor"] for r in rows} == {"elbo", "iwae"}
    assert all(1 <= r["best_epoch"] <= r["epochs"] <= 3 and r["test"] < 0 and r["train"] < 0 for r in rows)
    assert "| learning rate | validation objective, patience, min_delta | BIC | AIC | held-out |" in proc.stdout
    assert "| halved after 10 epochs without improvement | iwae, patience 20, min_delta 0 |" in proc.stdout


@pytest.mark.slow
def test_the_stopping_benchmark_compares_batch_sizes_and_learning_rates(tmp_path):
    out = tmp_path / "configs.json"
    cmd = [sys.executable, "benchmarks/stopping.py", "--dims", "1,2", "--lr-patience", "10", "--cap", "3", "--max-examples", "300"]
    cmd += ["--configs", "64:0.001,128:0.003", "--default-rule-only", "--seed", "1", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())
    # 2 configurations x 2 dims, params.yaml's rule only (the IWAE, its patience and min_delta)
    assert [(r["batch_size"], r["lr"], r["latent_dim"]) for r in rows] == [(64, 0.001, 1), (64, 0.001, 2), (128, 0.003, 1), (128, 0.003, 2)]
    train = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    assert {(r["monitor"], r["patience"], r["min_delta"], r["seed"]) for r in rows} == {("iwae", train["patience"], train["min_delta"], 1)}
    # examples seen = epochs x training examples; seconds grow with the epochs of one trajectory
    assert all(r["examples_seen"] == r["epochs"] * r["n"] and r["seconds"] > 0 for r in rows)
    assert f"| 64 | 0.001 | halved after 10 epochs without improvement | iwae, patience {train['patience']}," in proc.stdout
    assert "| 128 | 0.003 |" in proc.stdout
    # and model by model, where a mean over the dimensions could hide a worse plateau
    assert "| d | batch 64, lr 0.001, halve after 10, seed 1 | batch 128, lr 0.003, halve after 10, seed 1 |" in proc.stdout
    assert all(r["best_validation"] < 0 for r in rows)
