"""Property-based fuzzing (hypothesis): the image and label loaders and the mask encoders give either a
clear error (InputError, or ValueError for a wrong array) or a correct result, nothing else."""
import io as pyio
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline import io

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "WEBP": ".webp", "PPM": ".ppm"}


@contextmanager
def small_pixel_limit():
    """Keep a fuzzed header that claims a gigantic image from allocating it: PIL refuses above 2x this."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 2_000_000
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's warnings on odd files are fine; the result is checked
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def load_file(reader, data: bytes, suffix: str):
    """Write `data` to a temporary file and read it -> ('ok', array) or ('error', message)."""
    with tempfile.TemporaryDirectory() as d, small_pixel_limit():
        path = Path(d) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            return "ok", reader(path)
        except io.InputError as e:
            assert str(path) in str(e)  # the message names the file
            return "error", str(e)


def check_image(result) -> None:
    kind, value = result
    if kind == "ok":
        assert value.dtype == np.uint8 and value.ndim == 3 and value.shape[2] == 3 and min(value.shape[:2]) >= 1


def check_label(result) -> None:
    kind, value = result
    if kind == "ok":
        assert value.dtype == np.uint8 and value.ndim == 2 and min(value.shape) >= 1


def encoded(fmt: str, arr: np.ndarray) -> bytes:
    buf = pyio.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


small_rgb = st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**32 - 1)).map(
    lambda t: np.random.default_rng(t[2]).integers(0, 256, (t[0], t[1], 3)).astype(np.uint8))


@FAST
@given(data=st.binary(max_size=600), suffix=st.sampled_from(io.IMAGE_EXTS))
def test_random_bytes_give_an_input_error_or_an_rgb_image(data, suffix):
    check_image(load_file(io.read_image, data, suffix))
    check_label(load_file(io.read_label, data, suffix))


@FAST
@given(fmt=st.sampled_from(sorted(FORMATS)), arr=small_rgb, keep=st.one_of(st.none(), st.floats(0, 1)),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=3))
def test_damaged_real_image_files_give_an_input_error_or_an_rgb_image(fmt, arr, keep, flips):
    data = bytearray(encoded(fmt, arr))
    for pos, value in flips:  # overwrite random bytes (headers included) ...
        data[int(pos * (len(data) - 1))] = value
    if keep is not None:  # ... and maybe truncate
        data = data[:max(1, int(keep * len(data)))]
    data = bytes(data)
    check_image(load_file(io.read_image, data, FORMATS[fmt]))
    check_label(load_file(io.read_label, data, FORMATS[fmt]))


@FAST
@given(arr=small_rgb)
def test_rgb_png_round_trips_exactly(arr):
    with tempfile.TemporaryDirectory() as d:
        io.write_image(Path(d) / "x.png", arr)
        assert np.array_equal(io.read_image(Path(d) / "x.png"), arr)


@FAST
@given(h=st.integers(1, 16), w=st.integers(1, 16), seed=st.integers(0, 2**32 - 1), top=st.integers(1, 256))
def test_label_palette_png_round_trips_exactly(h, w, seed, top):
    lab = np.random.default_rng(seed).integers(0, top, (h, w)).astype(np.uint8)
    with tempfile.TemporaryDirectory() as d:
        io.write_label(Path(d) / "m.png", lab)
        with Image.open(Path(d) / "m.png") as img:
            assert img.mode == "P" and img.getpalette()[:3 * 256] == io.palette().reshape(-1).tolist()
        assert np.array_equal(io.read_label(Path(d) / "m.png"), lab)


@FAST
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=4),
       dtype=st.sampled_from([np.uint8, np.int32, np.float32, np.bool_, np.uint16]))
def test_write_label_refuses_anything_but_a_2d_uint8_map(shape, dtype):
    arr = np.zeros(shape, dtype)
    with tempfile.TemporaryDirectory() as d:
        ok = len(shape) == 2 and dtype == np.uint8 and min(shape) >= 1
        try:
            io.write_label(Path(d) / "m.png", arr)
        except ValueError:
            assert not ok
            assert not (Path(d) / "m.png").exists()
            return
        assert ok and np.array_equal(io.read_label(Path(d) / "m.png"), arr)


MODES = {"L": (np.uint8, 1), "LA": (np.uint8, 2), "RGBA": (np.uint8, 4), "I;16": (np.uint16, 1),
         "I": (np.int32, 1), "F": (np.float32, 1), "P": (np.uint8, 1), "CMYK": (np.uint8, 4)}


@FAST
@given(mode=st.sampled_from(sorted(MODES)), fmt=st.sampled_from(["PNG", "TIFF"]), h=st.integers(1, 10),
       w=st.integers(1, 10), seed=st.integers(0, 2**32 - 1))
def test_any_pixel_mode_reads_as_rgb_of_the_same_size(mode, fmt, h, w, seed):
    dtype, ch = MODES[mode]
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 60000 if dtype != np.uint8 else 256, (h, w, ch) if ch > 1 else (h, w)).astype(dtype)
    if dtype == np.float32:
        arr[rng.random((h, w)) < 0.2] = np.nan  # float images may hold NaN
    img = Image.frombytes(mode, (w, h), arr.tobytes())
    if mode == "CMYK" and fmt == "PNG":
        fmt = "TIFF"  # PNG has no CMYK
    buf = pyio.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # PIL cannot write this mode in this format: nothing to read
    kind, out = load_file(io.read_image, buf.getvalue(), FORMATS[fmt])
    assert kind == "ok", out
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
