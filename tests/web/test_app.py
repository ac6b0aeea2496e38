"""The web app's JSON API, page and limits, through FastAPI's TestClient (no network)."""

import io
import math
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from mnistlab.cli import main
from mnistlab.data.images import MAX_PIXELS
from mnistlab.errors import MnistlabError, TooLarge
from mnistlab.inference import predict
from mnistlab.models import build_model
from mnistlab.web.app import INLINE_BYTES, STATIC, create_app, listen
from mnistlab.web.limits import Limits
from mnistlab.web.predictor import Predictor

MAX_BODY = 1024 * 1024  # small, so the oversize tests need not build megabytes


def png(image):
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def stroke_png(points, width=22):
    """A 280x280 canvas as the page sends it: white ink on black."""
    image = Image.new("L", (280, 280))
    ImageDraw.Draw(image).line(points, fill=255, width=width, joint="curve")
    return png(image)


SEVEN = stroke_png([(70, 60), (210, 60), (120, 230)])
ONE = stroke_png([(140, 40), (140, 240)])


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(0)
    return build_model("dnn")


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model, Limits(max_body_bytes=MAX_BODY))) as c:
        yield c


def post_png(client, body, content_type="image/png"):
    return client.post("/api/predict", content=body, headers={"Content-Type": content_type})


def assert_error(response, status, pattern):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert re.search(pattern, response.json()["error"]), response.json()


def test_png_body_predicts_as_mnistlab_predict_does(client, model):
    response = post_png(client, SEVEN)
    assert response.status_code == 200
    answer = response.json()
    expected = predict(model, [SEVEN])[0]
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-4, atol=1e-6)
    assert answer["digit"] == int(np.argmax(expected))
    assert math.isclose(sum(answer["probabilities"]), 1, abs_tol=1e-4)


def test_explain_adds_the_map_and_the_plain_answer_stays_as_it_was(client, model):
    from mnistlab.data.digits import to_mnist
    from mnistlab.data.images import load_image
    from mnistlab.explain import explain
    from mnistlab.web.predictor import EXPLAIN_STEPS

    plain = post_png(client, SEVEN).json()
    assert set(plain) == {"digit", "probabilities"}  # no "explanation": null either
    response = client.post("/api/predict?explain=1", content=SEVEN, headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["digit"] == plain["digit"] and answer["probabilities"] == plain["probabilities"]
    heat = np.asarray(answer["explanation"])
    assert heat.shape == (28, 28)
    expected = explain(model, to_mnist(load_image(io.BytesIO(SEVEN)))[None], steps=EXPLAIN_STEPS)[0]
    np.testing.assert_allclose(heat, expected, atol=1e-5)
    assert np.abs(heat).sum() > 0
    seen = to_mnist(load_image(io.BytesIO(SEVEN)))  # the digit the map is drawn over, as the model saw it
    np.testing.assert_allclose(answer["image"], seen, atol=1e-3)


def test_multipart_upload_gives_the_same_answer(client):
    raw = post_png(client, ONE).json()
    for field in ("file", "image"):  # the page's field name, and any other single file field
        upload = client.post("/api/predict", files={field: ("one.png", ONE, "image/png")})
        assert upload.status_code == 200
        assert upload.json() == raw
    assert post_png(client, SEVEN).json() != raw


def test_other_image_formats_are_read(client, model):
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(ONE)).convert("RGB").save(jpeg, "JPEG", quality=95)
    response = post_png(client, jpeg.getvalue(), "image/jpeg")
    assert response.status_code == 200
    np.testing.assert_allclose(
        response.json()["probabilities"], predict(model, [jpeg.getvalue()])[0], rtol=1e-4, atol=1e-6
    )


def test_big_images_take_the_worker_thread_path_alike(client, model):
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 12, (800, 800), dtype=np.uint8)  # paper grain: barely compressible
    noisy[100:700, 380:420] = 255
    body = png(Image.fromarray(noisy))
    assert INLINE_BYTES < len(body) < MAX_BODY
    response = post_png(client, body)
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["probabilities"], predict(model, [body])[0], rtol=1e-4, atol=1e-6)


def test_only_images_are_accepted(client):
    assert_error(post_png(client, ONE, "text/plain"), 415, "expected an image.*text/plain")
    assert_error(client.post("/api/predict", content=ONE), 415, "expected an image")
    assert_error(
        client.post("/api/predict", files={"file": ("notes.txt", b"hello", "text/plain")}),
        415,
        "notes.txt is text/plain, not an image",
    )
    assert_error(client.post("/api/predict", data={"note": "no file here"}), 415, "x-www-form-urlencoded")
    two = {"a": ("a.png", ONE, "image/png"), "b": ("b.png", ONE, "image/png")}
    assert_error(client.post("/api/predict", files=two), 400, "[Tt]oo many files")


def test_multipart_without_a_file(client):
    body = b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--XyZ--\r\n'
    response = client.post("/api/predict", content=body, headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert_error(response, 400, "holds no file")


def test_garbage_and_empty_bodies(client):
    assert_error(post_png(client, b"\x89PNG this is not really a picture"), 400, "the request body: .*image")
    assert_error(post_png(client, b""), 400, "empty")
    assert_error(
        client.post("/api/predict", files={"file": ("scan.png", b"garbage", "image/png")}),
        400,
        "scan.png: not an image",
    )


def test_oversize_bodies_are_refused_before_reading(client):
    big = b"\0" * (MAX_BODY + 1)
    assert_error(post_png(client, big), 413, f"over the {MAX_BODY} byte limit")
    assert_error(client.post("/api/predict", files={"file": ("big.png", big, "image/png")}), 413, "byte limit")

    def chunks():  # no Content-Length: the cap is enforced while the body streams in
        for _ in range(4):
            yield b"\0" * (MAX_BODY // 2)

    assert_error(
        client.post("/api/predict", content=chunks(), headers={"Content-Type": "image/png"}), 413, "byte limit"
    )


def test_huge_dimensions_are_refused_from_the_header(client):
    side = math.isqrt(MAX_PIXELS) + 1
    huge = png(Image.new("1", (side, side)))  # a few KB on the wire, billions of bytes if decoded
    assert len(huge) < MAX_BODY
    assert_error(post_png(client, huge), 413, "too large")


def test_413_goes_by_the_error_type_not_its_wording(model, monkeypatch):
    from mnistlab.data import images

    def refuse(source):
        raise TooLarge("the picture is over a cap")  # no "too large" in the text

    monkeypatch.setattr(images, "load_image", refuse)
    with TestClient(create_app(model, Limits(max_body_bytes=MAX_BODY))) as c:
        assert_error(post_png(c, SEVEN), 413, "over a cap")

    def damaged(source):
        raise MnistlabError("too large a mess")  # the wording alone no longer makes a 413

    monkeypatch.setattr(images, "load_image", damaged)
    with TestClient(create_app(model, Limits(max_body_bytes=MAX_BODY))) as c:
        assert_error(post_png(c, SEVEN), 400, "too large a mess")


def test_server_keeps_serving_after_bad_requests(client):
    good = post_png(client, SEVEN).json()
    for body, ctype in ((b"junk", "image/png"), (ONE, "application/json"), (b"\0" * (MAX_BODY + 1), "image/png")):
        assert 400 <= post_png(client, body, ctype).status_code < 500
    assert post_png(client, SEVEN).json() == good
    assert_error(client.get("/api/nothing-here"), 404, "Not Found")
    assert_error(client.get("/api/predict"), 405, "Method Not Allowed")


def test_model_description(tmp_path, model):
    model.save(tmp_path / "model.keras")
    with TestClient(create_app(tmp_path)) as c:  # a run folder, as `mnistlab serve` gets it
        info = c.get("/api/model").json()
    assert info["name"] == "dnn"
    assert info["file"] == str(tmp_path / "model.keras")
    assert info["input_shape"] == [784]
    assert info["classes"] == 10
    assert info["params"] == model.count_params()
    assert [layer["type"] for layer in info["layers"]] == ["Dense", "Dense", "Dropout", "Dense"]
    assert [layer["output_shape"] for layer in info["layers"]] == [[400], [100], [100], [10]]
    assert sum(layer["params"] for layer in info["layers"]) == info["params"]


def test_a_model_that_does_not_take_digits_is_refused():
    import keras

    other = keras.Sequential([keras.Input(shape=(10,)), keras.layers.Dense(2)])
    with pytest.raises(MnistlabError, match=r"input of shape \(10,\), not 28x28"):
        Predictor(other)


def test_concurrent_predictions_match_serial_ones(model):
    predictor = Predictor(model)
    rng = np.random.default_rng(0)
    images = rng.random((32, 28, 28), dtype=np.float32)
    serial = [predictor.predict(x) for x in images]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(predictor.predict, images))
    np.testing.assert_allclose(parallel, serial, rtol=1e-6)
    np.testing.assert_allclose(serial, model.predict(images.reshape(32, 784), verbose=0), rtol=1e-4, atol=1e-6)


def test_page_is_served_and_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="pad"' in page.text and 'id="digit"' in page.text and 'type="file"' in page.text
    assets = [a for a in re.findall(r'(?:src|href)="([^"]+)"', page.text) if not a.startswith("data:")]
    assert len(assets) == 2
    for asset in assets:
        assert asset.startswith("/static/"), asset  # works offline: nothing from the internet
        assert client.get(asset).status_code == 200
    for path in STATIC.iterdir():
        assert not re.search(r"https?://|//cdn", path.read_text()), f"{path.name} loads from the internet"


def test_openapi_describes_both_ways_to_send_an_image(client):
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/api/predict"]["post"]
    assert {"image/png", "multipart/form-data"} <= set(predict["requestBody"]["content"])
    assert {"200", "400", "413", "415"} <= set(predict["responses"])
    assert "/api/model" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing.keras"), "--port", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mnistlab serve: error:") and "no such model file" in err and "\n" not in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tmp_path / "missing.keras"), "--port", str(port)]) == 1  # before loading
    err = capsys.readouterr().err.strip()
    assert err == f"mnistlab serve: error: cannot listen on 127.0.0.1:{port} (Address already in use)"
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "model.keras", "--port", "70000"])
    assert exit_.value.code == 2
    assert "port number" in capsys.readouterr().err


def test_the_listening_socket_says_tcp():
    # asyncio disables Nagle's algorithm only on sockets whose protocol is TCP;
    # on others each response waited for the client's delayed ACK (~40 ms).
    with listen("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[0] == "127.0.0.1" and sock.getsockname()[1] > 0
    with pytest.raises(MnistlabError, match=r"cannot listen on no-such-host\.invalid:80"):
        listen("no-such-host.invalid", 80)


def test_static_files_ship_with_the_package():
    names = {p.name for p in Path(STATIC).iterdir()}
    assert {"index.html", "app.js", "app.css"} <= names
    assert all(p.is_file() for p in Path(STATIC).iterdir())  # pyproject ships static/* only, no subfolders
