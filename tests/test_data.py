import gzip
import shutil

import numpy as np
import pytest

from fastes.io.data import IDX_FILES, BytePixels, Dataset, bundled_mnist_dir, load_dataset, load_idx_folder, parse_idx
from fastes.errors import DatasetError


def test_bundled_mnist_shapes_and_scaling():
    ds = load_dataset("mnist")
    assert isinstance(ds.x_train, BytePixels) and isinstance(ds.x_test, BytePixels)
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert ds.n_classes == 10 and ds.image_shape == (28, 28)
    first = ds.dense("train", np.arange(100))
    assert first.dtype == np.float32 and first.min() == 0.0 and first.max() == 1.0
    assert set(np.unique(ds.y_train)) == set(range(10))
    # 150 non-zero pixels per image on average
    indptr, indices, values = ds.csr("train")
    assert 140 < indptr[-1] / 60000 < 160 and ds.nnz("train") == indptr[-1]
    assert ds.csr("train") is ds.csr("train")  # built once


def _pixels(n=300, d=20, seed=0) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 256, (n, d), dtype=np.uint8)
    x[x < 180] = 0  # mostly zeros, as in images
    return x


@pytest.mark.parametrize("rows", [None, slice(0, 16), slice(290, None), np.arange(0, 300, 17), np.array([5, 5, 0]),
                                  np.zeros(0, dtype=np.int64)])
def test_byte_pixels_give_the_same_features_as_bytes_and_as_csr(rows):
    x = _pixels()
    expected = x.astype(np.float32) * np.float32(1 / 255)
    expected = expected if rows is None else expected[rows]
    pixels = BytePixels(x)
    np.testing.assert_array_equal(pixels.dense(rows), expected)
    assert pixels.nnz() == np.count_nonzero(x)
    indptr, indices, values = pixels.csr()  # from here on the bytes are gone: rows come from the CSR
    assert pixels._pixels is None and pixels.csr()[0] is indptr
    np.testing.assert_array_equal(pixels.dense(rows), expected)
    assert pixels.nnz() == np.count_nonzero(x) == len(values)


def test_a_split_stays_bytes_until_its_csr_is_asked_for():
    x = _pixels()
    ds = Dataset("idx", BytePixels(x), np.zeros(300, np.int32), BytePixels(x[:10]), np.zeros(10, np.int32), 1, (4, 5))
    ds.csr("test")
    assert ds.x_test._pixels is None and ds.x_train._pixels is x


def test_dense_features_csr_agrees_with_them():
    x = _pixels().astype(np.float32) / 255
    ds = Dataset("array", x, np.zeros(300, np.int32), x[:0], np.zeros(0, np.int32), 1, (1, 20))
    indptr, indices, values = ds.csr("train")
    assert ds.csr("train")[0] is indptr and ds.nnz("train") == len(values) == np.count_nonzero(x)
    rebuilt = np.zeros_like(x)
    rebuilt[np.repeat(np.arange(300), np.diff(indptr)), indices] = values
    np.testing.assert_array_equal(rebuilt, x)


def test_bundled_checksums_verified(tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(bundled_mnist_dir(), folder)
    load_idx_folder(folder, verify_checksums=True)  # intact copy passes
    path = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # a valid file whose bytes changed
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DatasetError, match="SHA-256"):
        load_idx_folder(folder, verify_checksums=True)


def _idx(dims, payload: bytes, code=0x08) -> bytes:
    header = bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + payload


def test_parse_idx_roundtrip():
    arr = parse_idx(_idx([2, 3], bytes(range(6))))
    assert arr.shape == (2, 3) and arr[1, 2] == 5


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x02\x08\x01" + (3).to_bytes(4, "big") + b"abc", "magic"),
        (bytes([0, 0, 0x42, 1]) + (3).to_bytes(4, "big") + b"abc", "dtype code"),
        (_idx([4], b"abc"), "payload length"),
        (_idx([2], b"abcdef"), "more than the 10 bytes its header declares"),
        (bytes([0, 0, 8, 3, 0, 0]), "truncated header"),
    ],
)
def test_parse_idx_rejects_bad_files(raw, match):
    with pytest.raises(DatasetError, match=match):
        parse_idx(raw, "f")


def _write_folder(folder, n_train=5, n_test=3, n_train_labels=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sizes = {"train": (n_train, n_train_labels or n_train), "test": (n_test, n_test)}
    for split, (ni, nl) in sizes.items():
        prefix = "train" if split == "train" else "t10k"
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(_idx([ni, 4, 4], rng.integers(0, 256, ni * 16, dtype=np.uint8).tobytes()))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx([nl], bytes([i % 3 for i in range(nl)]))))


def test_data_dir_loads_raw_and_gzip(tmp_path):
    _write_folder(tmp_path)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.x_train.shape == (5, 16) and ds.image_shape == (4, 4) and ds.n_classes == 3


def test_data_dir_count_mismatch(tmp_path):
    _write_folder(tmp_path, n_train_labels=4)
    with pytest.raises(DatasetError, match="5 images but .* 4 labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_data_dir_missing_file_and_truncated_gzip(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.*not found"):
        load_dataset("mnist", data_dir=tmp_path)
    _write_folder(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(DatasetError, match="train-labels"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("mnist", data_dir=tmp_path / "nope")


def test_digits():
    ds = load_dataset("digits")
    assert ds.x_train.shape[1] == 64 and ds.x_train.max() <= 1.0 and ds.n_classes == 10
    assert len(ds.x_train) + len(ds.x_test) == 1797


def test_idx_names_cover_all_four():
    assert sorted(IDX_FILES.values()) == sorted(p.name[:-3] for p in bundled_mnist_dir().glob("*.gz"))


def test_verified_files_are_cached_and_a_bad_cache_is_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTES_CACHE_DIR", str(tmp_path / "cache"))
    first = load_idx_folder(bundled_mnist_dir(), verify_checksums=True)
    cached = sorted((tmp_path / "cache").iterdir())
    assert len(cached) == 4
    again = load_idx_folder(bundled_mnist_dir(), verify_checksums=True)
    np.testing.assert_array_equal(first.dense("test"), again.dense("test"))
    victim = next(p for p in cached if p.name.startswith("t10k-labels"))
    raw = bytearray(victim.read_bytes())
    raw[-1] = (raw[-1] + 1) % 10  # a cached copy whose bytes changed is decompressed afresh
    victim.write_bytes(bytes(raw))
    np.testing.assert_array_equal(load_idx_folder(bundled_mnist_dir(), verify_checksums=True).y_test, first.y_test)


def _moved(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` moved by (dy, dx) pixels, zeros where nothing moved in."""
    h, w = image.shape
    out = np.zeros_like(image)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[max(-dy, 0) : h - max(dy, 0),
                                                                            max(-dx, 0) : w - max(dx, 0)]
    return out


@pytest.mark.parametrize("shift", [1, 2])
def test_shifted_rows_are_the_images_moved(shift):
    """``--shift``: every training image of an epoch moved by its own (dy, dx) in -shift..shift,
    the same for the same (seed, epoch) and different for another epoch; the CSR arrays are
    rewritten in place (the backend holds them), the dataset's own rows are untouched."""
    from fastes.io.data import shifted

    ds = load_dataset("digits")
    aug, rows = shifted(ds, shift, seed=3)
    arrays = aug.csr("train")
    images = ds.dense("train").reshape(-1, 8, 8)
    seen = set()
    for epoch in (0, 1, 0):
        rows.set_epoch(epoch)
        assert aug.csr("train") is arrays
        got = aug.dense("train").reshape(-1, 8, 8)
        moves = np.random.default_rng([3, epoch, 0x5A1F]).integers(-shift, shift + 1, (2, len(images)))
        for i in range(len(images)):
            np.testing.assert_array_equal(got[i], _moved(images[i], moves[0][i], moves[1][i]))
        indptr, indices = arrays[0], arrays[1]
        assert all((np.diff(indices[indptr[i] : indptr[i + 1]]) > 0).all() for i in range(len(images)))
        seen.add(got.tobytes())
        assert {tuple(m) for m in moves.T} == {(a, b) for a in range(-shift, shift + 1) for b in range(-shift, shift + 1)}
    assert len(seen) == 2
    np.testing.assert_array_equal(ds.dense("train").reshape(-1, 8, 8), images)
