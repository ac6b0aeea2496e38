"""Recognizing real pictures: MNIST-style preprocessing, the predict API and `mnistlab predict`.

One notebook DNN trained for one epoch on real MNIST (module fixture) is the
model; pictures are made from real test digits the way people would give them:
saved as PNG, or enlarged, inverted to dark ink on light paper, placed off
centre and saved as JPEG.
"""

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps
from scipy import ndimage

from mnistlab.cli import main
from mnistlab.data import idx
from mnistlab.data.digits import to_mnist
from mnistlab.data.images import MAX_PIXELS, load_image, load_stack
from mnistlab.errors import MnistlabError, TooLarge
from mnistlab.inference import predict

N_DIGITS = 300


@pytest.fixture(scope="module")
def run_dir(dnn_run):
    return dnn_run


@pytest.fixture(scope="module")
def model(run_dir):
    from mnistlab import load_model

    return load_model(run_dir)


def transformed(digit, rng):
    """A test digit as a person might photograph it: 4x bigger, dark on light, off centre, JPEG."""
    big = Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC)
    paper = Image.new("L", (230, 170), 255)
    paper.paste(ImageOps.invert(big), (int(rng.integers(0, 118)), int(rng.integers(0, 58))))
    buf = io.BytesIO()
    paper.save(buf, format="JPEG", quality=75)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos(mnist, tmp_path_factory):
    """The first N_DIGITS test digits, transformed, as JPEG files."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for i, digit in enumerate(mnist.x_test[:N_DIGITS]):
        path = folder / f"digit{i:03d}.jpg"
        path.write_bytes(transformed(digit, rng))
        paths.append(str(path))
    return paths


def png_header(width, height):
    """A PNG that claims width x height pixels: signature and IHDR only, a few dozen bytes."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def animated_gif():
    frames = [Image.new("L", (28, 28), v) for v in (0, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def png_bytes(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# ---- preprocessing, no model needed ----


def stroke_image(size=(300, 200), at=(120, 40), scale=1, ink=0, paper=255, mode="L"):
    """A blocky '7', 50 wide and 120 tall (times `scale`), drawn off centre on a larger page."""
    image = Image.new(mode, size, paper)
    x, y = at
    for left, top, right, bottom in ((0, 0, 50, 20), (25, 0, 50, 120)):  # the bar, the stem
        image.paste(ink, (x + left * scale, y + top * scale, x + right * scale, y + bottom * scale))
    return image


def test_to_mnist_fits_20x20_keeps_aspect_and_centres_mass():
    digit = to_mnist(stroke_image())  # 50x120, dark on light
    assert digit.shape == (28, 28) and digit.dtype == np.float32
    assert digit.min() >= 0 and digit.max() == pytest.approx(1)
    rows, cols = np.nonzero(digit > 0.5)
    assert rows.max() - rows.min() + 1 == 20  # longer side scaled to 20
    assert 7 <= cols.max() - cols.min() + 1 <= 10  # 50/120 of 20 is 8.3
    assert np.allclose(ndimage.center_of_mass(digit), (14, 14), atol=0.75)


def test_light_and_dark_backgrounds_give_the_same_digit(mnist):
    for digit in mnist.x_test[:20]:
        light_on_dark = Image.fromarray(digit).resize((84, 84), Image.Resampling.BICUBIC)
        dark_on_light = ImageOps.invert(light_on_dark)
        np.testing.assert_allclose(to_mnist(dark_on_light), to_mnist(light_on_dark), atol=1e-5)


def test_colour_and_transparent_pictures():
    grey = to_mnist(stroke_image())
    red_on_yellow = stroke_image(ink=(150, 0, 0), paper=(255, 240, 150), mode="RGB")
    np.testing.assert_allclose(to_mnist(red_on_yellow), grey, atol=0.05)
    for ink in ((0, 0, 0, 255), (255, 255, 255, 255)):  # dark or light strokes on a transparent canvas
        canvas = stroke_image(ink=ink, paper=(0, 0, 0, 0), mode="RGBA")
        np.testing.assert_allclose(to_mnist(canvas), grey, atol=1e-5)
    sixteen_bit = Image.fromarray(np.asarray(stroke_image(), dtype=np.uint16) * 257)  # a 16-bit scan
    assert sixteen_bit.mode == "I;16"
    np.testing.assert_allclose(to_mnist(load_image(png_bytes(sixteen_bit))), grey, atol=1e-5)


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (50, 40), 255),
        Image.new("RGB", (3, 3), (0, 0, 0)),
        Image.new("L", (1, 1), 128),
        Image.new("RGBA", (30, 30), (0, 0, 0, 0)),
    ],
)
def test_blank_pictures_give_zeros(image):
    digit = to_mnist(image)
    assert digit.shape == (28, 28) and not digit.any()


def test_mnist_digits_pass_through_nearly_unchanged(mnist):
    digits = mnist.x_test[:300]
    out = np.stack([to_mnist(Image.fromarray(d)) for d in digits])
    error = np.abs(out - digits / 255).max(axis=(1, 2))
    assert np.mean(error <= 1 / 255 + 1e-6) >= 0.6  # most: untouched (a max of 254 is stretched to 255)
    assert np.abs(out - digits / 255).mean() < 0.01  # the rest: rescaled by a pixel at most


def test_big_pictures_are_shrunk_before_work():
    page = stroke_image(size=(3000, 2000), at=(1200, 400), scale=10)
    np.testing.assert_allclose(to_mnist(page), to_mnist(stroke_image()), atol=0.1)


# ---- reading files ----


def test_load_image_accepts_paths_bytes_and_files(tmp_path):
    data = png_bytes(stroke_image())
    path = tmp_path / "one.png"
    path.write_bytes(data)
    for source in (path, str(path), data, io.BytesIO(data)):
        assert load_image(source).size == (300, 200)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"hello, this is text\n", "not an image"),
        (png_header(20000, 20000), "too large"),
        (png_header(8000, 6000), "too large"),  # under Pillow's own limit, over ours
        (animated_gif(), "animated"),
        (png_bytes(stroke_image())[:200], "damaged image"),
    ],
)
def test_load_image_refuses_bad_files_with_one_line(tmp_path, data, message):
    path = tmp_path / "bad.png"
    path.write_bytes(data)
    with pytest.raises(MnistlabError) as e:
        load_image(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, TooLarge) == (message == "too large")  # the web's 413 goes by this type


def test_oversized_files_are_not_read_whole(tmp_path, monkeypatch):
    from mnistlab.data import images

    monkeypatch.setattr(images, "MAX_BYTES", 1000)
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(Image.effect_noise((100, 100), 50).convert("L")))
    assert path.stat().st_size > 1000
    for source in (path, path.read_bytes(), io.BytesIO(path.read_bytes())):
        with pytest.raises(TooLarge, match="file too large"):
            load_image(source)


def test_size_is_checked_before_decoding():
    assert 8000 * 6000 > MAX_PIXELS >= 28 * 28 * 1000
    with pytest.raises(TooLarge, match="too large"):
        load_image(png_header(20000, 20000))  # a few dozen bytes: nothing of 400 million pixels is built


def test_load_stack_reads_npy_and_idx(tmp_path, mnist):
    digits = mnist.x_test[:5]
    np.save(tmp_path / "u8.npy", digits)
    np.save(tmp_path / "float.npy", digits / 255)
    np.save(tmp_path / "flat.npy", digits.reshape(5, 784))
    idx.write_idx(tmp_path / "stack.idx.gz", digits)
    idx.write_idx(tmp_path / "stack.idx", digits)
    for name in ("u8.npy", "float.npy", "flat.npy", "stack.idx.gz", "stack.idx"):
        stack = load_stack(tmp_path / name)
        assert stack.dtype == np.uint8
        np.testing.assert_array_equal(stack, digits, err_msg=name)
    np.save(tmp_path / "wrong.npy", np.zeros((3, 32, 32)))
    with pytest.raises(MnistlabError, match="expected 28x28 images"):
        load_stack(tmp_path / "wrong.npy")


# ---- predictions ----


def test_round_trip_png_files_match_the_arrays(model, mnist, tmp_path):
    digits = mnist.x_test[:200]
    paths = []
    for i, digit in enumerate(digits):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(digit).save(paths[-1])
    from_files = predict(model, paths)
    in_memory = predict(model, [Image.fromarray(d) for d in digits])
    from_bytes = predict(model, [p.read_bytes() for p in paths])
    assert from_files.shape == (200, 10)
    np.testing.assert_allclose(from_files.sum(axis=1), 1, atol=1e-4)
    np.testing.assert_allclose(from_files, in_memory, atol=1e-6)
    np.testing.assert_allclose(from_files, from_bytes, atol=1e-6)
    arrays = predict(model, digits)  # the model on the raw arrays, as in training
    assert np.mean(from_files.argmax(1) == arrays.argmax(1)) >= 0.99


def test_transformed_photos_are_recognized(model, mnist, photos):
    y = mnist.y_test[:N_DIGITS]
    original = np.mean(predict(model, mnist.x_test[:N_DIGITS]).argmax(1) == y)
    photographed = np.mean(predict(model, photos).argmax(1) == y)
    assert photographed >= 0.97 * original, (photographed, original)


# ---- the command ----


def test_cli_predict_agrees_on_100_photos(run_dir, model, mnist, photos, capsys):
    assert main(["predict", str(run_dir), *photos[:100], "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in rows] == photos[:100]
    assert all(len(r["probabilities"]) == 10 and r["digit"] == int(np.argmax(r["probabilities"])) for r in rows)
    originals = predict(model, mnist.x_test[:100]).argmax(1)
    agree = sum(r["digit"] == d for r, d in zip(rows, originals))
    assert agree >= 97, agree


def test_cli_predict_table_top_k_and_stacks(run_dir, model, mnist, tmp_path, capsys):
    np.save(tmp_path / "three.npy", mnist.x_test[:3])
    Image.fromarray(mnist.x_test[3]).save(tmp_path / "four.png")
    assert (
        main(
            [
                "predict",
                str(run_dir / "model.keras"),
                str(tmp_path / "three.npy"),
                str(tmp_path / "four.png"),
                "--top",
                "3",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["file", "digit", "confidence", "top", "3"]
    expected = predict(model, mnist.x_test[:4])
    names = [f"{tmp_path / 'three.npy'}[{i}]" for i in range(3)] + [str(tmp_path / "four.png")]
    for line, name, p in zip(lines[1:], names, expected):
        cells = line.split()
        assert cells[0] == name and int(cells[1]) == int(p.argmax())
        assert float(cells[2]) == pytest.approx(p.max(), abs=2e-3)
        assert [int(k) for k in cells[3::2]] == list(np.argsort(-p)[:3])
    assert len(lines) == 5


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"not a picture at all", "not an image"),
        (png_header(20000, 20000), "too large"),
        (animated_gif(), "animated"),
    ],
)
def test_cli_bad_files_exit_1_with_one_line(run_dir, tmp_path, capsys, data, message):
    bad = tmp_path / "bad.gif"
    bad.write_bytes(data)
    good = tmp_path / "good.png"
    stroke_image().save(good)
    assert main(["predict", str(run_dir), str(good), str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("mnistlab predict: error: ") and str(bad) in err and message in err


def test_cli_top_k_out_of_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", "model.keras", "x.png", "--top", "11"])
    assert e.value.code == 2 and "only 10 digits" in capsys.readouterr().err
