"""The ``fastes`` command line: train, evaluate, predict, bench, plot, compare.

Any :class:`fastes.errors.FastesError` (and an unwritable file) becomes one line on stderr
and exit status 2, with no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .. import __version__
from ..config import (CHOICES, OPTIONS, PRESETS, RESUME_OPTIONS, Option, absolute_data_dir, check_field, check_used,
                      preset, resolve)
from ..errors import ConfigError, FastesError, Interrupted, one_line


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2, as for every other bad input
        sys.stderr.write(f"fastes: error: {one_line(message)} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _value_parser(opt: Option):
    """The type of an option's flag: its text read as the option's kind and checked as
    :func:`fastes.config.check_field` checks every value, so that a bad value is refused
    while the command line is read, naming its flag."""
    read = {"int": _int, "float": _float}.get(opt.kind, str)

    def parse(text: str):
        try:
            return check_field(opt.name, read(text))
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _shown(value) -> str:
    """An option's value as the help and the docs show it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or '""'
    return str(value)


def _add_training_options(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`fastes.config.Config` field, from its declaration."""
    g = p.add_argument_group("training options (override the preset and --config)")
    default = preset("default")
    for name, opt in OPTIONS.items():
        value = getattr(default, name)
        help = opt.help + (f"; {opt.values}" if opt.kind in ("int", "float", "hidden") else "")
        help += "" if value is None else f" (default preset: {_shown(value)})"
        if opt.kind == "bool":
            g.add_argument(opt.flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help)
        elif opt.kind == "choice":
            g.add_argument(opt.flag, dest=name, choices=opt.choices, help=help)
        else:
            g.add_argument(opt.flag, dest=name, type=_value_parser(opt), metavar=opt.metavar, help=help)


#: Presets with a column in the docs' options table (``quick`` is a small digits run).
TABLE_PRESETS = ("seed", "default", "pgpe", "snes")


def options_markdown() -> str:
    """The table of training options in the docs, generated from their declarations
    (a test checks that the docs hold it)."""
    from ..estimator import ESClassifier

    estimator = ESClassifier()
    shown = [preset(name) for name in TABLE_PRESETS]
    rows = ["| option | values | " + " | ".join(f"`{name}`" for name in TABLE_PRESETS) + " | `ESClassifier` | what it does |",
            "| --- | --- | " + "--- | " * len(TABLE_PRESETS) + "--- | --- |"]
    for name, opt in OPTIONS.items():
        flag = f"`{opt.flag}`" if opt.kind in ("bool", "choice") else f"`{opt.flag} {opt.metavar}`"
        values = f"on or off (`--no-{opt.flag[2:]}`)" if opt.kind == "bool" else opt.values
        presets = [_shown(v) if v is not None else "" for v in (getattr(config, name) for config in shown)]
        param = opt.parameter
        exposed = f"`{param}={getattr(estimator, param)!r}`" if param else ""
        what = opt.help + ("; `--resume` may change it" if opt.resume else "")
        rows.append(f"| {flag} | {values} | " + " | ".join(presets) + f" | {exposed} | {what} |")
    return "\n".join(rows) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastes", description="Train neural networks with evolution strategies, fast, on CPU cores.")
    parser.add_argument("--version", action="version", version=f"fastes {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model and write results to a folder")
    t.add_argument("--preset", choices=list(PRESETS), help="starting configuration (default: digits with "
                   "--dataset digits, else default)")
    t.add_argument("--config", help="TOML file of options (flags override it)")
    t.add_argument("--out", help="results folder (default: runs/<timestamp>)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    t.add_argument("--overwrite", action="store_true", help="write into an existing results folder")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    _add_training_options(t)

    e = sub.add_parser("evaluate", help="loss, accuracy and per-class report of a model file")
    e.add_argument("model", help="a model.npz written by fastes train")
    e.add_argument("--dataset", choices=CHOICES["dataset"], default=None,
                   help="test split to score on (default: the model's own)")
    e.add_argument("--data-dir", help="read MNIST-format IDX files from this folder instead")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of the report")

    pr = sub.add_parser("predict", help="classify digit images (PNG/JPEG)")
    pr.add_argument("model", help="a model.npz written by fastes train")
    pr.add_argument("images", nargs="+", help="image files, any size (scaled to the model's input)")
    pr.add_argument("--invert", action="store_true", help="images are dark digits on a light background")
    pr.add_argument("--json", action="store_true", help="print one JSON object instead of a line per image")

    b = sub.add_parser("bench", help="time one generation: numba kernels against plain NumPy")
    b.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    b.add_argument("--configs", help="comma-separated config names (default: all)")
    b.add_argument("--repeats", type=_int, default=None, help="timed generations per backend and config")
    b.add_argument("--threads", type=_int, help="Numba threads (default: all cores)")
    b.add_argument("--profile", action="store_true", help="also print each config's numba time by phase")
    b.add_argument("--out", help="also write OUT.md and OUT.json (e.g. results/benchmark)")

    pl = sub.add_parser("plot", help="test accuracy against wall time for run folders")
    pl.add_argument("runs", nargs="+", help="run folders (each with metrics.csv), optionally LABEL=DIR")
    pl.add_argument("--out", required=True)

    c = sub.add_parser("compare", help="a table of run folders' test accuracy at 60 s and 600 s, and their plot")
    c.add_argument("runs", nargs="+", help="finished run folders, optionally LABEL=DIR")
    c.add_argument("--out", required=True, help="writes OUT.md and OUT.png (e.g. results/strategies)")
    parser.commands = {"train": t, "evaluate": e, "predict": pr, "bench": b, "plot": pl, "compare": c}
    return parser


def _check_environment() -> None:
    """Refuse a NUMBA_NUM_THREADS that Numba would reject with a traceback when the kernels load."""
    value = os.environ.get("NUMBA_NUM_THREADS")
    if value is not None and not (value.strip().isdigit() and int(value) >= 1):
        raise ConfigError(f"NUMBA_NUM_THREADS={value!r} must be a whole number >= 1 (the most threads the kernels may "
                          "use); set it so, or unset it and choose with --threads")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the command's parser, whose --help lists its options
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        _check_environment()
        return {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "bench": cmd_bench,
                "plot": cmd_plot, "compare": cmd_compare}[args.command](args)
    except Interrupted as exc:
        sys.stderr.write(f"fastes: {one_line(exc)}\n")
        return exc.exit_code
    except FastesError as exc:
        sys.stderr.write(f"fastes: error: {one_line(exc)}\n")
        return exc.exit_code
    except PermissionError as exc:
        sys.stderr.write(f"fastes: error: permission denied writing {exc.filename or 'a file'}; choose a writable folder\n")
        return 2
    except OSError as exc:  # a full disk, a folder removed while fastes writes into it ...
        sys.stderr.write(f"fastes: error: cannot write {exc.filename or 'a file'}: {exc.strerror or one_line(exc)}; "
                         "free disk space or choose another folder\n")
        return 2
    except MemoryError:
        sys.stderr.write("fastes: error: out of memory; use a smaller --population, --batch-size or --hidden\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("fastes: interrupted\n")
        return 130


def _given(args, key: str) -> str | None:
    """The flag that set training option ``key`` on the command line, or None."""
    value = getattr(args, key)
    if value is None:
        return None
    flag = OPTIONS[key].flag
    return flag.replace("--", "--no-", 1) if value is False else flag


def _check_resume_flags(args) -> None:
    """--resume continues a run as it was configured: refuse any flag that would change it."""
    out = args.resume
    if args.out is not None and Path(args.out).absolute() != Path(out).absolute():
        raise ConfigError(
            f"--resume {out} continues the run in {out}; --out {args.out} cannot send it elsewhere: "
            f"leave --out out, or copy {out} to {args.out} and resume that"
        )
    given = [f for f in ("--preset" if args.preset else None, "--config" if args.config else None,
                         "--overwrite" if args.overwrite else None) if f]
    given += [f for k in OPTIONS if k not in RESUME_OPTIONS and (f := _given(args, k))]
    if given:
        allowed = ", ".join(OPTIONS[k].flag for k in RESUME_OPTIONS)
        raise ConfigError(
            f"--resume continues the run in {out} as it was configured; {given[0]} would change it: leave it out, "
            f"or start a new run with --out (with --resume only {allowed} and --quiet may be given)"
        )


def cmd_train(args) -> int:
    from . import progress as progress_module
    from ..io.run_folder import default_out_dir, train_to_folder

    overrides = {k: getattr(args, k) for k in OPTIONS}
    for flag, value in (("--out", args.out), ("--resume", args.resume)):
        if value is not None and not value.strip():
            raise ConfigError(f"{flag} is empty; give a folder (leave --out out for runs/<timestamp>)")
    if args.resume:
        _check_resume_flags(args)
        out = Path(args.resume)
        changes = {k: overrides[k] for k in RESUME_OPTIONS}
        if changes["data_dir"] is not None:
            changes["data_dir"] = str(Path(changes["data_dir"]).absolute())
        config = None
    else:
        out = Path(args.out) if args.out is not None else default_out_dir()
        config = resolve(args.preset, args.config, **overrides)
        check_used(config, [k for k, v in overrides.items() if v is not None])
        config = absolute_data_dir(config)
        changes = None
    with progress_module.make_progress(quiet=args.quiet) as progress:
        summary, code = train_to_folder(config, out, resume=bool(args.resume), overwrite=args.overwrite,
                                        progress=progress, resume_changes=changes)
    final = summary["final"]
    if not args.quiet:
        print(
            f"{'stopped' if code else 'done'}: test accuracy {final['test_accuracy']:.4f}, "
            f"train accuracy {final['train_accuracy']:.4f}, {summary['generations']} generations in "
            f"{summary['wall_seconds']:.1f} s ({summary['generations_per_second']:.0f}/s); results in {out}"
        )
    if code:
        sys.stderr.write(f"fastes: stopped by signal; continue with: fastes train --resume {out}\n")
    return code


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_model

    result = evaluate_model(args.model, args.dataset, args.data_dir)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "report"}))
    else:
        print(f"dataset {result['dataset']} (test split): loss {result['test_loss']:.4f}, "
              f"accuracy {result['test_accuracy']:.4f}")
        if "hidden_values" in result:
            print(f"{result['activation']} neurons: the hidden layers take the values {result['hidden_values']} on the "
                  f"test split ({'binary' if result['binary'] else 'NOT binary'})")
        print(result["report"])
    return 0


def cmd_predict(args) -> int:
    from .evaluate import predict_images

    results = predict_images(args.model, args.images, invert=args.invert)
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            probs = " ".join(f"{p:.3f}" for p in r["probabilities"])
            print(f"{r['image']}: {r['label']}  [{probs}]")
    return 0


def cmd_bench(args) -> int:
    from .bench import CONFIGS, format_markdown, format_table, run_bench
    from ..io.paths import output_files
    from ..io.checkpoints import atomic_write_text

    names = None
    if args.configs is not None:
        names = [n.strip() for n in args.configs.split(",") if n.strip()]
        if not names:
            raise ConfigError(f"--configs {args.configs!r} names no config; give comma-separated names from: {', '.join(CONFIGS)}")
    if args.repeats is not None and args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None:
        check_field("threads", args.threads)  # the option's one declared range
    files = output_files(args.out, (".json", ".md"), "--out") if args.out is not None else None
    result = run_bench(names, repeats=args.repeats, threads=args.threads)
    if files is not None:
        atomic_write_text(files[".json"], json.dumps(result, indent=2) + "\n")
        atomic_write_text(files[".md"], format_markdown(result))
    print(json.dumps(result, indent=2) if args.json else format_table(result, profile=args.profile))
    return 0


def cmd_plot(args) -> int:
    from ..io.report import plot_runs

    plot_runs(args.runs, Path(args.out))
    print(f"wrote {args.out}")
    return 0


def cmd_compare(args) -> int:
    from .compare import compare_runs

    print(compare_runs(args.runs, args.out), end="")
    return 0


def entry() -> None:
    """The ``fastes`` command: :func:`main`, then a quick exit.

    A finished command has written and closed every file, and tearing the interpreter down
    (the kernels' thread pool, NumPy's and Numba's modules, large arrays) adds wall time and
    nothing else, so the process ends once its output is flushed. Ray's shutdown hooks need
    the ordinary exit: with the ray backend it is kept."""
    code = main()
    if "ray" in sys.modules:
        raise SystemExit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
