"""fastes side by side with the ES tools people would otherwise use (issue 13).

The same ES (network, population, batch, sigma, shaping, loss, optimizer, initial weights,
batch order, MNIST) in fastes' plain NumPy reference, fastes (Numba), evosax (JAX, CPU) and
EvoTorch (PyTorch, CPU), and for scale the same network trained by backpropagation
(scikit-learn's MLPClassifier), one after another on this machine, each in its own process
(see bench/peer_tools.py for what each tool runs)::

    python -m venv /work/peers-venv
    /work/peers-venv/bin/pip install torch==2.13.0        # a CPU build of PyTorch first
    /work/peers-venv/bin/pip install -e ".[peers]"
    /work/peers-venv/bin/python bench/peers.py --out results          # 300 s a run: ~55 min
    /work/peers-venv/bin/python bench/peers.py --seconds 5 --out /tmp/peers   # smoke test

It writes OUT/peers.json (every measurement), OUT/peers.md (the tables) and OUT/peers.png
(test accuracy against training time and against generations, every tool on one axis per
config). Not part of the tests: bench/test_peers.py checks only the pure parts below.

Measured per tool and config:

- training time runs from the first generation; the warm-up before it (JIT compiles,
  Numba's cache, first calls) is reported apart;
- a snapshot of the parameters is taken at the first generation boundary at or after
  1, 2, 4, 8, 16 s and every ``--eval-every`` s of training, and at the budget; the test
  accuracy at T s is that of the snapshot taken at the first boundary at or after T (the
  model when the generation in flight at T ends, at most one chunk of about 0.05 s, or one
  generation where a generation is longer, past T); every snapshot is scored after
  training by the same NumPy forward pass on the 10,000 test images;
- ms per generation: training time over generations run;
- peak memory: the peak resident set of the tool's process at the end of training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import peer_tools as tools

#: Times (s of training) whose test accuracy the tables report.
REPORT_TIMES = (60.0, 300.0)
#: The first snapshots, as ``fastes train`` evaluates early in a run.
EARLY_TIMES = (1.0, 2.0, 4.0, 8.0, 16.0)

LABELS = {
    "numpy": "fastes --backend numpy (NumPy reference)",
    "fastes": "fastes (Numba)",
    "evosax": "evosax (JAX)",
    "evotorch": "EvoTorch (PyTorch)",
    "sklearn": "backprop: scikit-learn MLPClassifier",
    "ste": "backprop through binary neurons: PyTorch, straight-through estimator",
}


def cores() -> int:
    """Cores this process may run on: every tool's thread count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def eval_schedule(seconds: float, every: float) -> list[float]:
    """Training times at which snapshots are due: :data:`EARLY_TIMES`, every ``every`` s,
    :data:`REPORT_TIMES`, and ``seconds`` (the end), those up to ``seconds``, ascending."""
    times = set(EARLY_TIMES) | set(REPORT_TIMES) | {seconds}
    times |= {every * i for i in range(1, int(seconds // every) + 1)}
    return sorted(t for t in times if t <= seconds)


def accuracy_at(evaluations: list[dict], t: float) -> float | None:
    """Test accuracy at ``t`` s of training: that of the first snapshot taken at or after
    ``t`` (``evaluations`` ascending in ``seconds``); None when the run ended before ``t``
    was due, i.e. it had a shorter budget."""
    for row in evaluations:
        if row["seconds"] >= t:
            return row["test_accuracy"]
    return None


def report_times(seconds: float) -> list[float]:
    """The times a table reports: :data:`REPORT_TIMES` within the budget, and the budget."""
    times = [t for t in REPORT_TIMES if t <= seconds]
    return times if seconds in times else times + [seconds]


# ---------------------------------------------------------------------------- one tool


def work(tool: str, config_name: str, seconds: float, every: float) -> dict:
    """Train ``tool`` on ``config_name`` for ``seconds`` in this process; its measurements."""
    from fastes.io.data import load_dataset
    from fastes.memory import peak_rss_mb

    threads = cores()
    config = tools.config_for(config_name)
    dataset = load_dataset("mnist")
    runner = tools.make_runner(tool, config, dataset, threads)
    probe = tools.stream_for(tool, config, len(dataset.y_train))  # warm-up batches, apart from the run's
    warm_up = runner.warm_up(probe.take(1))
    probes = [runner.warm_up(probe.take(1)) for _ in range(3)]  # a generation's seconds, compiled
    k = tools.chunk_size(min(probes))
    warm_up += sum(probes) + (runner.warm_up(probe.take(k)) if k > 1 else 0.0)  # JAX compiles each chunk shape
    stream = tools.stream_for(tool, config, len(dataset.y_train))
    generations, evaluations, thetas = tools.train(runner, stream, eval_schedule(seconds, every), k)
    peak = peak_rss_mb()
    for row, theta in zip(evaluations, thetas):
        row["test_accuracy"] = tools.score_test(theta, config, dataset)
    trained = evaluations[-1]["seconds"]
    return {
        "tool": tool,
        "config": config_name,
        "implementation": runner.implementation,
        "threads": threads,
        "warm_up_seconds": round(warm_up, 3),
        "chunk": k,
        "generations": generations,
        "train_seconds": trained,
        "ms_per_generation": round(trained / generations * 1e3, 4),
        "peak_rss_mb": peak,
        "evaluations": evaluations,
    }


# ---------------------------------------------------------------------------- all tools


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a tool's process: every thread pool sized to the cores."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = str(threads)
    return env


def measure(configs: list[str], tool_names: list[str], seconds: float, every: float) -> dict:
    """Run every tool on every config, one process each, one after another."""
    threads = cores()
    runs = []
    for name in configs:
        for tool in tool_names:
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {LABELS[tool]} for {seconds:g} s", flush=True)
            load = os.getloadavg()[0]  # other work on the cores slows the parallel tools most
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "run.json"
                command = [sys.executable, __file__, "--worker", tool, "--configs", name, "--seconds", str(seconds),
                           "--eval-every", str(every), "--json", str(out)]
                try:
                    proc = subprocess.run(command, env=thread_env(threads), capture_output=True, text=True,
                                          timeout=2 * seconds + 600)
                except subprocess.TimeoutExpired:
                    run = {"tool": tool, "config": name, "error": f"no result after {2 * seconds + 600:g} s"}
                else:
                    if proc.returncode == 0:
                        run = json.loads(out.read_text())
                    else:
                        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"]
                        run = {"tool": tool, "config": name, "error": lines[-1]}
            run["load_before"] = round(load, 2)
            print("    " + summary_line(run, seconds), flush=True)
            runs.append(run)
    from fastes.cli.bench import cpu_model

    return {
        "cpu": cpu_model(),
        "cores": threads,
        "python": platform.python_version(),
        "date": date.today().isoformat(),
        "seconds": seconds,
        "eval_every": every,
        "configs": {name: tools.config_for(name).to_dict() for name in configs},
        "runs": runs,
    }


def summary_line(run: dict, seconds: float) -> str:
    if "error" in run:
        return f"failed: {run['error']}"
    accs = ", ".join(f"{_fmt_acc(accuracy_at(run['evaluations'], t))} at {t:g} s" for t in report_times(seconds))
    return (f"{run['ms_per_generation']:.3f} ms/generation, {run['generations']} generations, test accuracy {accs}, "
            f"warm-up {run['warm_up_seconds']:.1f} s, peak RSS {run['peak_rss_mb']} MB")


# ---------------------------------------------------------------------------- reports


def _fmt_acc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _fmt_ratio(value: float) -> str:
    return f"{value:.1f}x" if value >= 1 else f"{value:.2f}x"


def render_markdown(result: dict) -> str:
    """results/peers.md: one table per config, then how it was measured."""
    seconds = result["seconds"]
    times = report_times(seconds)
    lines = [
        "# fastes side by side with other ES tools",
        "",
        f"Machine: {result['cpu']}, {result['cores']} cores; {result['date']}, Python {result['python']}. "
        "Every tool ran "
        f"on this machine one after another, each in its own process with {result['cores']} threads, "
        f"for {seconds:g} s of training.",
        "",
        load_note(result["runs"], result["cores"]),
        "",
        "Regenerate (see bench/peers.py for the environment; about "
        f"{estimate_minutes(len(result['configs']), len(tools.TOOLS), 300.0):.0f} minutes at the default 300 s):",
        "",
        "```bash",
        f"python bench/peers.py --seconds {seconds:g} --out results",
        "```",
    ]
    for name, config in result["configs"].items():
        runs = [r for r in result["runs"] if r["config"] == name]
        lines += ["", f"## {name} config", "", describe(config), ""]
        head = ["tool", "ms / generation", "vs fastes", "generations"]
        head += [f"test accuracy at {t:g} s" for t in times] + ["warm-up s", "peak RSS MB"]
        lines += ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
        fastes_ms = next((r["ms_per_generation"] for r in runs if r["tool"] == "fastes" and "error" not in r), None)
        for run in runs:
            lines.append(table_row(run, times, fastes_ms))
    lines += ["", "![test accuracy against training time and generations](peers.png)", "", "## How it was measured", ""]
    lines += [
        "- Each tool trains from the same initial parameters (fastes' initialisation for the seed) on the same "
        "batches in the same order (fastes' epoch orders laid end to end, full batches), with the learning rate "
        "converted to each tool's gradient scale so that every tool takes the same step (bench/peer_tools.py).",
        "- Training time runs from the first generation; the warm-up column (JIT compiles, Numba's cache, first "
        "calls) came before it.",
        "- Test accuracy at T s: the parameters are copied at the first generation boundary at or after 1, 2, 4, 8, "
        f"16 s, every {result['eval_every']:g} s and at the end (a tool runs chunks of generations of about 0.05 s "
        "between looks at the clock); the accuracy at T is that of the first copy taken at or after T, scored after "
        "training by one NumPy forward pass (fastes.backends.reference) on the 10,000 test images.",
        "- ms / generation: training time over generations; vs fastes: that over fastes' figure. For the "
        "backpropagation row a generation is one Adam step on a batch of 256.",
        "- Peak RSS: the peak resident memory of the tool's process at the end of training (interpreter, "
        "libraries, data and training).",
        "",
        "What each tool ran:",
        "",
    ]
    seen = set()
    for run in result["runs"]:
        if "implementation" in run and (run["tool"], run["config"]) not in seen:
            seen.add((run["tool"], run["config"]))
            lines.append(f"- {LABELS[run['tool']]}, {run['config']}: {run['implementation']}.")
    return "\n".join(lines) + "\n"


def load_note(runs: list[dict], n_cores: int) -> str:
    """The machine's 1-minute load average before the runs, and a warning where other work
    was running: the parallel tools lose most to it (timings are then not comparable)."""
    loads = [r["load_before"] for r in runs if "load_before" in r]
    if not loads:
        return "Load average before the runs: not recorded."
    note = f"1-minute load average before each run: {min(loads):.2f} to {max(loads):.2f}"
    if max(loads) > 0.25 * n_cores:
        return note + " (**the machine was not idle: these timings are not a fair comparison**)."
    return note + " (an idle machine)."


def describe(config: dict) -> str:
    """A config in one sentence."""
    net = "-".join(str(d) for d in (784, *config["hidden"], 10))
    return (f"MLP {net} (ReLU, {config['init']} init), population {config['population']}"
            f"{' (antithetic pairs)' if config['antithetic'] else ''}, sigma {config['sigma']:g}, "
            f"{config['shaping']} shaping, {config['loss']} loss, {config['optimizer']} lr {config['lr']:g}, "
            f"batch {config['batch_size']} {'shuffled' if config['shuffle'] else 'in order'}, full-rank noise.")


def table_row(run: dict, times: list[float], fastes_ms: float | None) -> str:
    label = LABELS[run["tool"]]
    if "error" in run:
        return f"| {label} | failed: {run['error']} |" + " |" * (len(times) + 4)
    # a backpropagation step is no generation: no ratio for it
    ratio = _fmt_ratio(run["ms_per_generation"] / fastes_ms) if fastes_ms and run["tool"] not in tools.BACKPROP_TOOLS else "n/a"
    accs = [_fmt_acc(accuracy_at(run["evaluations"], t)) for t in times]
    cells = [label, f"{run['ms_per_generation']:.3f}", ratio, str(run["generations"]), *accs,
             f"{run['warm_up_seconds']:.1f}", f"{run['peak_rss_mb']:.0f}"]
    return "| " + " | ".join(cells) + " |"


def estimate_minutes(n_configs: int, n_tools: int, seconds: float) -> float:
    """Wall minutes of a full measurement: each run's budget plus about 20 s of start,
    warm-up and scoring."""
    return n_configs * n_tools * (seconds + 20.0) / 60.0


def plot(result: dict, path: Path) -> None:
    """Test accuracy against training seconds and against generations (log scales), one
    row of axes per config, every tool on each axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(result["configs"])
    fig = Figure(figsize=(12, 4.2 * len(names)))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.93, bottom=0.08, hspace=0.35, wspace=0.2)
    for i, name in enumerate(names):
        by_time, by_gen = fig.add_subplot(len(names), 2, 2 * i + 1), fig.add_subplot(len(names), 2, 2 * i + 2)
        for run in (r for r in result["runs"] if r["config"] == name and "error" not in r):
            rows = run["evaluations"]
            style = dict(marker=".", label=LABELS[run["tool"]], linestyle="--" if run["tool"] in tools.BACKPROP_TOOLS else "-")
            by_time.plot([r["seconds"] for r in rows], [r["test_accuracy"] for r in rows], **style)
            by_gen.plot([r["generation"] for r in rows], [r["test_accuracy"] for r in rows], **style)
        by_time.set(xscale="log", xlabel="training seconds (log scale)", ylabel="test accuracy",
                    title=f"{name} config: against training time")
        seconds = result["seconds"]
        ticks = sorted({t for t in (1, 2, 4, 8, 16, 30, 60, 120, 300, 600) if t <= seconds} | {seconds})
        by_time.set_xticks(ticks, [f"{t:g}" for t in ticks])
        by_time.set_xticks([], minor=True)
        by_gen.set(xscale="log", xlabel="generations (backprop: Adam steps; log scale)",
                   title=f"{name} config: against generations")
        for ax in (by_time, by_gen):
            ax.grid(alpha=0.3, which="both")
        by_time.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def write_results(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "peers.md").write_text(render_markdown(result))
    plot(result, out / "peers.png")


# ---------------------------------------------------------------------------- command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=300.0, help="training budget of each run (default 300)")
    p.add_argument("--eval-every", type=float, default=20.0, help="seconds between snapshots after 16 s (default 20)")
    p.add_argument("--configs", default=",".join(tools.ES_CONFIGS), help=f"comma-separated, of {', '.join(tools.CONFIGS)} "
                   f"(default {','.join(tools.ES_CONFIGS)})")
    p.add_argument("--tools", default=",".join(tools.ES_TOOLS), help=f"comma-separated, of {', '.join(tools.TOOLS)} "
                   f"(default {','.join(tools.ES_TOOLS)})")
    p.add_argument("--out", type=Path, default=Path("results"), help="folder of peers.json, .md and .png")
    p.add_argument("--worker", choices=tools.TOOLS, help=argparse.SUPPRESS)  # one run, in this process
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)  # where the worker writes it
    args = p.parse_args(argv)
    args.configs = [c for c in args.configs.split(",") if c]
    args.tools = [t for t in args.tools.split(",") if t]
    for given, known, what in ((args.configs, tools.CONFIGS, "config"), (args.tools, tools.TOOLS, "tool")):
        unknown = [x for x in given if x not in known]
        if unknown or not given:
            p.error(f"unknown {what}(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}")
    if args.seconds <= 0 or args.eval_every <= 0:
        p.error("--seconds and --eval-every must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        result = work(args.worker, args.configs[0], args.seconds, args.eval_every)
        args.json.write_text(json.dumps(result))
        return 0
    minutes = estimate_minutes(len(args.configs), len(args.tools), args.seconds)
    print(f"{len(args.configs) * len(args.tools)} runs of {args.seconds:g} s: about {minutes:.0f} minutes", flush=True)
    result = measure(args.configs, args.tools, args.seconds, args.eval_every)
    write_results(result, args.out)
    print(f"wrote {args.out / 'peers.md'}, peers.json and peers.png")
    return 0 if all("error" not in r for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
