"""Stage `train@<latent_dim>-<seed>`: train one VAE and write models/<latent_dim>-<seed>/.

With --checkpoint, the training state is saved every train.checkpoint_every epochs; a stage that
was interrupted (Ctrl-C, SIGTERM, SIGKILL, a crash) resumes from it when run again, and ends with
the weights an uninterrupted run would have had. The checkpoint is removed once the model is written.
"""

from pathlib import Path

from vaebic.cli import run_cli, stage_parser


def main() -> None:
    ap = stage_parser(__doc__, per_model=True)
    ap.add_argument("--out", required=True, help="model folder to write, e.g. models/8-0")
    ap.add_argument("--checkpoint", type=Path, help="checkpoint file to save to and resume from, e.g. checkpoints/8-0.pt")
    args = ap.parse_args()
    from vaebic.stages.train import train

    train(args.params, args.data, args.out, args.latent_dim, args.seed, checkpoint_path=args.checkpoint)


if __name__ == "__main__":
    run_cli(main)
