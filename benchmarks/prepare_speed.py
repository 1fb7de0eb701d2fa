"""Benchmark: the prepare stage on a full-MNIST-sized data set (70,000 28x28 images), against the
common per-image pattern (iterate a torchvision Dataset, convert each item, binarise it), in one run.

The images are random IDX files written in torchvision's layout to a temporary folder, so the
benchmark needs no download. Prints images per second of both and their ratio; the one-off cost
of importing torchvision is measured and printed apart.

    python benchmarks/prepare_speed.py [--n 70000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

from vaebic import params
from vaebic.data import preparation


def write_idx(folder: Path, prefix: str, images: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + bytes(n))


def per_image_loop(root: Path, seed: int) -> np.ndarray:
    """The baseline: index a torchvision Dataset image by image and binarise each one."""
    from torchvision import datasets

    rng = np.random.default_rng(seed)
    out = []
    for train in (True, False):
        ds = datasets.MNIST(root=str(root), train=train, download=False)
        for i in range(len(ds)):
            img = np.asarray(ds[i][0], dtype=np.float32).reshape(-1) / 255.0
            out.append((rng.random(img.shape, dtype=np.float32) < img).astype(np.uint8))
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=70000, help="images in all (6/7 train file, 1/7 test file)")
    ap.add_argument("--json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, 28, 28), dtype=np.uint8)
    n_train = args.n * 6 // 7
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        write_idx(raw / "MNIST" / "raw", "train", images[:n_train])
        write_idx(raw / "MNIST" / "raw", "t10k", images[n_train:])
        p = {**params.validate({"sweep": {"latent_dims": [1], "seeds": [0]}})["data"], "name": "mnist", "root": str(raw), "download": False}
        start = time.perf_counter()
        import torchvision.datasets  # noqa: F401  (paid once per process by both; timed apart)

        import_s = time.perf_counter() - start
        start = time.perf_counter()
        preparation.prepare(p, "bernoulli", Path(tmp) / "prepared")
        prepare_s = time.perf_counter() - start
        start = time.perf_counter()
        per_image_loop(raw, 0)
        loop_s = time.perf_counter() - start
    figures = {
        "n_images": args.n,
        "import_torchvision_s": import_s,
        "prepare_s": prepare_s,
        "prepare_images_per_s": args.n / prepare_s,
        "loop_s": loop_s,
        "loop_images_per_s": args.n / loop_s,
        "ratio": loop_s / prepare_s,
    }
    print(f"prepare on {args.n} MNIST-sized images (read IDX, shuffle, split, binarise, fingerprint, write):")
    print(f"  importing torchvision (once per process): {import_s:6.2f} s")
    print(f"  vaebic prepare (whole arrays):            {prepare_s:6.2f} s  {args.n / prepare_s:10.0f} images/s")
    print(f"  per-image Dataset loop (read + binarise): {loop_s:6.2f} s  {args.n / loop_s:10.0f} images/s")
    print(f"  ratio per-image loop / vaebic prepare:    {loop_s / prepare_s:6.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
