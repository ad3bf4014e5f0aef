"""Datasets: the bundled MNIST IDX files, any IDX folder, and scikit-learn's 8x8 digits.

Every dataset comes out the same way: float32 features (pixels scaled to [0, 1],
flattened row-major, :meth:`Dataset.dense`, or in CSR form, :meth:`Dataset.csr`) and
int32 labels. Any problem raises :class:`DatasetError` naming the file.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import math
import os
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..config import OPTIONS
from ..errors import DatasetError
from .paths import read_bytes, regular_file
from ..memory import available_bytes, format_bytes

#: IDX file names, as in the original distribution (with or without a ``.gz`` suffix).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# IDX type codes (third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class BytePixels:
    """A split of IDX images, shape (n, d) uint8; its features are the pixels / 255.

    Held in one form at a time: the bytes until the kernels first ask for the CSR form
    (:meth:`csr`), then that alone: MNIST's pixels are mostly zeros, so a training run holds
    only the smaller CSR, and a split nothing trains or evaluates on (the training split,
    for ``fastes evaluate``) stays bytes.
    """

    scale = 1.0 / 255.0

    def __init__(self, pixels: np.ndarray):
        self.shape: tuple[int, int] = (int(pixels.shape[0]), int(pixels.shape[1]))
        self._pixels: np.ndarray | None = pixels
        self._csr: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The features in CSR form (indptr int64, indices int32, values float32)."""
        if self._csr is None:
            from ..backends.workspace import dense_to_csr

            self._csr = dense_to_csr(self._pixels, self.scale)
            self._pixels = None
        return self._csr

    def nnz(self) -> int:
        """Non-zero pixels."""
        return int(np.count_nonzero(self._pixels)) if self._csr is None else int(self._csr[0][-1])

    def dense(self, rows=None) -> np.ndarray:
        """Float32 features of all rows or of ``rows`` (indices or a slice), shape (n, d)."""
        if self._csr is None:
            x = self._pixels if rows is None else self._pixels[rows]
            return x.astype(np.float32) * np.float32(self.scale)
        indptr, indices, values = self._csr
        rows = np.arange(len(self))[slice(None) if rows is None else rows]
        starts, counts = indptr[rows], indptr[rows + 1] - indptr[rows]
        first = np.cumsum(counts) - counts  # where each row's entries start among the gathered ones
        entries = np.arange(counts.sum()) - np.repeat(first - starts, counts)
        out = np.zeros((len(rows), self.shape[1]), dtype=np.float32)
        out[np.repeat(np.arange(len(rows)), counts), indices[entries]] = values[entries]
        return out


@dataclass(frozen=True)
class Dataset:
    """A train/test split ready for training.

    Attributes
    ----------
    name : str
        Where it came from (``"mnist"``, ``"digits"`` or a folder path).
    x_train : ndarray or BytePixels of shape (n_train, n_features)
        IDX images as :class:`BytePixels`, other data as a float32 array of features;
        :meth:`dense` and :meth:`csr` give the features of either.
    y_train : ndarray of shape (n_train,), int32 in [0, n_classes)
    x_test : ndarray or BytePixels of shape (n_test, n_features), as ``x_train``
    y_test : ndarray of shape (n_test,), int32 in [0, n_classes)
    n_classes : int
    image_shape : tuple of int
        Shape of one image, for plots (28, 28) or (8, 8).
    """

    name: str
    x_train: np.ndarray | BytePixels
    y_train: np.ndarray
    x_test: np.ndarray | BytePixels
    y_test: np.ndarray
    n_classes: int
    image_shape: tuple[int, int]
    _csr: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def split(self, name: str) -> tuple[np.ndarray | BytePixels, np.ndarray]:
        """``(x, y)`` of ``"train"`` or ``"test"`` (as stored)."""
        if name not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {name!r}")
        return (self.x_train, self.y_train) if name == "train" else (self.x_test, self.y_test)

    def dense(self, name: str, rows=None) -> np.ndarray:
        """Float32 features of a split (or of its ``rows``), shape (n, n_features)."""
        x = self.split(name)[0]
        if isinstance(x, BytePixels):
            return x.dense(rows)
        return np.ascontiguousarray(x if rows is None else x[rows], dtype=np.float32)

    def csr(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The split's features in CSR form (indptr int64, indices int32, values float32),
        built once and kept: the kernels read only non-zero features, and every epoch
        evaluates the same test set."""
        x = self.split(name)[0]
        if isinstance(x, BytePixels):
            return x.csr()
        if name not in self._csr:
            from ..backends.workspace import dense_to_csr

            self._csr[name] = dense_to_csr(x)
        return self._csr[name]

    def nnz(self, name: str) -> int:
        """Non-zero features of a split."""
        x = self.split(name)[0]
        return x.nnz() if isinstance(x, BytePixels) else int(np.count_nonzero(x))


def bundled_mnist_dir() -> Path:
    """Folder of the MNIST files shipped inside the package."""
    return Path(str(resources.files("fastes") / "datasets" / "mnist"))


def _read_bytes(path: Path) -> bytes:
    """A dataset file's bytes, gunzipped when it starts with the gzip magic; neither the
    file nor its decompressed contents may be larger than the memory available."""
    limit = available_bytes()
    raw = read_bytes(path, "dataset file", DatasetError, limit)
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
            data = fh.read(4)
            if len(data) == 4 and data[:2] == b"\0\0" and data[2] in _IDX_DTYPES:
                data += fh.read(4 * data[3])  # then no more than the header declares, and one byte to tell
                data += fh.read(max(_idx_size(data) - len(data), 0) + 1)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise DatasetError(
            f"dataset file {path} is not a valid gzip file ({exc}); replace it with an intact copy"
        ) from None
    if len(data) > limit:
        raise DatasetError(
            f"dataset file {path} decompresses to more than the {format_bytes(limit)} of memory available; "
            "is it really an MNIST-format file?"
        )
    return data


def _idx_size(header: bytes) -> int:
    """The whole size in bytes that an IDX header (magic and dimensions) declares."""
    ndim = header[3]
    dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return 4 + 4 * ndim + math.prod(dims) * _IDX_DTYPES[header[2]].itemsize


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of one IDX file.

    Parameters
    ----------
    raw : bytes
        Decompressed IDX contents.
    source : str
        Name used in error messages.

    Returns
    -------
    ndarray of shape given by the header, native byte order.
    """
    if len(raw) < 4:
        raise DatasetError(f"{source}: file is {len(raw)} bytes, too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0:
        raise DatasetError(
            f"{source}: bad magic number {raw[:4].hex()} (an IDX file starts with 0000); "
            "is this an MNIST-format file?"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise DatasetError(f"{source}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0:
        raise DatasetError(f"{source}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{source}: truncated header ({len(raw)} bytes, need {header})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = _idx_size(raw)
    if len(raw) > expected:
        raise DatasetError(f"{source}: holds more than the {expected} bytes its header declares ({dims}); "
                           "the file is corrupt or not an MNIST-format file")
    if len(raw) != expected:
        raise DatasetError(
            f"{source}: payload length mismatch: header says {dims} ({expected} bytes in all) "
            f"but the file has {len(raw)} bytes; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
        if os.path.lexists(candidate):  # a folder, a symlink loop, a device: say which
            return regular_file(candidate, "dataset file", DatasetError)
    raise DatasetError(
        f"dataset file {stem}(.gz) not found in {folder}; "
        "the folder must hold the four MNIST-format IDX files"
    )


def _read_checksums(folder: Path) -> dict[str, str]:
    sums: dict[str, str] = {}
    raw = read_bytes(folder / "SHA256SUMS", "checksum file", DatasetError, 1 << 16)
    text = raw.decode("ascii", errors="replace")
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#"):
            sums[parts[1]] = parts[0]
    return sums


def load_idx_folder(folder: str | Path, verify_checksums: bool = False, name: str | None = None) -> Dataset:
    """Load the four IDX files of an MNIST-format folder.

    Parameters
    ----------
    folder : str or Path
        Folder holding ``train-images-idx3-ubyte[.gz]`` and the three other files.
    verify_checksums : bool
        Check each decompressed file against ``SHA256SUMS`` in the folder.

    Returns
    -------
    Dataset
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"data folder {folder} does not exist or is not a folder")
    sums = _read_checksums(folder) if verify_checksums else {}
    arrays = {}
    for key, stem in IDX_FILES.items():
        path = _find(folder, stem)
        cached = _cache_path(path, sums[stem]) if sums.get(stem) else None
        raw = _cached_idx(cached, sums[stem]) if cached else None
        if raw is None:
            raw = _read_bytes(path)
            if verify_checksums:
                digest = hashlib.sha256(raw).hexdigest()
                if sums.get(stem) != digest:
                    raise DatasetError(
                        f"{path}: SHA-256 {digest[:16]}... does not match the bundled checksum; "
                        "the file is corrupt, reinstall fastes"
                    )
                if cached:
                    _cache_idx(cached, raw)
        arrays[key] = (parse_idx(raw, str(path)), path)
    return _assemble(arrays, name or str(folder))


def cache_dir() -> Path:
    """Where decompressed copies of checksummed IDX files are kept: ``$FASTES_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/fastes``, else ``~/.cache/fastes``."""
    if os.environ.get("FASTES_CACHE_DIR"):
        return Path(os.environ["FASTES_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastes"


def _cache_path(source: Path, sha256: str) -> Path | None:
    """The cache file for a checksummed IDX file: named by its checksum and by the source
    file's size and modification time, so that a changed source (a corrupt reinstall) is
    decompressed and checked again rather than masked by an older good copy."""
    try:
        stat = source.stat()
    except OSError:
        return None
    return cache_dir() / f"{source.name.split('.')[0]}-{sha256[:16]}-{stat.st_size}-{stat.st_mtime_ns}"


def _cached_idx(path: Path, sha256: str) -> bytes | None:
    """The decompressed file from the cache if its SHA-256 is still ``sha256`` (checked on
    every load, like the gzip file it replaces: reading and hashing 55 MB takes a third of
    the time gunzip does)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    return raw if hashlib.sha256(raw).hexdigest() == sha256 else None


def _cache_idx(target: Path, raw: bytes) -> None:
    """Keep a verified decompressed file for later loads; a cache that cannot be written
    (read-only home, full disk) is skipped without a word: it only saves time."""
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{target.name}.{os.getpid()}.tmp"
        tmp.write_bytes(raw)
        os.replace(tmp, target)
    except OSError:
        pass


def _assemble(arrays: dict, name: str) -> Dataset:
    out = {}
    for split in ("train", "test"):
        images, ipath = arrays[f"{split}_images"]
        labels, lpath = arrays[f"{split}_labels"]
        if images.ndim < 2:
            raise DatasetError(f"{ipath}: images must have at least 2 dimensions, found {images.ndim}")
        if labels.ndim != 1:
            raise DatasetError(f"{lpath}: labels must be 1-dimensional, found shape {labels.shape}")
        if len(images) != len(labels):
            raise DatasetError(
                f"{ipath} holds {len(images)} images but {lpath} holds {len(labels)} labels; "
                "images and labels must come from the same dataset"
            )
        if len(images) == 0 or images[0].size == 0:
            raise DatasetError(f"{ipath} holds no pixels (shape {images.shape}); a dataset needs images in both splits")
        if images.dtype != np.uint8:
            raise DatasetError(f"{ipath}: expected unsigned byte pixels, found {images.dtype}")
        if labels.dtype.kind not in "iu":
            raise DatasetError(f"{lpath}: labels must be integers, found {labels.dtype}")
        if labels.min() < 0:
            raise DatasetError(f"{lpath}: negative label {labels.min()}; labels must be class indices 0, 1, 2, ...")
        if split == "train" and not images.any():
            raise DatasetError(f"{ipath}: every training image is blank (all pixels 0); there is nothing to learn from")
        out[f"x_{split}"] = BytePixels(np.ascontiguousarray(images.reshape(len(images), -1)))
        out[f"y_{split}"] = labels.astype(np.int32)
        out[f"shape_{split}"] = images.shape[1:]
        out[f"path_{split}"] = lpath
    if out["shape_train"] != out["shape_test"]:
        raise DatasetError(f"train images {out['shape_train']} and test images {out['shape_test']} differ in shape")
    n_classes = _check_classes(out["y_train"], out["path_train"], out["y_test"], out["path_test"])
    shape = out["shape_train"]
    image_shape = (int(shape[0]), int(np.prod(shape[1:]))) if len(shape) >= 2 else (1, int(shape[0]))
    return Dataset(name, out["x_train"], out["y_train"], out["x_test"], out["y_test"], n_classes, image_shape)


def _check_classes(y_train: np.ndarray, train_path, y_test: np.ndarray, test_path) -> int:
    """The number of classes, ``max(train label) + 1``, after checking that the training
    labels are consecutive class indices and every test label is one of them."""
    classes = np.unique(y_train)
    if classes[0] != 0:
        raise DatasetError(f"{train_path}: the labels start at {int(classes[0])}; labels must be class indices "
                           "0, 1, 2, ...: renumber them from 0")
    if len(classes) < 2:
        raise DatasetError(f"{train_path}: every training label is {int(classes[0])}; a classifier needs at least "
                           "two classes to tell apart")
    gaps = np.flatnonzero(np.diff(classes) > 1)
    if len(gaps):
        low, high = int(classes[gaps[0]]), int(classes[gaps[0] + 1])
        raise DatasetError(
            f"{train_path}: label {high} lies outside the range {int(classes[0])}-{low} of the labels before it "
            f"(no label in {low + 1}-{high - 1} occurs); labels must be consecutive class indices: fix that label"
        )
    unseen = np.setdiff1d(np.unique(y_test), classes)
    if len(unseen):
        raise DatasetError(
            f"{test_path}: label {int(unseen[0])} never occurs in the training labels "
            f"({int(classes[0])}-{int(classes[-1])}); the test split must use the training split's classes"
        )
    return int(classes[-1]) + 1


def load_digits_dataset(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits, pixels scaled by 1/16, split stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, 10, (8, 8))


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool) -> np.ndarray:
    """Row order of an epoch: in order (the original), or a permutation from (seed, epoch).

    Here, with the data and without Numba, so that bench/peers.py feeds its JAX and PyTorch
    processes the batches fastes trains on without loading the kernels."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n).astype(np.int64)


class ShiftedRows(BytePixels):
    """A training split whose images each move by their own (dy, dx) pixels every epoch,
    dy and dx drawn from ``-shift..shift`` from (seed, epoch); pixels moved off the image
    are dropped (training-set augmentation, ``--shift``).

    :meth:`set_epoch` rewrites its CSR arrays in place (a row only loses entries, so they
    keep their size; entries past ``indptr[-1]`` are unused), so a backend that holds them
    trains on each epoch's rows as soon as they are set. The same (seed, epoch) gives the
    same rows on any machine and thread count.
    """

    def __init__(self, csr: tuple[np.ndarray, np.ndarray, np.ndarray], image_shape: tuple[int, int], shift: int,
                 seed: int):
        self.source = csr
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.shape = (len(csr[0]) - 1, self.image_shape[0] * self.image_shape[1])
        self.shift, self.seed, self.epoch = int(shift), int(seed), None
        self._pixels = None
        self._csr = tuple(a.copy() for a in csr)
        indptr, indices = csr[0], csr[1]
        # each entry's row, and its pixel's row and column on the image (int8 where the
        # image and the shift allow: the per-epoch arithmetic on every entry is then narrow)
        small = np.int8 if max(self.image_shape) + self.shift < 128 else np.int16
        self._entry_row = np.repeat(np.arange(len(indptr) - 1, dtype=np.int32), np.diff(indptr))
        self._at = ((indices // self.image_shape[1]).astype(small), (indices % self.image_shape[1]).astype(small))

    def set_epoch(self, epoch: int) -> None:
        """Move every row as epoch ``epoch`` draws (nothing to do if it is the current one)."""
        if epoch == self.epoch:
            return
        indices, values = self.source[1], self.source[2]
        n, (h, w), small = len(self), self.image_shape, self._at[0].dtype
        moves = np.random.default_rng([self.seed, epoch, 0x5A1F]).integers(-self.shift, self.shift + 1, (2, n))
        dy, dx = moves.astype(small)
        row = self._entry_row
        # a pixel moved above or left of the image wraps to a large unsigned value: one test per axis
        unsigned = np.dtype(small).str.replace("i", "u")
        keep = ((self._at[0] + dy[row]).view(unsigned) < h) & ((self._at[1] + dx[row]).view(unsigned) < w)
        delta = (dy.astype(np.int32) * w + dx)[row[keep]]
        kept = len(delta)
        out_indptr, out_indices, out_values = self._csr
        out_indptr[0] = 0
        np.cumsum(np.bincount(row[keep], minlength=n), out=out_indptr[1:])
        np.add(indices[keep], delta, out=out_indices[:kept])
        out_values[:kept] = values[keep]
        self.epoch = epoch


def shifted(dataset: Dataset, shift: int, seed: int) -> tuple[Dataset, ShiftedRows]:
    """``dataset`` with its training split as :class:`ShiftedRows` (set to epoch 0), and that split."""
    rows = ShiftedRows(dataset.csr("train"), dataset.image_shape, shift, seed)
    rows.set_epoch(0)
    return dataclasses.replace(dataset, x_train=rows), rows


_CACHE: dict[str, Dataset] = {}


def load_dataset(name: str = "mnist", data_dir: str | Path | None = None, if_moved: str | None = None) -> Dataset:
    """Load a dataset by name, or the IDX files of ``data_dir`` when given.

    The bundled MNIST is verified against its SHA-256 sums on load. Bundled datasets are
    cached per process (they cannot change); a ``data_dir`` is read afresh each call.
    ``if_moved``: for a ``data_dir`` a run or model recorded, what to do when it is gone.
    """
    if data_dir is not None:
        if if_moved is not None and not Path(data_dir).is_dir():
            raise DatasetError(f"data folder {data_dir} does not exist or is not a folder; it was recorded with the "
                               f"run: if its files moved, {if_moved}")
        return load_idx_folder(data_dir)
    if name in _CACHE:
        return _CACHE[name]
    if name == "mnist":
        ds = load_idx_folder(bundled_mnist_dir(), verify_checksums=True, name="mnist")
    elif name == "digits":
        ds = load_digits_dataset()
    else:
        choices = ", ".join(OPTIONS["dataset"].choices)
        raise DatasetError(f"unknown dataset {name!r}; choose one of {choices} or pass --data-dir")
    _CACHE[name] = ds
    return ds
