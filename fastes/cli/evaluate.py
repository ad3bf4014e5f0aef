"""Using a trained model: evaluate it on a dataset, classify image files, plot runs."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ..io import report
from ..backends import predict_logits
from ..io.data import load_dataset
from ..io.projection import project_rows, projected
from ..backends.workspace import dense_to_csr
from ..errors import DatasetError, ModelFileError, one_line
from ..io.paths import regular_file
from ..backends.reference import hidden_layers, losses_from_logits
from ..io.checkpoints import load_model
from ..layout import BINARY_ACTIVATIONS


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (N, C), float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _finite(logits: np.ndarray, model_path, what: str) -> np.ndarray:
    """``logits``, if every one is finite: a model whose outputs overflow float32 has no
    prediction, and NaN is no valid JSON."""
    bad = int((~np.isfinite(logits)).any(axis=1).sum())
    if bad:
        raise ModelFileError(f"model {model_path} computes NaN or infinite outputs on {bad} of {len(logits)} of "
                             f"{what}: its weights are too large for float32; retrain it or check the file")
    return logits


def evaluate_model(model_path, dataset: str | None = None, data_dir: str | None = None) -> dict:
    """Test-split loss, accuracy and per-class report of a model file.

    The dataset and loss default to those the model was trained with.
    """
    layout, theta, config, projection = load_model(model_path)
    with np.errstate(all="ignore"):  # a model with huge weights scores inf; that is its result
        return _evaluate(model_path, (layout, theta, config, projection), dataset, data_dir)


def _evaluate(model_path, model, dataset, data_dir) -> dict:
    layout, theta, config, projection = model
    name = dataset or config.get("dataset", "mnist")
    recorded = data_dir is None and dataset is None and config.get("data_dir") is not None
    data_dir = data_dir if data_dir is not None else (config.get("data_dir") if dataset is None else None)
    ds = load_dataset(name, data_dir, if_moved="point to them with --data-dir NEW_DIR" if recorded else None)
    n_inputs = _n_inputs(layout, projection)
    if ds.n_features != n_inputs or ds.n_classes > layout.dims[-1]:
        raise ModelFileError(
            f"model {model_path} takes {n_inputs} inputs and {layout.dims[-1]} classes, "
            f"but dataset {ds.name} has {ds.n_features} features and {ds.n_classes} classes"
        )
    if projection is not None:  # the coordinates the network was trained on, by the training's own kernel
        ds = projected(ds, projection)
    logits = _finite(predict_logits(theta, layout, csr=ds.csr("test")), model_path, f"{ds.name}'s test images")
    loss = config.get("loss", "mse")
    row_loss, ok = losses_from_logits(logits, ds.y_test, loss)
    predictions = logits.argmax(axis=1)
    labels = list(range(layout.dims[-1]))
    return {
        "model": str(model_path),
        "dataset": ds.name,
        "activation": layout.activation,
        **_binary_check(theta, layout, ds),
        "loss_function": loss,
        "test_loss": float(row_loss.mean()),
        "test_accuracy": float(ok.mean()),
        "n_test": int(len(ds.y_test)),
        "report": report.classification_table(ds.y_test, predictions, labels),
    }


def _n_inputs(layout, projection) -> int:
    """Features a model file takes: its first layer's, or those its ``--pca`` projection reads."""
    return layout.dims[0] if projection is None else projection.components.shape[0]


def _binary_check(theta, layout, ds) -> dict:
    """For a binary network (sign or step neurons), every value its hidden layers take on the
    test split and the accuracy of its outputs, both computed independently of the kernels
    by the NumPy reference: the check that the trained network really is binary
    (``hidden_values`` then has two entries at most) and scores what the kernels score."""
    if layout.activation not in BINARY_ACTIVATIONS or layout.n_layers < 2:
        return {}
    seen, correct = set(), 0
    w_out, b_out = layout.unpack(theta)[-1]
    for start in range(0, len(ds.y_test), 1000):  # bounded memory on any test split
        rows = np.arange(start, min(len(ds.y_test), start + 1000))
        hidden = hidden_layers(theta, layout, ds.dense("test", rows))
        for h in hidden:
            seen.update(np.unique(h).tolist())
        correct += int(((hidden[-1] @ w_out + b_out).argmax(axis=1) == ds.y_test[rows]).sum())
    return {"hidden_values": sorted(seen), "binary": seen <= set(BINARY_ACTIVATIONS[layout.activation]),
            "reference_accuracy": correct / len(ds.y_test)}


#: Largest image predict reads (a digit needs 28x28 pixels; a phone photo is ~12 million).
MAX_IMAGE_PIXELS = 50_000_000


def load_image(path: str | Path, side: int, invert: bool = False) -> np.ndarray:
    """An image file as MNIST-like pixels: grayscale, ``side`` x ``side``, white digit on
    black, scaled to [0, 1], flattened (side*side,) float32.

    Transparent pixels are background: the image is placed on black (white with
    ``invert``, for dark digits) before it is made gray. A blank result is an error.
    """
    from PIL import Image

    path = regular_file(path, "image", DatasetError)
    background = 255 if invert else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's notes on odd but readable files
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise DatasetError(_too_large(path, width * height))
                gray = _on_background(img, background).resize((side, side), Image.Resampling.LANCZOS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # PIL's own, larger limit
            claimed = re.search(r"\((\d+) pixels\)", str(exc))
            raise DatasetError(_too_large(path, int(claimed.group(1)) if claimed else None)) from None
        except DatasetError:
            raise
        except Exception as exc:  # noqa: BLE001 - PIL's decoders raise many types on a damaged file
            raise DatasetError(f"cannot read image {path}: {one_line(exc)}; give a PNG or JPEG file") from None
    pixels = np.asarray(gray, dtype=np.float32) / np.float32(255.0)
    if pixels.max() - pixels.min() < 1.0 / 255.0:
        raise DatasetError(
            f"image {path} is one flat colour on a {'white' if invert else 'black'} background, with no digit to "
            f"classify; {'drop --invert for light digits' if invert else 'pass --invert for dark digits'}"
        )
    if invert:
        pixels = 1.0 - pixels
    return pixels.reshape(-1)


def _on_background(img, background: int):
    """The image in grayscale ("L"), with any transparency composited onto ``background``."""
    from PIL import Image

    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit gray: PIL's "L" would clip it at 255
        levels = np.asarray(img, dtype=np.float64) * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (background, background, background, 255))
        return Image.alpha_composite(flat, rgba).convert("L")
    return img.convert("L")


def _too_large(path, pixels: int | None) -> str:
    size = f"{pixels:,} pixels" if pixels else "too many pixels"
    return (f"image {path} has {size}, more than the {MAX_IMAGE_PIXELS:,} predict reads; "
            "crop or scale it down (a digit needs only 28x28)")


def predict_images(model_path, images: list[str], invert: bool = False) -> list[dict]:
    """Label and class probabilities of each image file."""
    layout, theta, _, projection = load_model(model_path)
    n_inputs = _n_inputs(layout, projection)
    side = int(round(np.sqrt(n_inputs)))
    if side * side != n_inputs:
        raise ModelFileError(f"model {model_path} takes {n_inputs} inputs, not a square image")
    x = np.stack([load_image(p, side, invert) for p in images])
    if projection is not None:
        x = project_rows(dense_to_csr(x), projection)
    with np.errstate(all="ignore"):
        probs = softmax(_finite(predict_logits(theta, layout, x), model_path, "the images"))
    return [
        {"image": str(p), "label": int(pr.argmax()), "probabilities": [round(float(v), 6) for v in pr]}
        for p, pr in zip(images, probs)
    ]

