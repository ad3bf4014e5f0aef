"""Binary neurons: fastes' ES beside backpropagation with the straight-through estimator (issue 24).

The same network, the binary preset's (sign neurons), trained two ways on this machine, one
after the other, each on every core for the same training time:

- ES: ``fastes train --preset binary --max-seconds S`` (the preset as a user runs it; its
  run folder is OUT/binary);
- backpropagation through the sign function with the straight-through estimator, in
  PyTorch (bench/peer_tools.py's ``SteRunner``, driven as bench/peers.py drives every tool:
  snapshots scored by fastes' NumPy forward pass).

It needs PyTorch, so it runs in bench/peers.py's environment::

    /work/peers-venv/bin/python bench/binary.py --seconds 600 --out results     # ~21 minutes
    /work/peers-venv/bin/python bench/binary.py --seconds 20 --out /tmp/binary  # smoke test

and writes OUT/binary (the ES run folder), OUT/binary-vs-ste.json (both curves),
OUT/binary-vs-ste.md (accuracy at fixed times) and OUT/binary-vs-ste.png. ``--only fastes``
or ``--only ste`` reruns one side and keeps the other's curve from OUT/binary-vs-ste.json.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import peers
import peer_tools as tools

from fastes.cli.bench import cpu_model
from fastes.io.report import read_metrics_csv

#: Training times (s) the table reports, those within the budget.
TABLE_TIMES = (10.0, 20.0, 60.0, 300.0, 600.0)
CONFIG = "binary"


def fastes_run(out: Path, seconds: float) -> dict:
    """Train the binary preset into ``out`` (replacing an earlier run there); its curve."""
    command = [sys.executable, "-m", "fastes", "train", "--preset", CONFIG, "--max-seconds", f"{seconds:g}",
               "--out", str(out), "--overwrite", "--quiet"]
    subprocess.run(command, check=True)
    return read_run(out)


def read_run(out: Path) -> dict:
    """A fastes run folder as a curve: its test evaluations (seconds of training, generation,
    test accuracy) and its summary."""
    rows = [{"seconds": r["wall_seconds"], "generation": int(r["generation"]), "test_accuracy": r["test_accuracy"]}
            for r in read_metrics_csv(out / "metrics.csv") if math.isfinite(r["test_accuracy"])]
    summary = json.loads((out / "summary.json").read_text())
    return {"tool": "fastes", "implementation": f"`fastes train --preset {CONFIG}` (ES, Numba kernels)",
            "threads": summary["threads"], "generations": summary["generations"],
            "train_seconds": summary["wall_seconds"], "final_test_accuracy": summary["final"]["test_accuracy"],
            "evaluations": rows}


def table(result: dict) -> str:
    """The comparison as a markdown table: test accuracy at :data:`TABLE_TIMES` and at the end."""
    times = [t for t in TABLE_TIMES if t <= result["seconds"]]
    head = ["method", *[f"{t:g} s" for t in times], "at the end", "training s", "steps", "ms / step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in result["runs"]:
        evaluations = run["evaluations"]
        # a run that completed its schedule inside the budget keeps its final model to the end
        accs = [peers.accuracy_at(evaluations, t) for t in times]
        accs = [evaluations[-1]["test_accuracy"] if a is None else a for a in accs]
        cells = [LABELS[run["tool"]], *[f"{a:.4f}" for a in accs],
                 f"{evaluations[-1]['test_accuracy']:.4f}", f"{run['train_seconds']:.0f}", str(run["generations"]),
                 f"{run['train_seconds'] / run['generations'] * 1e3:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


LABELS = {"fastes": "fastes: ES, `--preset binary`", "ste": "backprop, straight-through estimator (PyTorch)"}


def render(result: dict) -> str:
    notes = "\n".join(f"- {LABELS[r['tool']]}: {r['implementation']}; {r['threads']} threads" for r in result["runs"])
    return (f"# Binary neurons: ES against backpropagation with the straight-through estimator\n\n"
            f"The binary preset's network ({result['network']}), {result['seconds']:g} s of training each, one after "
            f"the other on {result['machine']}. Test accuracy on MNIST's 10,000 test images at each time "
            f"(the first evaluation at or after it; a run that completed its schedule earlier, its final model); a "
            f"step is an ES generation or an Adam step.\n\n"
            f"{table(result)}\n{notes}\n\nRegenerate: `bench/binary.py` (see its docstring).\n")


def plot(result: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for run in result["runs"]:
        rows = run["evaluations"]
        ax.plot([r["seconds"] for r in rows], [r["test_accuracy"] for r in rows], marker=".", label=LABELS[run["tool"]],
                linestyle="--" if run["tool"] == "ste" else "-")
    ax.set(xscale="log", xlabel="training seconds (log scale)", ylabel="test accuracy",
           title=f"binary neurons ({result['network']}) on MNIST")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=600.0, help="training budget of each run (default 600)")
    p.add_argument("--eval-every", type=float, default=30.0, help="seconds between STE snapshots after 16 s")
    p.add_argument("--out", type=Path, default=Path("results"), help="folder of the results")
    p.add_argument("--only", choices=tuple(LABELS), help="rerun this side only, keeping the other's curve")
    p.add_argument("--table", action="store_true", help="only rewrite the table and figure from the saved curves")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.eval_every <= 0:
        p.error("--seconds and --eval-every must be positive")
    args.out.mkdir(parents=True, exist_ok=True)
    config = tools.config_for(CONFIG)
    saved = args.out / "binary-vs-ste.json"
    kept = {}
    if args.only:
        earlier = json.loads(saved.read_text()) if saved.is_file() else {}
        if earlier.get("seconds") != args.seconds:
            p.error(f"--only keeps the other side from {saved}, which needs a run of the same --seconds")
        kept = {run["tool"]: run for run in earlier["runs"]}
    if args.table:
        result = json.loads(saved.read_text())
        write(result, args.out)
        return 0
    runs = []
    for tool in LABELS:
        if args.only not in (None, tool):
            runs.append(kept[tool])
        elif tool == "fastes":
            runs.append(fastes_run(args.out / CONFIG, args.seconds))
        else:
            runs.append(peers.work(tool, CONFIG, args.seconds, args.eval_every))
    result = {"seconds": args.seconds, "machine": f"{cpu_model()}, {peers.cores()} cores", "network": "-".join(map(str, (784, *config.hidden, 10))) +
              f", {config.activation} neurons", "runs": runs}
    write(result, args.out)
    return 0


def write(result: dict, out: Path) -> None:
    (out / "binary-vs-ste.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "binary-vs-ste.md").write_text(render(result))
    plot(result, out / "binary-vs-ste.png")
    print(table(result))


if __name__ == "__main__":
    sys.exit(main())
