"""User-facing errors and the wrapper that turns them into one plain message and an exit code."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

DEBUG_ENV = "VAEBIC_DEBUG"


class VaebicError(Exception):
    """A problem the user can fix (bad params, missing file, diverged training, ...).

    Its message is printed as is, without a traceback, unless VAEBIC_DEBUG=1.
    """


def run_cli(main: Callable[[], None]) -> None:
    """Run a stage's main(): user errors become `error: <message>` on stderr and exit code 1.

    Ctrl-C exits with 130 and a one-line note. Any other exception is a bug and keeps its traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("alembic", "mlflow.store", "mlflow.tracking", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        main()
    except VaebicError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: stopped by Ctrl-C; run `dvc repro` again to redo this stage", file=sys.stderr)
        sys.exit(130)
