"""Backpropagation on the default preset's network, for scale beside ES: scikit-learn's
``MLPClassifier`` (784-128-10 ReLU on the pixels, log-loss, Adam lr 0.001, batches of 256 in
fastes' shuffled order; bench/peer_tools.py's ``SklearnRunner``) trained for ``--seconds``
on this process's threads, its test accuracy measured at fastes' evaluation times (1, 2, 4,
8 and 16 s, every 30 s, each epoch's end) outside the clock.

It writes a run folder's ``metrics.csv`` (the loss columns are the test set's; no training
figures) and a ``summary.json`` with its time to each accuracy level, so that ``fastes plot``
draws it on the axes of the ES runs:

    python bench/backprop.py --seconds 60 --out results/backprop
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

from fastes.config import preset
from fastes.io.data import epoch_order, load_dataset
from fastes.io.report import write_json, write_metrics_csv
from fastes.state import ACCURACY_LEVELS
from fastes.trainer import next_evaluation
from peer_tools import BACKPROP, SklearnRunner


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of training")
    p.add_argument("--out", type=Path, default=Path("results/backprop"))
    args = p.parse_args()
    # an epoch's last batch is short, which partial_fit reports as a clipped batch size
    warnings.filterwarnings("ignore", message="Got `batch_size` less than 1", category=UserWarning)
    config = preset("default")
    ds = load_dataset("mnist")
    runner = SklearnRunner(config, ds)
    n, size = len(ds.y_train), BACKPROP["batch_size"]
    n_batches = -(-n // size)
    x_test = ds.dense("test")
    history, reached = [], {}
    elapsed, next_eval, epoch, batch = 0.0, next_evaluation(0.0, config.eval_every_seconds), 0, 0
    order = epoch_order(config.seed, 0, n, True)

    def record() -> None:
        proba = runner.model.predict_proba(x_test)
        accuracy = float((proba.argmax(axis=1) == ds.y_test).mean())
        loss = float(-np.log(np.clip(proba[np.arange(len(ds.y_test)), ds.y_test], 1e-12, None)).mean())
        history.append({"epoch": round(epoch + batch / n_batches, 4), "generation": epoch * n_batches + batch,
                        "wall_seconds": round(elapsed, 3), "train_loss": float("nan"),
                        "train_accuracy": float("nan"), "test_loss": loss, "test_accuracy": accuracy})
        for level in ACCURACY_LEVELS:
            if accuracy >= float(level) and level not in reached:
                reached[level] = round(elapsed, 3)
        print(json.dumps(history[-1]), flush=True)

    while elapsed < args.seconds:
        started = time.perf_counter()
        runner.run(order[batch * size:(batch + 1) * size][None, :])  # one Adam step on one batch
        elapsed += time.perf_counter() - started
        batch += 1
        if batch == n_batches:
            record()
            epoch, batch = epoch + 1, 0
            order = epoch_order(config.seed, epoch, n, True)
        elif elapsed >= next_eval:
            record()
        if elapsed >= next_eval:
            next_eval = next_evaluation(elapsed, config.eval_every_seconds)
    record()
    args.out.mkdir(parents=True, exist_ok=True)
    write_metrics_csv(args.out / "metrics.csv", history)
    write_json(args.out / "summary.json", {
        "tool": runner.implementation, "network": [ds.n_features, *config.hidden, ds.n_classes],
        "seconds": round(elapsed, 3), "epochs_done": history[-1]["epoch"],
        "final": {"test_accuracy": history[-1]["test_accuracy"]},
        "time_to_accuracy": {level: reached.get(level) for level in ACCURACY_LEVELS},
    })


if __name__ == "__main__":
    main()
