"""What every stage script shares: its argument parser and the wrapper that turns user errors
into one plain message and a non-zero exit code."""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from vaebic.errors import VaebicError

DEBUG_ENV = "VAEBIC_DEBUG"
TIMINGS_ENV = "VAEBIC_TIMINGS"  # benchmarks/speed.py: a file that collects each stage's compute and process time
_IMPORTED = time.time()  # when this module was imported: the process's start where /proc is absent


def stage_parser(description: str | None, *, per_model: bool = False) -> argparse.ArgumentParser:
    """--params and --data for every stage; --latent-dim and --seed for the per-model stages."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--params", default="params.yaml", help="the parameters file")
    ap.add_argument("--data", default="data/prepared", help="the prepared-data folder")
    if per_model:
        ap.add_argument("--latent-dim", type=int, required=True)
        ap.add_argument("--seed", type=int, required=True)
    return ap


_stop = {"cause": "Ctrl-C", "code": 130}


def _on_sigterm(signum, frame):
    """SIGTERM (a CI timeout, `kill`, a cluster's pre-emption) stops a stage like Ctrl-C: the
    MLflow run ends KILLED and the train stage keeps its checkpoint."""
    _stop.update(cause="SIGTERM", code=143)
    raise KeyboardInterrupt


def run_cli(main: Callable[..., None], argv: list[str] | None = None) -> None:
    """Run a command's main(argv): user errors become `error: <message>` on stderr and exit code 1.
    argv None: the process's own arguments; a list runs it in-process, as the tests do.

    Ctrl-C (exit code 130) and SIGTERM (143) print one line: the stage's own note (the
    KeyboardInterrupt's message, e.g. where the checkpoint is) or how to redo the stage. Any other
    exception is a bug and keeps its traceback. A process of its own (argv None) then ends without
    Python's teardown of its modules (_exit_without_teardown).
    """
    signal.signal(signal.SIGTERM, _on_sigterm)
    configure_logging()
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if argv is None and os.environ.get(TIMINGS_ENV):  # a process of its own: its time from start to exit
        atexit.register(_record_process_time, os.environ[TIMINGS_ENV], os.environ.get("DVC_STAGE") or Path(sys.argv[0]).stem)
    end = _exit_without_teardown if argv is None else sys.exit  # in-process: SystemExit, as the tests expect
    try:
        main() if argv is None else main(argv)
    except VaebicError as exc:
        if debug:
            raise
        print(f"error: {exc}{restore_hint()}", file=sys.stderr)
        end(1)
    except Exception as exc:
        fault = _tracking_fault(exc)
        if fault is None or debug:
            raise
        print(f"error: {fault}{restore_hint()}", file=sys.stderr)
        end(1)
    except KeyboardInterrupt as exc:
        print(f"interrupted: stopped by {_stop['cause']}; {exc or 'run `dvc repro` again to redo this stage'}", file=sys.stderr)
        end(_stop["code"])
    if argv is None:
        end(0)


def configure_logging() -> None:
    """A stage's log lines: time, logger, message, on stderr; the chatter of libraries kept out."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("alembic", "mlflow.store", "mlflow.tracking", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # a retry warning per request to a dead server; the error line says it


def _exit_without_teardown(code: int) -> NoReturn:
    """End this process, which ran a command, as Python would but for its teardown of every
    loaded module: that took 0.5 to 1.4 s of every stage with torch, MLflow and SQLAlchemy loaded
    (2-core AMD EPYC) and writes nothing. Every exit handler runs first (logging's, coverage's, a
    wrapper's), then the output is flushed. Where a thread of the command's own is still running,
    Python's own exit waits for it, as always."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()  # what Python's exit runs before its teardown (undocumented, in CPython since 3.0)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


def _tracking_fault(exc: BaseException) -> str | None:
    """A tracking-store failure as one line (see tracking.store_fault), only where MLflow is loaded."""
    if "mlflow" not in sys.modules:
        return None
    from vaebic.tracking import store_fault

    return store_fault(exc)


def restore_hint() -> str:
    """For a stage that `dvc repro` runs: DVC removed its cached outputs before running it, so
    say where the previous ones are (DVC's cache, as dvc.lock records them) and how to put them back."""
    stage, root = os.environ.get("DVC_STAGE"), os.environ.get("DVC_ROOT")
    if not stage or not root:
        return ""
    try:
        import yaml

        with open(os.path.join(root, "dvc.lock")) as f:
            outs = yaml.safe_load(f)["stages"][stage]["outs"]
    except (OSError, KeyError, TypeError, ValueError):  # no lock, or this stage never finished: nothing to restore
        return ""
    removed = [o["path"] for o in outs if not os.path.exists(os.path.join(root, o["path"]))]  # persistent ones stay
    if not removed:
        return ""
    return f"; the outputs of its last successful run ({', '.join(removed)}) are in DVC's cache: `dvc checkout {stage}` puts them back"


def process_age() -> float:
    """Seconds since this process started: from /proc on Linux (10 ms resolution), else since
    vaebic.cli was imported (which misses the interpreter's own start)."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: starttime, in ticks since boot
    except (OSError, ValueError, IndexError):
        return time.time() - _IMPORTED


def _record_process_time(path: str, stage: str) -> None:
    """Append {"stage", "process_seconds"}: this stage process's wall time from its start (imports
    included) to its exit, for benchmarks/speed.py's split of the fixed cost by stage."""
    with open(path, "a") as f:
        f.write(json.dumps({"stage": stage, "process_seconds": process_age()}) + "\n")


@contextmanager
def compute_timer(stage: str):
    """Time a stage's compute (training, evaluation): when VAEBIC_TIMINGS names a file, append
    {"stage", "seconds"} to it, so that benchmarks/speed.py can split a `dvc repro` into compute
    and fixed cost. Nothing is written otherwise, and no output of the pipeline depends on it."""
    start = time.perf_counter()
    yield
    path = os.environ.get(TIMINGS_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"stage": stage, "seconds": time.perf_counter() - start}) + "\n")


@contextmanager
def explain_out_of_memory(fix: str):
    """Turn an out-of-memory error (CUDA's torch.OutOfMemoryError, MPS's and the CPU allocator's
    plain RuntimeError) into one plain line: what ran out, and the parameter to change (fix),
    instead of a traceback that ends in an allocator's statistics."""
    from vaebic.device import is_out_of_memory

    try:
        yield
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        first = (str(exc).strip().splitlines() or ["out of memory"])[0]
        raise VaebicError(f"out of device memory: {first[:200]}; {fix}") from None


@contextmanager
def compute(stage: str, oom_fix: str):
    """A stage's heavy work (training, evaluation): timed (compute_timer), and an out-of-memory
    error explained in one line naming the parameter to change (explain_out_of_memory)."""
    with compute_timer(stage), explain_out_of_memory(oom_fix):
        yield
