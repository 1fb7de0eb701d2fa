"""Stage `prepare`: load the data set, shuffle, split train/test, binarise (Bernoulli), write data/prepared/."""

from __future__ import annotations

import logging

from vaebic.cli import stage_parser

log = logging.getLogger("vaebic.prepare")


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__)  # --data is this stage's output folder
    args = ap.parse_args(argv)
    from vaebic import params
    from vaebic.data import preparation
    from vaebic.files import atomic_folder

    p = params.load(args.params)
    # No MLflow here: the first train stage creates the store and experiment (tracking.setup,
    # under a lock that concurrent train stages share), 2 s of imports this stage does not need.
    with atomic_folder(args.data) as tmp:
        meta = preparation.prepare(p["data"], p["model"]["likelihood"], tmp)
    log.info(
        "%s: %d training and %d test examples of shape %s written to %s (fingerprint %s)",
        meta["dataset"],
        meta["n_train"],
        meta["n_test"],
        meta["image_shape"],
        args.data,
        meta["fingerprint"][:12],
    )
