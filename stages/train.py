"""DVC stage `train` (see dvc.yaml). The stage's work is in src/vaebic/stages/train.py; `--help` lists its arguments."""

from vaebic.cli import run_cli
from vaebic.stages.train import main

if __name__ == "__main__":
    run_cli(main)
