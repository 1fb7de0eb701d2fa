"""Any data a user has: torchvision sets on files written here, arrays, image folders, the tiny
embedded set, and the checks that turn bad files into clear errors."""

import numpy as np
import pytest
from PIL import Image
from test_data import DATA_PARAMS, write_idx

from vaebic.data import datasets, preparation, prepared, readers
from vaebic.errors import VaebicError


def test_kmnist_reads_torchvision_layout(tmp_path):
    write_idx(tmp_path / "KMNIST" / "raw", "train", np.full((6, 28, 28), 255))
    write_idx(tmp_path / "KMNIST" / "raw", "t10k", np.zeros((4, 28, 28)))
    x, shape = datasets.load_raw("kmnist", tmp_path, download=False)
    assert x.shape == (10, 784) and shape == [1, 28, 28] and x[:6].min() == 1.0 and x[6:].max() == 0.0


def test_emnist_reads_the_chosen_split_and_turns_images_upright(tmp_path):
    img = np.zeros((28, 28), np.uint8)
    img[0, 5] = 255  # stored transposed, as in EMNIST's files: upright it is at row 5, column 0
    raw = tmp_path / "EMNIST" / "raw"
    for part in ("train", "test"):
        write_idx(raw, f"emnist-letters-{part}", np.stack([img] * 3))
    for f in list(raw.iterdir()):  # write_idx names files <prefix>-images-idx3-ubyte; EMNIST wants the same
        assert f.name.startswith("emnist-letters-")
    x, shape = datasets.load_raw("emnist", tmp_path, download=False, options={"emnist_split": "letters"})
    assert x.shape == (6, 784)
    assert x.reshape(6, 28, 28)[0, 5, 0] == 1.0 and x.reshape(6, 28, 28)[0, 0, 5] == 0.0
    with pytest.raises(VaebicError, match="files not found"):
        datasets.load_raw("emnist", tmp_path, download=False, options={"emnist_split": "digits"})


def test_sklearn_digits_is_the_tiny_embedded_set():
    x, shape = datasets.load_raw("sklearn_digits")
    assert x.shape == (1797, 64) and shape == [1, 8, 8] and x.max() == 1.0 and x.min() == 0.0


@pytest.mark.parametrize("shape,expected", [((5, 6, 7), [1, 6, 7]), ((5, 3, 4, 4), [3, 4, 4]), ((5, 1, 4, 4), [1, 4, 4]), ((5, 10), [10])])
def test_arrays_of_each_supported_shape(tmp_path, shape, expected):
    a = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    np.save(tmp_path / "a.npy", a)
    x, got = readers.load_array(tmp_path / "a.npy")
    assert got == expected and x.shape == (5, int(np.prod(shape[1:])))
    np.testing.assert_allclose(x, a.reshape(5, -1) / 255.0, atol=1e-6)


def test_npz_key_choice_and_float_arrays(tmp_path):
    f = np.random.default_rng(0).random((4, 3, 3)).astype(np.float32)
    np.savez(tmp_path / "one.npz", images=f)
    x, _ = readers.load_array(tmp_path / "one.npz")  # the only array
    np.testing.assert_array_equal(x, f.reshape(4, -1))
    np.savez(tmp_path / "two.npz", x=f, labels=np.arange(4))
    assert readers.load_array(tmp_path / "two.npz")[0].shape == (4, 9)  # 'x' by convention
    np.savez(tmp_path / "other.npz", a=f, b=f)
    with pytest.raises(VaebicError, match=r"holds arrays \['a', 'b'\]; set data.array_key"):
        readers.load_array(tmp_path / "other.npz")
    assert readers.load_array(tmp_path / "other.npz", "b")[0].shape == (4, 9)


@pytest.mark.parametrize(
    "array,message",
    [
        (np.full((4, 5), 1.5, np.float32), r"float values must lie in \[0, 1\], found \[1.5, 1.5\]"),
        (np.array([[0.1, np.nan], [0.2, 0.3]]), r"1 values are NaN or infinite \(first at index \[0, 1\]\)"),
        (np.zeros((4, 5), np.complex128), r"dtype complex128 is not supported"),
        (np.full((4, 5), 300, np.int64), r"dtype int64, values in \[300, 300\]: integer grey levels of type int64 must lie in 0-255"),
        (np.zeros((4, 2, 5, 5), np.uint8), r"shape \(4, 2, 5, 5\) is not N x D, N x H x W or N x C x H x W with C = 1 or 3"),
        (np.zeros((4,), np.uint8), r"shape \(4,\) is not"),
        (np.zeros((1, 5), np.uint8), r"fewer than 2 non-empty examples"),
    ],
)
def test_bad_arrays_are_named(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(VaebicError, match=message):
        readers.load_array(tmp_path / "bad.npy")


def test_missing_and_corrupt_array_files(tmp_path):
    with pytest.raises(VaebicError, match="no such file"):
        readers.load_array(tmp_path / "nope.npy")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(VaebicError, match="not a readable .npy/.npz array"):
        readers.load_array(tmp_path / "bad.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(VaebicError, match="not a readable"):  # pickled objects are refused
        readers.load_array(tmp_path / "obj.npy")
    with pytest.raises(VaebicError, match="data.path is not set"):
        readers.load_array(None)


def save_images(folder, sizes, mode="L", fmt="png"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        shape = (h, w) if mode == "L" else (h, w, 3)
        Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8), mode).save(folder / f"im{i}.{fmt}")


def test_image_folder_grey_and_colour(tmp_path):
    save_images(tmp_path / "grey" / "sub", [(6, 5)] * 3)
    x, shape = readers.load_image_folder(tmp_path / "grey")
    assert shape == [1, 5, 6] and x.shape == (3, 30)
    first = np.asarray(Image.open(tmp_path / "grey" / "sub" / "im0.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(x[0].reshape(5, 6), first, atol=1e-6)
    save_images(tmp_path / "rgb", [(4, 4)] * 2, mode="RGB", fmt="jpg")
    x, shape = readers.load_image_folder(tmp_path / "rgb")
    assert shape == [3, 4, 4] and x.shape == (2, 48)
    x, shape = readers.load_image_folder(tmp_path / "rgb", channels="grey")
    assert shape == [1, 4, 4]


def test_image_folder_mixed_sizes_need_a_resize(tmp_path):
    save_images(tmp_path / "mixed", [(8, 8), (10, 6), (8, 8)])
    with pytest.raises(VaebicError, match=r"different sizes \(8x8, 10x6, ...\); set data.image_size"):
        readers.load_image_folder(tmp_path / "mixed")
    x, shape = readers.load_image_folder(tmp_path / "mixed", image_size=7)
    assert shape == [1, 7, 7] and x.shape == (3, 49)


def test_image_folder_problems_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VaebicError, match="the folder is empty"):
        readers.load_image_folder(tmp_path / "empty")
    with pytest.raises(VaebicError, match="no such folder"):
        readers.load_image_folder(tmp_path / "absent")
    save_images(tmp_path / "notes", [(4, 4)] * 2)
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(VaebicError, match=r"readme.txt: not an image"):
        readers.load_image_folder(tmp_path / "notes")
    save_images(tmp_path / "broken", [(4, 4)] * 2)
    (tmp_path / "broken" / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(VaebicError, match=r"im1.png: not a readable image"):
        readers.load_image_folder(tmp_path / "broken")
    (tmp_path / "hidden").mkdir()
    save_images(tmp_path / "hidden", [(4, 4)] * 2)
    (tmp_path / "hidden" / ".DS_Store").write_bytes(b"junk")  # hidden files are skipped
    assert readers.load_image_folder(tmp_path / "hidden")[0].shape == (2, 16)


def test_prepare_records_the_source_and_binarises_colour(tmp_path):
    save_images(tmp_path / "imgs", [(4, 4)] * 10, mode="RGB")
    meta = preparation.prepare({**DATA_PARAMS, "name": "image_folder", "path": str(tmp_path / "imgs")}, "bernoulli", tmp_path / "prep")
    assert meta["image_shape"] == [3, 4, 4] and meta["source"] == str(tmp_path / "imgs")
    train_x = prepared.load_prepared(tmp_path / "prep").train
    assert train_x.shape == (7, 48) and set(np.unique(train_x)) <= {0, 1}  # 10 images: 2 test, 1 validation, 7 training
