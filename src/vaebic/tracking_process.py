"""A train stage's MLflow calls, made by a process of their own (the stage's tracking process).

A train stage needs torch and MLflow, and each takes about as long to import: on a 2-core CPU,
torch 1.3 s, MLflow with its SQLite store 1.6 s, one after the other in one process (imports hold
Python's lock, so a thread would not overlap them). Started before the stage imports torch, this
process imports MLflow meanwhile on the other core. It then makes the MLflow calls the stage asks
for, each a function of vaebic.tracking named in a message over a pipe, and answers with the
result or the error. Every call waits for its answer: when a call returns, the run holds what it
logged, as when the stage made the call itself, and the MLflow UI follows the run live as before.

Signals are the stage's to act on: this process ignores Ctrl-C and SIGTERM, and the stage ends the
run (FINISHED, FAILED, or KILLED on Ctrl-C or SIGTERM, with the cause as a tag) through it. If the
stage dies without a word (SIGKILL), this process finds its end of the pipe closed and exits,
leaving the run RUNNING as a stage's own MLflow client would; the stage that resumes from the
checkpoint ends it as KILLED (tracking.link_resumed).

On Windows, which cannot hand a socket to a child process this way, the calls run in the stage's
own process (TrackingProcess(in_process=True)), with the same answers.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

from vaebic.errors import VaebicError

#: the tracking process's program: its logging as a stage's, then the loop of calls (serve)
_PROGRAM = "import sys; from vaebic import cli, tracking_process; cli.configure_logging(); tracking_process.serve(int(sys.argv[1]))"
#: seconds to wait for the tracking process to end once the stage is done with it
EXIT_WAIT_S = 60.0


class TrackingError(VaebicError):
    """The tracking process failed or ended before answering."""


class TrackingProcess:
    """The stage's side of the tracking process: call() makes one call of a vaebic.tracking
    function there; model_run() opens a model's run there, as tracking.model_run does in-process,
    and yields its id. Use it as a context: leaving it ends the process."""

    def __init__(self, in_process: bool = os.name == "nt"):
        self.proc = None
        if in_process:
            self.conn = _InProcess()
            return
        from multiprocessing.connection import Connection

        mine, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")]))}
        with theirs:
            self.proc = subprocess.Popen([sys.executable, "-c", _PROGRAM, str(theirs.fileno())], pass_fds=[theirs.fileno()], env=env)
        self.conn = Connection(mine.detach())

    def call(self, name: str, *args, **kwargs):
        """tracking.<name>(*args, **kwargs) in the tracking process; its result, or its error raised here."""
        return self._ask(("call", name, args, kwargs))

    @contextmanager
    def model_run(self, *args):
        """tracking.model_run(*args) in the tracking process, yielding the run's id. An exception
        in the block ends the run there as it would here (KILLED for Ctrl-C and SIGTERM, else FAILED,
        the cause tagged), then goes on."""
        run_id = self._ask(("enter", "model_run", args, {}))
        try:
            yield run_id
        except BaseException as exc:
            self._ask(("exit", None, (_described(exc),), {}))
            raise
        self._ask(("exit", None, (None,), {}))

    def _ask(self, message: tuple):
        from vaebic.tracking import uninterrupted

        with uninterrupted():  # a call and its answer are not cut apart by Ctrl-C
            try:
                self.conn.send(message)
                status, value = self.conn.recv()
            except (EOFError, OSError):
                raise TrackingError(f"the MLflow tracking process ended before it answered{self._how_it_ended()}") from None
        if status == "error":
            raise value
        return value

    def _how_it_ended(self) -> str:
        code = self.proc.poll() if self.proc is not None else None
        return "" if code is None else f" (exit code {code}; its error is above)"

    def close(self) -> None:
        """Tell the tracking process to end, and wait for it (at most EXIT_WAIT_S)."""
        if self.proc is None:
            return
        try:
            self.conn.send(("close", None, (), {}))
        except OSError:
            pass  # already gone
        self.conn.close()
        try:
            self.proc.wait(EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self) -> TrackingProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _described(exc: BaseException) -> tuple[bool, str, str]:
    """An exception as (is an interruption, its type's name, its message): what the run's end needs."""
    return isinstance(exc, KeyboardInterrupt), type(exc).__name__, str(exc)


def _rebuilt(interrupted: bool, name: str, message: str) -> BaseException:
    """The stage's exception as the tracking process sees it: KeyboardInterrupt, or an exception
    of the same name and message (its class may not exist here), so the run's tag reads the same."""
    return KeyboardInterrupt(message) if interrupted else type(name, (Exception,), {})(message)


class _Calls:
    """The tracking process's side: each message made into a call of vaebic.tracking, the open
    model run kept between its enter and exit messages."""

    def __init__(self):
        self.run = None

    def __call__(self, kind: str, name: str | None, args: tuple, kwargs: dict):
        from vaebic import tracking

        if kind == "call":
            return getattr(tracking, name)(*args, **kwargs)
        if kind == "enter":  # a run's context (tracking.model_run), held open until its exit message
            self.run = getattr(tracking, name)(*args)
            return self.run.__enter__().info.run_id
        if kind == "exit":
            run, self.run = self.run, None
            exc = _rebuilt(*args[0]) if args[0] is not None else None
            run.__exit__(type(exc) if exc else None, exc, None)
            return None
        raise ValueError(f"unknown message {kind!r}")


class _InProcess:
    """The pipe's two ends in one process (Windows): send() makes the call, recv() returns its answer."""

    def __init__(self):
        self.calls, self.answer = _Calls(), None

    def send(self, message: tuple) -> None:
        self.answer = _answer(self.calls, message)

    def recv(self) -> tuple:
        return self.answer


def _answer(calls: _Calls, message: tuple) -> tuple[str, object]:
    try:
        return "ok", calls(*message)
    except Exception as exc:
        return "error", _portable(exc)


def _portable(exc: Exception) -> Exception:
    """An error to send to the stage: a VaebicError as it is (one line for the user), a
    tracking-store failure as the same one line the stage would print (tracking.store_fault), any
    other exception (a bug) as a TrackingError carrying its traceback. The one-line errors carry
    this process's traceback as a note, which Python prints only with a traceback: under
    VAEBIC_DEBUG=1 the stage shows where in MLflow it went wrong, as it would in-process."""
    from vaebic.tracking import store_fault

    where = "in the MLflow tracking process:\n" + "".join(traceback.format_exception(exc))
    if isinstance(exc, VaebicError):
        portable = VaebicError(str(exc))
    elif (fault := store_fault(exc)) is not None:
        portable = VaebicError(fault)
    else:
        return TrackingError(where)
    portable.add_note(where)
    return portable


def serve(fd: int) -> None:
    """The tracking process: answer the stage's messages on the socket fd until it says close or
    goes away, then end at once, without Python's exit handlers or teardown (so not through
    cli._exit_without_teardown, which runs the handlers): MLflow's handler would end the open run of
    a stage that was killed as FAILED, where the resumed stage is to end it as KILLED."""
    from multiprocessing.connection import Connection

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    conn = Connection(fd)
    _warm_up()
    calls = _Calls()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the stage is gone
            break
        if message[0] == "close":
            break
        answer = _answer(calls, message)
        try:
            conn.send(answer)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:  # a result that cannot travel: a bug
            conn.send(("error", TrackingError(f"in the MLflow tracking process: {message[1]} returned what cannot be sent ({exc})")))
        except OSError:
            break
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _warm_up() -> None:
    """Import MLflow, and its SQLite store where the runs go to one, before the first call needs
    them: the time this process is there to take off the stage. A failure is left for that call to report."""
    from vaebic import tracking

    try:
        import mlflow  # noqa: F401

        if tracking.sqlite_store() is not None:
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    except Exception:
        pass
