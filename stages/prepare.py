"""DVC stage `prepare` (see dvc.yaml). The stage's work is in src/vaebic/stages/prepare.py; `--help` lists its arguments."""

from vaebic.cli import run_cli
from vaebic.stages.prepare import main

if __name__ == "__main__":
    run_cli(main)
