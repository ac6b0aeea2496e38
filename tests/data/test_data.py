import hashlib
import shutil

import numpy as np
import pytest

from mnistlab.data import for_input, idx, load_dataset, one_hot, shaped
from mnistlab.data import load as load_mod
from mnistlab.data.registry import DATASETS, FILES, DatasetSpec
from mnistlab.errors import DataError, UsageError


def spec_for(folder, name="synthetic"):
    md5 = {stem: hashlib.md5(idx.read_bytes(folder / (stem + ".gz"))).hexdigest() for stem in FILES}
    return DatasetSpec(name=name, md5=md5, mirrors=(), classes=tuple("0123456789"))


@pytest.fixture
def synthetic_registered(synthetic_dir, monkeypatch):
    monkeypatch.setitem(DATASETS, "synthetic", spec_for(synthetic_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(synthetic_dir.parent / "cache"))
    return synthetic_dir


def test_search_order_data_dir_then_env_then_cache(synthetic_registered, tmp_path, monkeypatch):
    folder = synthetic_registered
    # MNISTLAB_DATA holds <name>/
    env_root = tmp_path / "envdata"
    shutil.copytree(folder, env_root / "synthetic")
    monkeypatch.setenv("MNISTLAB_DATA", str(env_root))
    assert load_dataset("synthetic").folder == str(env_root / "synthetic")
    # an explicit data_dir wins, and may hold the files directly
    assert load_dataset("synthetic", data_dir=folder).folder == str(folder)
    # the user cache comes after both
    monkeypatch.delenv("MNISTLAB_DATA")
    shutil.copytree(folder, tmp_path / "cache" / "mnistlab" / "synthetic")
    assert load_dataset("synthetic").folder == str(tmp_path / "cache" / "mnistlab" / "synthetic")


def test_recompressed_copy_verifies_altered_does_not(synthetic_registered, tmp_path):
    folder = synthetic_registered
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    stem = "t10k-images-idx3-ubyte"
    raw = idx.read_bytes(copy / (stem + ".gz"))
    (copy / (stem + ".gz")).unlink()
    (copy / stem).write_bytes(raw)  # uncompressed: same content, different file
    data = load_dataset("synthetic", data_dir=copy)
    assert data.x_test.shape == (64, 28, 28)
    altered = bytearray(raw)
    altered[-1] ^= 0xFF
    (copy / stem).write_bytes(bytes(altered))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("synthetic", data_dir=copy)


def test_label_count_mismatch_is_reported(synthetic_dir, monkeypatch):
    stem = "train-labels-idx1-ubyte"
    labels = idx.read_idx(synthetic_dir / (stem + ".gz"))
    idx.write_idx(synthetic_dir / (stem + ".gz"), labels[:-1])
    monkeypatch.setitem(DATASETS, "synthetic", spec_for(synthetic_dir))
    with pytest.raises(DataError, match="do not pair up"):
        load_dataset("synthetic", data_dir=synthetic_dir)


def test_label_out_of_range(synthetic_dir, monkeypatch):
    stem = "t10k-labels-idx1-ubyte"
    labels = idx.read_idx(synthetic_dir / (stem + ".gz")).copy()
    labels[3] = 11
    idx.write_idx(synthetic_dir / (stem + ".gz"), labels)
    monkeypatch.setitem(DATASETS, "synthetic", spec_for(synthetic_dir))
    with pytest.raises(DataError, match="labels must be 0-9, found 11"):
        load_dataset("synthetic", data_dir=synthetic_dir)


def test_unknown_dataset():
    with pytest.raises(UsageError, match="unknown dataset 'emnist'"):
        load_dataset("emnist")


def test_missing_without_download_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("MNISTLAB_DATA", str(tmp_path / "nothing"))
    monkeypatch.setattr(load_mod, "SYSTEM_DIR", tmp_path / "sys")
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", download=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "nothing" / "fashion-mnist") in msg


def test_preprocessing_matches_the_notebook():
    x = np.array([[[0, 255], [128, 1]]], dtype=np.uint8).repeat(3, axis=0)
    f = for_input(x, (4,))
    assert f.shape == (3, 4) and f.dtype == np.float32
    np.testing.assert_allclose(f[0], [0, 1, 128 / 255, 1 / 255])
    im = for_input(x, (2, 2, 1))
    assert im.shape == (3, 2, 2, 1) and im.max() == 1.0
    oh = one_hot(np.array([0, 9, 3]))
    assert oh.shape == (3, 10) and oh.dtype == np.float32
    np.testing.assert_array_equal(oh.argmax(1), [0, 9, 3])
    assert oh.sum() == 3


def test_real_mnist_shapes_and_checksums(mnist):
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.y_train.shape == (60000,)
    assert mnist.x_test.shape == (10000, 28, 28) and mnist.x_test.dtype == np.uint8
    assert np.bincount(mnist.y_test).tolist()[:3] == [980, 1135, 1032]


def test_fashion_mnist_from_the_system_folder():
    if load_mod.find("fashion-mnist") is None:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    data = load_dataset("fashion-mnist", download=False)
    assert data.x_train.shape == (60000, 28, 28)
    assert data.classes[9] == "Ankle boot"
    assert np.bincount(data.y_test).tolist() == [1000] * 10


def test_for_input_takes_any_mnist_layout_for_any_model():
    from mnistlab.errors import MnistlabError
    from mnistlab.models import build_model

    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    for shape in ((784,), (28, 28, 1)):
        want = (x.astype(np.float32) / 255).reshape((5,) + shape)
        for layout in (x, x[..., None], x.reshape(5, 784)):
            got = for_input(layout, shape)
            assert got.dtype == np.float32 and got.shape == (5,) + shape
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(for_input(layout.astype(np.float64) / 255, shape), want)
            kept = for_input(layout, shape, scaled=False)
            assert kept.dtype == np.uint8 and np.shares_memory(kept, x)
            np.testing.assert_array_equal(kept, shaped(layout, shape))
    model = build_model("cnn")
    assert for_input(x.reshape(5, 784), model).shape == (5, 28, 28, 1)  # a model gives its own shape
    with pytest.raises(MnistlabError, match="do not fit"):
        for_input(np.zeros((2, 27, 27), np.uint8), model)
