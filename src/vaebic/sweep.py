"""`python -m vaebic.sweep`: the sweep's models trained and evaluated N at a time, on Dask workers.

    python -m vaebic.sweep --jobs 2                    # one machine: 2 models at a time, CPU threads shared out
    python -m vaebic.sweep --gpus 0,1,2,3              # one machine: one model per GPU
    python -m vaebic.sweep --scheduler tcp://host:8786 # a Dask cluster (dask-jobqueue on Slurm/PBS, `dask worker`s, ...)

It is glue around DVC, not a scheduler of its own:

1. `dvc repro prepare` here, once (validate and prepare).
2. For each (latent_dim, seed) that is not up to date, one Dask task runs `dvc repro -s
   train@<d>-<seed> evaluate@<d>-<seed>`, at most N at a time.
   - One machine: the tasks share this workspace. DVC's locks keep them apart (`dvc
     --wait-for-lock`, and a lock error is retried); each gets one GPU of --gpus, or an equal share
     of the CPU threads.
   - A cluster: each task works in its own clone of the repository at this commit (params.yaml
     and dvc.lock as they are here), takes the prepared data from the default DVC remote, and
     pushes its outputs and DVC's run-cache back there. MLflow must be a tracking server
     (MLFLOW_TRACKING_URI), which every machine reaches.
3. `dvc repro` here: select and report. On a cluster, after `dvc fetch --run-cache`, with
   `--pull`: the workers' train and evaluate stages are restored from the run-cache, not re-run.
4. dvc.lock is written back in the order a sequential `dvc repro` gives it, so that the
   workspace ends as a sequential run leaves it (`dvc status` clean).

A failed stage fails the sweep with its one-line error once the stages still running have
finished; run the same command again to resume (finished models are up to date, an interrupted
one resumes from its checkpoint). Ctrl-C stops every task: each stage ends as after Ctrl-C,
keeping its checkpoint.

Why Dask: pure Python from PyPI; `distributed.LocalCluster` on one machine and a real cluster
through the same Client; dask-jobqueue starts workers on Slurm, PBS, SGE or LSF with one class.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from vaebic.cli import run_cli
from vaebic.errors import VaebicError

log = logging.getLogger("vaebic.sweep")

INTERRUPTED = 130
LOCK_ERRORS = ("Unable to acquire lock", "is busy, it is being blocked by")
LOCK_RETRIES = 20


@dataclass(frozen=True)
class Task:
    """One model's train and evaluate stages, and where and how to run them."""

    latent_dim: int
    seed: int
    stop_event: str  # name of the distributed.Event that asks every task to stop
    workspace: str | None = None  # the shared workspace (one machine); None: a clone (cluster)
    repo: str | None = None  # cluster: what to clone
    commit: str | None = None
    files: dict = field(default_factory=dict)  # cluster: params.yaml and dvc.lock as the driver has them
    env: dict = field(default_factory=dict)  # MLFLOW_TRACKING_URI, thread counts, ...
    gpus: tuple = ()  # one per worker, by worker name
    clone_root: str | None = None

    @property
    def name(self) -> str:
        return f"{self.latent_dim}-{self.seed}"

    @property
    def stages(self) -> tuple[str, str]:
        return f"train@{self.name}", f"evaluate@{self.name}"


def run_task(task: Task) -> dict:
    """On a Dask worker: both stages of one model. Returns what happened, never raises for a
    stage that failed (its error line and log tail are in the result)."""
    from distributed import Event, get_worker

    stop = Event(task.stop_event)
    env = {**os.environ, **task.env}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # stages' `python` is this one
    worker = get_worker().name
    if task.gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(task.gpus[int(worker) % len(task.gpus)])
    start, logs = time.monotonic(), []
    try:
        cwd = Path(task.workspace) if task.workspace else _clone(task, env, logs)
        cloned = task.workspace is None
        if cloned:
            env["PYTHONPATH"] = f"{cwd / 'src'}{os.pathsep}{env.get('PYTHONPATH', '')}"  # this commit's library
            _checked(["pull", "prepare"], cwd, env, stop, logs)
        # both stages in one `dvc repro`: one DVC start-up and one look at the pipeline per model
        code = _dvc(["repro", "--single-item", *(["--pull"] if cloned else []), *task.stages], cwd, env, stop, logs)
        if code:
            return _result(task, worker, start, logs, stage=_last_stage(logs[-1], task.stages), code=code)
        if cloned:
            _checked(["push", "--run-cache", *task.stages], cwd, env, stop, logs)
            shutil.rmtree(cwd, ignore_errors=True)  # done: nothing to resume
    except _StageFailed as failed:
        return _result(task, worker, start, logs, stage=failed.what, code=failed.code)
    return _result(task, worker, start, logs)


class _StageFailed(Exception):
    def __init__(self, what: str, code: int):
        super().__init__(what)
        self.what, self.code = what, code


def _result(task: Task, worker, start: float, logs: list[str], stage: str | None = None, code: int = 0) -> dict:
    text = "".join(logs)
    return {
        "name": task.name,
        "stages": list(task.stages),
        "worker": str(worker),
        "seconds": time.monotonic() - start,
        "ok": code == 0,
        "failed_stage": stage,
        "code": code,
        "error": _error_line(text) if code else None,
        "interrupted": code == INTERRUPTED or "interrupted: stopped by" in text,
        "log": _head_and_tail(text),
    }


def _last_stage(text: str, stages: tuple[str, ...]) -> str:
    """The stage that `dvc repro` of stages was running when it stopped: the last it started."""
    started = re.findall(r"Running stage '([^']+)'", text)
    return started[-1] if started else stages[0]


def _head_and_tail(text: str, keep: int = 100_000) -> str:
    """A log short enough to send back: its beginning (what ran, a resume) and its end (the outcome)."""
    if len(text) <= 2 * keep:
        return text
    return f"{text[:keep]}\n[... {len(text) - 2 * keep} characters left out ...]\n{text[-keep:]}"


def _error_line(text: str) -> str:
    """The stage's own `error:` line if it printed one, else DVC's, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for prefix in ("error: ", "interrupted: ", "ERROR: "):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[-1]
    return lines[-1] if lines else "failed without output"


def _dvc(args: list[str], cwd: Path, env: dict, stop, logs: list[str]) -> int:
    """Run `dvc --wait-for-lock <args>` in its own process group, retrying DVC lock errors; if the
    stop event is set meanwhile, send it SIGINT (as Ctrl-C would) and return its exit code."""
    for attempt in range(LOCK_RETRIES):
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dvc", "--wait-for-lock", *args],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            interrupted = False
            while proc.poll() is None:
                try:
                    proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    if not interrupted and stop.is_set():
                        interrupted = True
                        os.killpg(proc.pid, signal.SIGINT)
            out.seek(0)
            text = out.read()
        logs.append(f"$ dvc {' '.join(args)}\n{text}")
        if proc.returncode and not interrupted and any(e in text for e in LOCK_ERRORS) and attempt + 1 < LOCK_RETRIES:
            time.sleep(1 + attempt)
            continue
        return INTERRUPTED if interrupted else proc.returncode
    return proc.returncode


def _checked(args: list[str], cwd: Path, env: dict, stop, logs: list[str]) -> None:
    code = _dvc(args, cwd, env, stop, logs)
    if code:
        raise _StageFailed(f"dvc {' '.join(args)}", code)


def _clone(task: Task, env: dict, logs: list[str]) -> Path:
    """This task's own clone at the sweep's commit, with the driver's params.yaml and dvc.lock;
    kept after a failure, so that running the sweep again resumes there."""
    root = Path(task.clone_root or tempfile.gettempdir()) / "vaebic-sweep" / task.commit[:12] / task.name
    if not (root / ".git").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        _git(["clone", "--quiet", "--no-checkout", task.repo, str(root)], Path(root.parent), logs)
    _git(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", task.commit], root, logs)
    for name, text in task.files.items():
        (root / name).write_text(text)
    return root


def _git(args: list[str], cwd: Path, logs: list[str]) -> None:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    logs.append(f"$ git {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode:
        raise _StageFailed(f"git {args[0]}", proc.returncode)


# --- the driver


def _dvc_here(args: list[str], root: Path) -> None:
    """`dvc <args>` in the project, its output passed through as it comes; a failure ends the
    sweep with its error line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "--wait-for-lock", *args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    except KeyboardInterrupt:  # passed on, so that no dvc is left running on its own
        proc.send_signal(signal.SIGINT)
        proc.wait()
        raise
    if proc.wait() == INTERRUPTED:
        raise KeyboardInterrupt("run the same command again to resume")
    if proc.returncode:
        raise VaebicError(f"`dvc {' '.join(args)}` failed: {_error_line(''.join(lines))}")


def pending(root: Path, names: list[str]) -> list[str]:
    """The models (d-seed) whose train or evaluate stage is not up to date, in sweep order."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True, text=True)
    if proc.returncode:
        raise VaebicError(f"`dvc status` failed: {_error_line(proc.stdout + proc.stderr)}")
    stale = set(json.loads(proc.stdout or "{}"))
    return [n for n in names if f"train@{n}" in stale or f"evaluate@{n}" in stale]


def sequential_lock_order(root: Path) -> None:
    """Rewrite dvc.lock with its stages in the order a sequential `dvc repro` records them
    (DVC's own plan), so that a parallel sweep leaves the file a sequential run would."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import plan_repro
    from dvc.utils.serialize import modify_yaml

    with Repo(str(root)) as repo:
        order = [stage.addressing for stage in plan_repro(repo.index.graph)]
    with modify_yaml(str(root / "dvc.lock")) as lock:
        stages = lock.get("stages", {})
        ranked = sorted(stages, key=lambda name: order.index(name) if name in order else len(order))
        items = [(name, stages[name]) for name in ranked]
        for name, _ in items:
            del stages[name]
        for name, value in items:
            stages[name] = value


def _cluster_checks(root: Path) -> tuple[str, str]:
    """A cluster's workers clone the commit and reach MLflow and the DVC remote: check that they can."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://", "databricks")):
        raise VaebicError(
            "a sweep on a cluster needs an MLflow tracking server that every machine reaches: set MLFLOW_TRACKING_URI "
            "(e.g. http://host:5000); a local mlflow.db would stay on each worker"
        )
    remote = subprocess.run([sys.executable, "-m", "dvc", "remote", "default"], cwd=root, capture_output=True, text=True).stdout.strip()
    if not remote:
        raise VaebicError(
            "a sweep on a cluster hands results back through the default DVC remote, and there is none: "
            "`dvc remote add -d shared s3://bucket/path` (or ssh://, gs://, a shared folder), then commit .dvc/config"
        )
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    if head.returncode:
        raise VaebicError("a sweep on a cluster clones this repository's commit, and there is none: commit the project first")
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "dvc.yaml", "src", "stages", ".dvc/config"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    if dirty:
        raise VaebicError(
            f"a sweep on a cluster runs the committed code, and these files have changes: {' '.join(dirty.split()[1::2])}; "
            "commit them first (params.yaml may differ: it is sent along)"
        )
    return head.stdout.strip(), remote


def _client(args):
    """A Dask client: of the cluster at --scheduler, or of a local cluster of --jobs workers."""
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)
    if args.scheduler:
        return Client(args.scheduler, timeout="30s"), None
    # threads: each task only waits for its `dvc` subprocess, so workers need no process of their own
    cluster = LocalCluster(n_workers=args.jobs, threads_per_worker=1, processes=False, dashboard_address=None)
    return Client(cluster), cluster


def sweep(args) -> None:
    from vaebic import params

    root = Path.cwd()
    if not (root / "dvc.yaml").exists():
        raise VaebicError("run `python -m vaebic.sweep` in the project root, where dvc.yaml is")
    p = params.load(root / "params.yaml")
    names = [f"{d}-{s}" for d in p["sweep"]["latent_dims"] for s in p["sweep"]["seeds"]]
    on_cluster = bool(args.scheduler)
    commit = remote = None
    if on_cluster:
        commit, remote = _cluster_checks(root)

    log.info("1. validate and prepare, here")
    _dvc_here(["repro", "prepare"], root)
    if on_cluster:
        _dvc_here(["push", "prepare"], root)  # the workers' prepared data

    todo = pending(root, names)
    if todo:
        run_all(args, root, todo, commit)
    else:
        log.info("2. every model is up to date")

    log.info("3. select and report, here")
    if on_cluster:
        _dvc_here(["fetch", "--run-cache"], root)
        _dvc_here(["repro", "--pull"], root)
    else:
        _dvc_here(["repro"], root)
    sequential_lock_order(root)
    log.info("done: reports/report.md")


def cpu_thread_share(jobs: int) -> dict[str, str]:
    """OMP_NUM_THREADS and MKL_NUM_THREADS for one of `jobs` processes that share this machine's
    cores equally (at least one thread each): more threads than cores busy-wait on each other. And
    TORCHINDUCTOR_COMPILE_THREADS, torch.compile's pool of compiler processes (one per core by
    default, each importing torch): with one, it compiles in the process itself."""
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TORCHINDUCTOR_COMPILE_THREADS": threads}


def run_all(args, root: Path, todo: list[str], commit: str | None) -> None:
    """Step 2: the tasks, at most --jobs at a time (a cluster: as many as it has workers, or --jobs)."""
    from distributed import Event

    client, cluster = _client(args)
    try:
        n_workers = len(client.scheduler_info()["workers"]) or 1
        jobs = args.jobs if args.jobs else n_workers
        env = dict(args.env)
        if not args.scheduler and not args.gpus:  # an equal share of this machine's CPU threads
            env.update(cpu_thread_share(jobs))
        stop = f"vaebic-stop-{uuid.uuid4().hex}"
        Event(stop, client=client).clear()
        files = {name: (root / name).read_text() for name in ("params.yaml", "dvc.lock")} if commit else {}
        tasks = [
            Task(
                int(n.split("-")[0]),
                int(n.split("-")[1]),
                stop,
                workspace=None if commit else str(root),
                repo=args.repo or str(root),
                commit=commit,
                files=files,
                env=env,
                gpus=tuple(args.gpus),
                clone_root=args.clone_dir,
            )
            for n in todo
        ]
        where = f"the Dask cluster at {args.scheduler} ({n_workers} workers)" if args.scheduler else f"{jobs} local workers"
        log.info(
            "2. train and evaluate %d models, %d at a time, on %s%s",
            len(tasks),
            jobs,
            where,
            f", one GPU each ({','.join(map(str, args.gpus))})"
            if args.gpus
            else ""
            if args.scheduler
            else f", {env['OMP_NUM_THREADS']} CPU threads each",
        )
        _fan_out(client, tasks, jobs, root, stop)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _fan_out(client, tasks: list[Task], jobs: int, root: Path, stop: str) -> None:
    """Keep `jobs` tasks running until all are done or one failed; then wait for the running ones."""
    from distributed import Event, as_completed

    queue, in_flight, failures, done = list(tasks), set(), [], 0
    logs = root / ".dvc" / "tmp" / "sweep"  # each model's dvc output (ignored by git, like all of .dvc/tmp)
    logs.mkdir(parents=True, exist_ok=True)
    finished = as_completed()

    def submit():
        task = queue.pop(0)
        future = client.submit(run_task, task, key=f"vaebic-{task.name}-{uuid.uuid4().hex[:8]}", pure=False)
        in_flight.add(future)
        finished.add(future)

    for _ in range(min(jobs, len(queue))):
        submit()
    try:
        for future in finished:
            in_flight.discard(future)
            r = future.result()
            (logs / f"{r['name']}.log").write_text(r["log"])
            done += 1
            if r["ok"]:
                log.info("[%d/%d] %s: trained and evaluated in %.0f s (worker %s)", done, len(tasks), r["name"], r["seconds"], r["worker"])
            else:
                failures.append(r)
                log.info("[%d/%d] %s: %s failed: %s", done, len(tasks), r["name"], r["failed_stage"], r["error"])
            if queue and not failures:
                submit()
    except KeyboardInterrupt:
        log.info("stopping every task (each stage keeps its checkpoint) ...")
        Event(stop, client=client).set()
        for future in list(in_flight):
            try:
                r = future.result(timeout=300)
                (logs / f"{r['name']}.log").write_text(r["log"])
            except Exception:  # noqa: BLE001 - a task that cannot report: nothing more to do for it
                pass
        raise KeyboardInterrupt(
            "every task was stopped; run the same command again to resume "
            "(finished models are up to date, interrupted ones resume from their checkpoints)"
        ) from None
    if failures:
        first = failures[0]
        more = (
            f" ({len(failures) - 1} more failed; logs in .dvc/tmp/sweep/)"
            if len(failures) > 1
            else f" (log: .dvc/tmp/sweep/{first['name']}.log)"
        )
        raise VaebicError(
            f"{first['failed_stage']} failed: {re.sub(r'^(error|ERROR): ', '', first['error'])}{more}; "
            "fix it and run the same command again: finished models are up to date"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vaebic.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=None,
        help="models at a time (default: one per GPU with --gpus, the cluster's workers with --scheduler, else 2)",
    )
    ap.add_argument(
        "--gpus",
        type=lambda s: [g.strip() for g in s.split(",") if g.strip()],
        default=[],
        help="comma-separated GPU ids, one per worker (sets CUDA_VISIBLE_DEVICES)",
    )
    ap.add_argument("--scheduler", help="address of a Dask scheduler (tcp://host:8786): run on that cluster, each task in its own clone")
    ap.add_argument("--repo", help="cluster: the repository the workers clone (default: this folder, for a shared file system)")
    ap.add_argument("--clone-dir", help="cluster: where workers make their clones (default: their temporary folder)")
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        type=lambda s: tuple(s.split("=", 1)),
        metavar="NAME=VALUE",
        help="an environment variable for every task (repeatable)",
    )
    args = ap.parse_args(argv)
    if args.jobs is None and not args.scheduler:
        args.jobs = len(args.gpus) or 2
    if args.jobs is not None and args.jobs < 1:
        ap.error("--jobs must be at least 1")
    for name in ("MLFLOW_TRACKING_URI",):  # where the tasks' runs go, as here
        if os.environ.get(name):
            args.env.append((name, os.environ[name]))
    run_cli(lambda: sweep(args))


if __name__ == "__main__":
    main()
