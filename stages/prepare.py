"""Stage `prepare`: load the data set, shuffle, split train/test, binarise (Bernoulli), write data/prepared/."""

import argparse
import logging

from vaebic.errors import run_cli

log = logging.getLogger("vaebic.prepare")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/prepared")
    args = ap.parse_args()
    from vaebic import data, params, tracking
    from vaebic.files import atomic_folder

    p = params.load(args.params)
    # Create the MLflow store and experiment now, once, before the train stages could race on it.
    tracking.setup(p["mlflow"]["experiment"])
    with atomic_folder(args.out) as tmp:
        meta = data.prepare(p["data"], p["model"]["likelihood"], tmp)
    log.info("%s: %d training and %d test examples of shape %s written to %s (fingerprint %s)",
             meta["dataset"], meta["n_train"], meta["n_test"], meta["image_shape"], args.out, meta["fingerprint"][:12])


if __name__ == "__main__":
    run_cli(main)
