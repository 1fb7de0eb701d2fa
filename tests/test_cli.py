"""run_cli ends a command's own process without Python's teardown of its modules (that took up to
1.4 s of every stage): the exit code, the output, every exit handler and the command's own threads
must come out as a normal exit leaves them."""

import subprocess
import sys
import textwrap

import pytest
from pipeline_project import clean_env

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from vaebic.cli import run_cli
from vaebic.errors import VaebicError

out = Path(sys.argv[2])
atexit.register(lambda: (out / "handler").write_text("ran"))  # registered before run_cli, like coverage's

def main():
    print("no newline at the end", end="")  # left in stdout's buffer
    if sys.argv[1] == "thread":  # a thread of the command's own, still writing when main returns
        threading.Thread(target=lambda: (time.sleep(0.5), (out / "thread").write_text("done"))).start()
    if sys.argv[1] == "error":
        raise VaebicError("a bad input")
    if sys.argv[1] == "ctrl-c":
        raise KeyboardInterrupt

run_cli(main)
"""


@pytest.mark.parametrize("case,code", [("done", 0), ("thread", 0), ("error", 1), ("ctrl-c", 130)])
def test_a_command_exits_as_python_would(tmp_path, case, code):
    script = tmp_path / "command.py"
    script.write_text(textwrap.dedent(SCRIPT))
    proc = subprocess.run([sys.executable, str(script), case, str(tmp_path)], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == "no newline at the end"
    assert (tmp_path / "handler").read_text() == "ran"
    if case == "thread":
        assert (tmp_path / "thread").read_text() == "done"
    if case == "error":
        assert proc.stderr.strip() == "error: a bad input"
    if case == "ctrl-c":
        assert proc.stderr.startswith("interrupted: stopped by Ctrl-C") and "Traceback" not in proc.stderr
