"""Stage `validate`: check params.yaml before any other stage does work.

Every other stage depends (through data/params.ok) on this one, so a bad params.yaml stops
`dvc repro` here, with every problem listed, before anything is trained or overwritten.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/params.ok", help="marker file written when params are valid")
    args = ap.parse_args(argv)
    from vaebic import params

    params.load(args.params)
    # Constant content: a params change that passes validation must not invalidate downstream stages.
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("params.yaml passed validation\n")
    print(f"{args.params}: valid")
