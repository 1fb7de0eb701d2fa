"""DVC stage `select` (see dvc.yaml). The stage's work is in src/vaebic/stages/select_dim.py; `--help` lists its arguments."""

from vaebic.cli import run_cli
from vaebic.stages.select_dim import main

if __name__ == "__main__":
    run_cli(main)
