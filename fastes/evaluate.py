"""Using a trained model: evaluate it on a dataset, classify image files, plot runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import report
from .backends import predict_logits
from .data import load_dataset
from .errors import DatasetError, FastesError, ModelFileError
from .reference import losses_from_logits
from .storage import load_model


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (N, C), float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def evaluate_model(model_path, dataset: str | None = None, data_dir: str | None = None) -> dict:
    """Test-split loss, accuracy and per-class report of a model file.

    The dataset and loss default to those the model was trained with.
    """
    layout, theta, config = load_model(model_path)
    name = dataset or config.get("dataset", "mnist")
    data_dir = data_dir if data_dir is not None else (config.get("data_dir") if dataset is None else None)
    ds = load_dataset(name, data_dir)
    if ds.n_features != layout.dims[0] or ds.n_classes > layout.dims[-1]:
        raise ModelFileError(
            f"model {model_path} takes {layout.dims[0]} inputs and {layout.dims[-1]} classes, "
            f"but dataset {ds.name} has {ds.n_features} features and {ds.n_classes} classes"
        )
    logits = predict_logits(theta, layout, ds.x_test)
    loss = config.get("loss", "mse")
    row_loss, ok = losses_from_logits(logits, ds.y_test, loss)
    predictions = logits.argmax(axis=1)
    labels = list(range(layout.dims[-1]))
    return {
        "model": str(model_path),
        "dataset": ds.name,
        "loss_function": loss,
        "test_loss": float(row_loss.mean()),
        "test_accuracy": float(ok.mean()),
        "n_test": int(len(ds.y_test)),
        "report": report.classification_table(ds.y_test, predictions, labels),
    }


def load_image(path: str | Path, side: int, invert: bool = False) -> np.ndarray:
    """An image file as MNIST-like pixels: grayscale, ``side`` x ``side``, white digit on
    black, scaled to [0, 1], flattened (side*side,) float32."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            gray = img.convert("L").resize((side, side), Image.Resampling.LANCZOS)
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}; give a PNG or JPEG file") from None
    pixels = np.asarray(gray, dtype=np.float32) / np.float32(255.0)
    if invert:
        pixels = 1.0 - pixels
    return pixels.reshape(-1)


def predict_images(model_path, images: list[str], invert: bool = False) -> list[dict]:
    """Label and class probabilities of each image file."""
    layout, theta, _ = load_model(model_path)
    side = int(round(np.sqrt(layout.dims[0])))
    if side * side != layout.dims[0]:
        raise ModelFileError(f"model {model_path} takes {layout.dims[0]} inputs, not a square image")
    x = np.stack([load_image(p, side, invert) for p in images])
    probs = softmax(predict_logits(theta, layout, x))
    return [
        {"image": str(p), "label": int(pr.argmax()), "probabilities": [round(float(v), 6) for v in pr]}
        for p, pr in zip(images, probs)
    ]


def plot_runs(runs: list[str], out: Path) -> None:
    """``fastes plot``: test accuracy against wall seconds for run folders (LABEL=DIR allowed)."""
    series = []
    for spec in runs:
        label, _, folder = spec.rpartition("=") if "=" in spec else ("", "", spec)
        folder = Path(folder)
        metrics = folder / "metrics.csv"
        if not metrics.is_file():
            raise FastesError(f"{folder} has no metrics.csv; give folders written by fastes train")
        series.append((label or folder.name, report.read_metrics_csv(metrics)))
    report.plot_accuracy_vs_time(out, series)
