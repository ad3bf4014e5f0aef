"""Every bad input is one line on stderr and exit status 2, with no traceback, no warning
and no change to anything already written (issue 14). The cases are the issue's examples,
grouped by class, run through the real ``main()``."""

import gzip
import io
import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


SEED = ["--preset", "seed", "--quiet"]
QUICK = ["--preset", "quick", "--quiet"]


def assert_refused(run_cli, snapshot, args, match: str, *roots: Path) -> str:
    before = [snapshot(r) for r in roots]
    code, _, err, shown = run_cli(args)
    assert code == 2, err
    assert err.startswith("fastes: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and not shown, (err, [str(w.message) for w in shown])
    assert re.search(match, err), err
    assert [snapshot(r) for r in roots] == before, "a refused command changed files"
    return err


# --------------------------------------------------------------------------- the inputs


def _png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (its data is a stub)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _edit_checkpoint(src: Path, dst: Path, edit) -> None:
    shutil.copytree(src, dst)
    with np.load(src / "checkpoint.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["meta"]))
    edit(meta, arrays)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(dst / "checkpoint.npz", **arrays)


@pytest.fixture(scope="module")
def world(tmp_path_factory, idx_folder, run_cli):
    """A folder of everything the cases read: data folders, config files, a finished run,
    model files, images, metrics files. Every case checks it is unchanged afterwards."""
    w = tmp_path_factory.mktemp("world")
    data = idx_folder(w / "data")
    idx_folder(w / "data_zero", n_train=0)
    idx_folder(w / "data_255", train_labels=[255] + [i % 3 for i in range(1, 60)])
    idx_folder(w / "data_float", label_code=0x0D)
    idx_folder(w / "data_789", train_labels=[7 + i % 3 for i in range(60)])
    shutil.copytree(data, w / "data_folder_in_way")  # a folder where an IDX file should be
    (w / "data_folder_in_way" / "train-labels-idx1-ubyte").unlink()
    (w / "data_folder_in_way" / "train-labels-idx1-ubyte").mkdir()
    shutil.copytree(data, w / "data_loop")  # a symlink loop where an IDX file should be
    (w / "data_loop" / "train-labels-idx1-ubyte").unlink()
    (w / "data_loop" / "train-labels-idx1-ubyte").symlink_to("train-labels-idx1-ubyte")
    shutil.copytree(data, w / "data_bomb")  # a gzip that inflates far past what its header declares
    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb") as fh:
        fh.write((data / "train-labels-idx1-ubyte").read_bytes())
        for _ in range(64):
            fh.write(bytes(1 << 24))
    (w / "data_bomb" / "train-labels-idx1-ubyte").unlink()
    (w / "data_bomb" / "train-labels-idx1-ubyte.gz").write_bytes(bomb.getvalue())
    idx_folder(w / "data_one_class", train_labels=[0] * 60)
    shutil.copytree(data, w / "data_blank")
    blank = (data / "train-images-idx3-ubyte").read_bytes()
    (w / "data_blank" / "train-images-idx3-ubyte").write_bytes(blank[:16] + bytes(len(blank) - 16))
    shutil.copytree(data, w / "data_gz")
    raw = gzip.compress((data / "train-images-idx3-ubyte").read_bytes())
    (w / "data_gz" / "train-images-idx3-ubyte").unlink()
    (w / "data_gz" / "train-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2] + b"\x00" * 64)

    cfg = w / "cfg"
    cfg.mkdir()
    (cfg / "random.toml").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)))
    for name, text in {
        "data_dir_int": "data_dir = 5", "preset_list": 'preset = ["seed"]', "antithetic_str": 'antithetic = "false"',
        "shuffle_str": 'shuffle = "no"', "antithetic_int": "antithetic = 1", "population_list": "population = [8]",
        "seed_big": "seed = 18446744073709551616", "hidden_float": "hidden = [16.5]", "hidden_huge": "hidden = [9223372036854775807]", "sigma_tiny": "sigma = 1e-50",
    }.items():
        (cfg / f"{name}.toml").write_text(f'preset = "seed"\n{text}\n' if "preset" not in text else text + "\n")

    run = w / "run3"  # a finished run of 3 epochs (one batch each)
    assert run_cli(["train", *SEED, "--data-dir", data, "--epochs", 3, "--out", run])[0] == 0
    other = w / "other"
    assert run_cli(["train", *SEED, "--data-dir", data, "--epochs", 1, "--seed", 7, "--out", other])[0] == 0
    shutil.copytree(run, w / "foreign")
    shutil.copy(other / "checkpoint.npz", w / "foreign" / "checkpoint.npz")
    _edit_checkpoint(run, w / "ck_epoch", lambda m, a: m.__setitem__("epoch", -1))
    _edit_checkpoint(run, w / "ck_history", lambda m, a: m.__setitem__("history", [{"epoch": "one"}]))
    _edit_checkpoint(run, w / "ck_optimizer", lambda m, a: a.__setitem__("opt_t", np.array([1, 2])))
    _edit_checkpoint(run, w / "ck_sigma_foreign", lambda m, a: a.__setitem__("sigma", np.ones_like(a["theta"])))
    pgpe = w / "run_pgpe"  # a strategy with a standard deviation per parameter in its checkpoint
    assert run_cli(["train", *SEED, "--data-dir", data, "--epochs", 3, "--strategy", "pgpe", "--out", pgpe])[0] == 0
    _edit_checkpoint(pgpe, w / "ck_sigma_negative", lambda m, a: a.__setitem__("sigma", -a["sigma"]))
    _edit_checkpoint(pgpe, w / "ck_sigma_missing", lambda m, a: a.pop("sigma"))
    (w / "no_summary").mkdir()
    shutil.copy(run / "metrics.csv", w / "no_summary" / "metrics.csv")
    shutil.copytree(run, w / "ck_truncated")
    blob = (run / "checkpoint.npz").read_bytes()
    (w / "ck_truncated" / "checkpoint.npz").write_bytes(blob[: len(blob) // 2])
    (w / "no_checkpoint").mkdir()
    (w / "no_checkpoint" / "config.toml").write_text("epochs = 1\n")

    with np.load(run / "model.npz") as npz:
        model = {k: npz[k] for k in npz.files}
    for name, config in {"list": "[1, 2]", "hinge": json.dumps({"loss": "hinge"}), "str": '"mnist"'}.items():
        np.savez(w / f"model_{name}.npz", **{**model, "config": np.array(config)})
    np.savez(w / "model_object.npz", **{**model, "W0": np.array([None, 1], dtype=object)}, allow_pickle=True)
    (w / "model_text.npz").write_text("W0 = [[1, 2], [3, 4]]\n")
    blob = (run / "model.npz").read_bytes()
    (w / "model_truncated.npz").write_bytes(blob[: len(blob) // 2])
    np.savez(w / "model_zero_width.npz", **{**model, "W0": model["W0"][:, :0], "b0": model["b0"][:0],
                                            "W1": model["W1"][:0]})
    np.savez(w / "model_no_middle.npz", **{k: v for k, v in model.items() if k not in ("W1", "b1")})
    np.savez(w / "model_huge64.npz", **{**model, "W0": model["W0"].astype(np.float64) * 1e300})
    np.savez(w / "model_overflow.npz", **{**model, "W0": model["W0"] * np.float32(1e30),
                                          "W1": model["W1"] * np.float32(1e30)})

    (w / "bomb.png").write_bytes(_png(30000, 30000))
    ink = (np.random.default_rng(1).random((28, 28)) * 255).astype(np.uint8)
    Image.fromarray(ink).save(w / "light_on_black.png")
    (w / "truncated.png").write_bytes((w / "light_on_black.png").read_bytes()[:200])
    dark = np.zeros((28, 28, 4), np.uint8)
    dark[..., 3] = ink  # black ink, its strength in the alpha channel, on a transparent background
    Image.fromarray(dark, "RGBA").save(w / "dark_on_transparent.png")
    (w / "images").mkdir()
    (w / "out.png").mkdir()

    for name, text in {"no_columns": "a,b\n1,2\n", "not_numbers": (run / "metrics.csv").read_text().replace("0", "x"),
                       "no_rows": "epoch,generation,wall_seconds,train_loss,train_accuracy,test_loss,test_accuracy\n"}.items():
        (w / "plots" / name).mkdir(parents=True)
        (w / "plots" / name / "metrics.csv").write_text(text)
    (w / "a_file").write_text("not a folder\n")
    (w / "notes").mkdir()  # a user's own folder: nothing fastes wrote, some names it would write
    (w / "notes" / "notes.txt").write_text("mine\n")
    (w / "mine").mkdir()
    for name in ("config.toml", "metrics.csv", "model.npz"):
        (w / "mine" / name).write_text("the user's own\n")
    shutil.copytree(run, w / "run_notes")  # a run the user added a file to
    (w / "run_notes" / "notes.txt").write_text("mine\n")
    shutil.copytree(run, w / "run_dir_in_way")  # a run where a folder has a result file's name
    (w / "run_dir_in_way" / "metrics.png").unlink()
    (w / "run_dir_in_way" / "metrics.png").mkdir()
    return w


@pytest.fixture
def small_machine(monkeypatch):
    """4 GiB available, whatever this machine has: the size checks must not depend on it."""
    monkeypatch.setattr("fastes.memory.available_bytes", lambda: 4 << 30)


# --------------------------------------------------------------------------- the cases

NEW = "{w}/new_run"
CASES = {
    # TOML values: types, out-of-range integers, lists where scalars are expected
    "config-random-bytes": (["train", "--config", "{w}/cfg/random.toml", "--out", NEW], "not UTF-8"),
    "config-data_dir-int": (["train", "--config", "{w}/cfg/data_dir_int.toml", "--out", NEW], "data_dir must be"),
    "config-preset-list": (["train", "--config", "{w}/cfg/preset_list.toml", "--out", NEW], r"unknown preset \['seed'\]"),
    "config-bool-string": (["train", "--config", "{w}/cfg/antithetic_str.toml", "--out", NEW], "antithetic must be true or false"),
    "config-bool-no": (["train", "--config", "{w}/cfg/shuffle_str.toml", "--out", NEW], "shuffle must be true or false"),
    "config-bool-int": (["train", "--config", "{w}/cfg/antithetic_int.toml", "--out", NEW], "antithetic must be true or false .*got 1$"),
    "config-int-list": (["train", "--config", "{w}/cfg/population_list.toml", "--out", NEW], "population must be an integer"),
    "config-seed-2**64": (["train", "--config", "{w}/cfg/seed_big.toml", "--out", NEW], "seed must be at most"),
    "config-hidden-float": (["train", "--config", "{w}/cfg/hidden_float.toml", "--out", NEW], "hidden sizes"),
    "config-sigma-underflow": (["train", "--config", "{w}/cfg/sigma_tiny.toml", "--out", NEW], "float32"),
    "config-folder": (["train", "--config", "{w}/cfg", "--out", NEW], "is a folder"),
    "config-device": (["train", "--config", "/dev/zero", "--out", NEW], "not a regular file"),
    "flag-seed-2**64": (["train", *SEED, "--seed", "18446744073709551616", "--out", NEW], "seed must be at most"),
    "flag-sigma-underflow": (["train", *SEED, "--sigma", "1e-50", "--out", NEW], "sigma 1e-50 .*float32"),
    "flag-lr-underflow": (["train", *SEED, "--lr", "1e-300", "--out", NEW], "lr .*float32"),
    "fit-budget-without-budget": (["train", *SEED, "--fit-budget", "--out", NEW], "max_seconds is not set"),
    "sigma-schedule-underflow": (["train", *SEED, "--sigma-schedule", "exponential", "--sigma-decay", "1e-20",
                                  "--epochs", "9", "--out", NEW], "falls below float32"),
    "strategy-lowrank": (["train", *SEED, "--strategy", "pgpe", "--perturbation", "lowrank", "--out", NEW],
                         "--strategy pgpe learns a standard deviation per parameter, which needs full-rank noise"),
    "strategy-sigma-schedule": (["train", *SEED, "--strategy", "snes", "--sigma-schedule", "exponential", "--out", NEW],
                                "--strategy snes learns its standard deviations"),
    "flag-sigma-max-change": (["train", *SEED, "--sigma-max-change", "1", "--out", NEW], r"must be in \[0, 1\)"),
    "activation-without-hidden": (["train", *QUICK, "--activation", "sign", "--hidden", "", "--out", NEW],
                                  "has none; give --hidden sizes, or --activation relu"),
    "activation-unknown": (["train", *QUICK, "--activation", "binary", "--out", NEW], "invalid choice: 'binary'"),
    "loss-unknown": (["train", *QUICK, "--loss", "hinge", "--out", NEW], "invalid choice: 'hinge'"),
    "pca-more-than-features": (["train", *QUICK, "--pca", "65", "--out", NEW],
                               "--pca 65 is not a number of principal directions of data with 64 features; "
                               "give --pca between 1 and 64"),
    "pca-negative": (["train", *QUICK, "--pca", "-1", "--out", NEW], "--pca"),
    # sizes that cannot fit (4 GiB available): checked before allocating, saying what fits
    "size-hidden": (["train", *SEED, "--data-dir", "{w}/data", "--hidden", "100000,100000", "--out", NEW],
                    r"needs about .* it fits with at most .*--hidden \d+,\d+"),
    "size-population": (["train", *SEED, "--data-dir", "{w}/data", "--population", "10000000", "--out", NEW],
                        r"row losses .* it fits with at most --population \d+"),
    "size-noise-table": (["train", *SEED, "--data-dir", "{w}/data", "--hidden", "43000", "--out", NEW],
                         "noise table holds .* low-rank perturbations fit: use --perturbation lowrank"),
    # data files
    "data-zero-images": (["train", *SEED, "--data-dir", "{w}/data_zero", "--out", NEW], "holds no pixels"),
    "data-label-255": (["train", *SEED, "--data-dir", "{w}/data_255", "--out", NEW], "label 255 lies outside"),
    "data-float-labels": (["train", *SEED, "--data-dir", "{w}/data_float", "--out", NEW], "labels must be integers"),
    "data-labels-7-8-9": (["train", *SEED, "--data-dir", "{w}/data_789", "--out", NEW], "labels start at 7.*renumber"),
    "data-one-class": (["train", *SEED, "--data-dir", "{w}/data_one_class", "--out", NEW], "at least two classes"),
    "data-blank-images": (["train", *SEED, "--data-dir", "{w}/data_blank", "--out", NEW], "every training image is blank"),
    "data-damaged-gzip": (["train", *SEED, "--data-dir", "{w}/data_gz", "--out", NEW], "not a valid gzip"),
    "data-dir-is-a-file": (["train", *SEED, "--data-dir", "{w}/a_file", "--out", NEW], "not a folder"),
    "data-folder-in-the-way": (["train", *SEED, "--data-dir", "{w}/data_folder_in_way", "--out", NEW],
                               "train-labels-idx1-ubyte is a folder, not a file"),
    "data-symlink-loop": (["train", *SEED, "--data-dir", "{w}/data_loop", "--out", NEW],
                          "cannot read dataset file .*train-labels-idx1-ubyte"),
    "data-gzip-bomb": (["train", *SEED, "--data-dir", "{w}/data_bomb", "--out", NEW], "holds more than the .* bytes its header"),
    # model files
    "model-config-list": (["evaluate", "{w}/model_list.npz"], "config entry is JSON list"),
    "model-config-unknown-loss": (["evaluate", "{w}/model_hinge.npz"], "unknown loss 'hinge'"),
    "model-config-string": (["evaluate", "{w}/model_str.npz"], "config entry is JSON str"),
    "model-object-array": (["evaluate", "{w}/model_object.npz"], "Python objects"),
    "model-text-file": (["evaluate", "{w}/model_text.npz"], r"^(?!.*pickled).*not an \.npz file"),
    "model-truncated": (["evaluate", "{w}/model_truncated.npz"], "corrupt or truncated|not an .npz"),
    "model-zero-width": (["evaluate", "{w}/model_zero_width.npz"], "a layer has no units"),
    "model-zero-width-predict": (["predict", "{w}/model_zero_width.npz", "{w}/light_on_black.png"], "a layer has no units"),
    "model-missing-layer": (["evaluate", "{w}/model_no_middle.npz"], "has W2 but no W1/b1"),
    "model-huge-float64": (["evaluate", "{w}/model_huge64.npz"], "beyond float32's range"),
    "model-overflow-evaluate": (["evaluate", "{w}/model_overflow.npz", "--json"], "NaN or infinite outputs"),
    "model-overflow-predict": (["predict", "{w}/model_overflow.npz", "{w}/light_on_black.png", "--json"],
                               "NaN or infinite outputs"),
    # images
    "image-bomb": (["predict", "{w}/run3/model.npz", "{w}/bomb.png"], "900,000,000 pixels"),
    "image-truncated": (["predict", "{w}/run3/model.npz", "{w}/truncated.png"], "cannot read image"),
    "image-folder": (["predict", "{w}/run3/model.npz", "{w}/images"], "is a folder"),
    "image-transparent-dark": (["predict", "{w}/run3/model.npz", "{w}/dark_on_transparent.png"], "flat colour.*--invert"),
    # plot
    "plot-no-columns": (["plot", "{w}/plots/no_columns", "--out", "{w}/p.png"], "lacks the column"),
    "plot-not-numbers": (["plot", "{w}/plots/not_numbers", "--out", "{w}/p.png"], "line 2 is not a row of numbers"),
    "plot-empty": (["plot", "{w}/plots/no_rows", "--out", "{w}/p.png"], "no timed test accuracy"),
    "plot-missing-folder": (["plot", "{w}/run3", "--out", "{w}/nowhere/p.png"], "does not exist"),
    "plot-extension": (["plot", "{w}/run3", "--out", "{w}/p.xyz"], "cannot write a '.xyz' file"),
    "plot-out-folder": (["plot", "{w}/run3", "--out", "{w}/out.png"], "is a folder"),
    # compare
    "compare-no-summary": (["compare", "{w}/run3", "{w}/no_summary", "--out", "{w}/cmp"], "summary.json does not exist"),
    "compare-out-missing-folder": (["compare", "{w}/run3", "--out", "{w}/nowhere/cmp"], "does not exist"),
    # run folders
    "out-is-a-file": (["train", *SEED, "--data-dir", "{w}/data", "--out", "{w}/a_file"], "is a file, not a folder"),
    "out-dev-null": (["train", *SEED, "--data-dir", "{w}/data", "--out", "/dev/null"], "is a file, not a folder"),
    "out-holds-a-run": (["train", *SEED, "--data-dir", "{w}/data", "--out", "{w}/run3"], "already holds a run"),
    "out-holds-notes": (["train", *SEED, "--data-dir", "{w}/data", "--out", "{w}/notes"], "holds files but no fastes run .*notes.txt"),
    "overwrite-notes": (["train", *SEED, "--data-dir", "{w}/data", "--overwrite", "--out", "{w}/notes"],
                        "no fastes run .*--overwrite replaces only a fastes run"),
    "overwrite-users-files": (["train", *SEED, "--data-dir", "{w}/data", "--overwrite", "--out", "{w}/mine"],
                              "holds files but no fastes run .*config.toml"),
    "overwrite-run-with-notes": (["train", *SEED, "--data-dir", "{w}/data", "--overwrite", "--out", "{w}/run_notes"],
                                 "fastes did not write \\(notes.txt\\)"),
    "overwrite-folder-in-the-way": (["train", *SEED, "--data-dir", "{w}/data", "--overwrite", "--out",
                                     "{w}/run_dir_in_way"], "fastes did not write \\(metrics.png\\)"),
    "resume-lr": (["train", "--resume", "{w}/run3", "--lr", "0.1"], "--lr would change it"),
    "resume-population": (["train", "--resume", "{w}/run3", "--population", "16"], "--population would change it"),
    "resume-hidden": (["train", "--resume", "{w}/run3", "--hidden", "8"], "--hidden would change it"),
    "resume-dataset": (["train", "--resume", "{w}/run3", "--dataset", "digits"], "--dataset would change it"),
    "resume-preset": (["train", "--resume", "{w}/run3", "--preset", "seed"], "--preset would change it"),
    "resume-out-elsewhere": (["train", "--resume", "{w}/run3", "--out", "{w}/elsewhere"], "cannot send it elsewhere"),
    "resume-fewer-epochs": (["train", "--resume", "{w}/run3", "--epochs", "1"], "has done 3 epoch.*--epochs 3 or more"),
    "resume-foreign-checkpoint": (["train", "--resume", "{w}/foreign"], "not the run of its config.toml .*seed"),
    "resume-negative-epoch": (["train", "--resume", "{w}/ck_epoch", "--epochs", "5"], "epoch must be an integer >= 0"),
    "resume-malformed-history": (["train", "--resume", "{w}/ck_history", "--epochs", "5"], "history must be"),
    "resume-truncated-optimizer": (["train", "--resume", "{w}/ck_optimizer", "--epochs", "5"], "optimizer state 't'"),
    "resume-truncated-file": (["train", "--resume", "{w}/ck_truncated", "--epochs", "5"], "corrupt or truncated|not an .npz"),
    "resume-negative-sigma": (["train", "--resume", "{w}/ck_sigma_negative", "--epochs", "5"],
                              "standard deviations 'sigma' are float32 .* expected .* positive"),
    "resume-missing-sigma": (["train", "--resume", "{w}/ck_sigma_missing", "--epochs", "5"], "'sigma' are missing"),
    "resume-sigma-for-openai-es": (["train", "--resume", "{w}/ck_sigma_foreign", "--epochs", "5"],
                                   "holds standard deviations but its strategy openai-es keeps none"),
    "resume-no-checkpoint": (["train", "--resume", "{w}/no_checkpoint"], "does not exist"),
    # commands
    "bench-configs-empty": (["bench", "--configs", ""], "names no config"),
    "bench-configs-commas": (["bench", "--configs", " , "], "names no config"),
    "bench-repeats-0": (["bench", "--configs", "seed", "--repeats", "0"], "--repeats must be >= 1"),
    "bench-out-missing-folder": (["bench", "--configs", "seed", "--out", "{w}/nowhere/bench"], "does not exist"),
    "bench-threads-0": (["bench", "--configs", "seed", "--threads", "0"], "threads must be >= 1"),
    "unknown-command": (["nope"], r"\(see fastes --help\)$"),
    # values accepted before and silently changed, or refused with a traceback or a warning
    "hidden-empty-size": (["train", *SEED, "--hidden", "16,,16", "--out", NEW], "hidden sizes .*'16,,16'"),
    "hidden-trailing-comma": (["train", *SEED, "--hidden", "16,", "--out", NEW], "hidden sizes .*'16,'"),
    "hidden-int64-max": (["train", *SEED, "--hidden", "9223372036854775807", "--out", NEW], "from 1 to 16777216"),
    "config-hidden-huge": (["train", "--config", "{w}/cfg/hidden_huge.toml", "--out", NEW], "from 1 to 16777216"),
    "flag-lr-overflow": (["train", *SEED, "--lr", "1e39", "--out", NEW], "lr 1e\\+39 .*float32, where it would be inf"),
    "out-empty": (["train", *SEED, "--out", ""], "--out is empty"),
    "weight-decay-adam-huge": (["train", *SEED, "--optimizer", "adam", "--weight-decay", "1e300", "--data-dir",
                               "{w}/data", "--out", NEW], "weight_decay 1e\\+300 .*lower --weight-decay"),
    # options typed for a run that does not use them
    "unused-rank": (["train", *SEED, "--rank", "4", "--out", NEW], "--rank is used only with --perturbation lowrank"),
    "unused-beta1": (["train", *SEED, "--beta1", "0.5", "--out", NEW], "--beta1 is used only with --optimizer adam"),
    "unused-momentum": (["train", *SEED, "--momentum", "0.5", "--out", NEW], "--optimizer momentum or clipup"),
    "unused-sigma-lr": (["train", *SEED, "--sigma-lr", "0.5", "--out", NEW], "--strategy pgpe or snes"),
    "unused-lr-decay": (["train", *SEED, "--lr-decay", "0.5", "--out", NEW], "--lr-schedule exponential"),
    "unused-workers": (["train", *SEED, "--workers", "3", "--out", NEW], "--backend ray"),
    "unused-threads-numpy": (["train", *SEED, "--backend", "numpy", "--threads", "1", "--out", NEW], "--backend numba or ray"),
    "unused-dataset-with-data-dir": (["train", *SEED, "--dataset", "digits", "--data-dir", "{w}/data", "--out", NEW],
                                     "--dataset is not used with --data-dir"),
    "resume-unused-workers": (["train", "--resume", "{w}/run3", "--workers", "3"], "--workers is used only with --backend ray"),
    "resume-empty": (["train", "--resume", " "], "--resume is empty"),
    "compare-out-empty": (["compare", "{w}/run3", "--out", ""], "--out is empty"),
    "unknown-train-option": (["train", "--colour", "red"], r"\(see fastes train --help\)$"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, world, small_machine, monkeypatch, run_cli, tree_snapshot):
    args, match = CASES[case]
    if case == "size-noise-table":  # this one fits in memory: the table is what it overflows
        monkeypatch.setattr("fastes.memory.available_bytes", lambda: 1 << 40)
    err = assert_refused(run_cli, tree_snapshot, [a.format(w=world) for a in args], match, world)
    assert "fastes fastes" not in err
    assert not (world / "new_run").exists()


def test_transparent_background_is_background(world, run_cli):
    """Dark ink on a transparent background, with --invert, reads as the same digit as the
    light-on-black image of the same ink (predict used to drop the alpha channel)."""
    from fastes.cli.evaluate import load_image, predict_images

    plain = load_image(world / "light_on_black.png", 28)
    transparent = load_image(world / "dark_on_transparent.png", 28, invert=True)
    np.testing.assert_allclose(plain, transparent, atol=1e-6)
    model = world / "run3" / "model.npz"
    [a] = predict_images(model, [str(world / "light_on_black.png")])
    [b] = predict_images(model, [str(world / "dark_on_transparent.png")], invert=True)
    assert a["label"] == b["label"] and np.allclose(a["probabilities"], b["probabilities"], atol=1e-5)
    code, out, err, shown = run_cli(["predict", model, world / "dark_on_transparent.png", "--invert", "--json"])
    assert code == 0 and not shown and json.loads(out)[0]["label"] == a["label"], err


def test_output_names_are_taken_as_given(world, run_cli, tmp_path):
    """``--out res/sweep-0.1`` writes sweep-0.1.md and sweep-0.1.png: a name is never cut at
    its last dot, so a sweep's tables do not overwrite each other."""
    for name in ("sweep-0.1", "sweep-0.2"):
        assert run_cli(["compare", f"{world}/run3", "--out", tmp_path / name])[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep-0.1.md", "sweep-0.1.png", "sweep-0.2.md",
                                                          "sweep-0.2.png"]


def test_a_compare_label_with_a_pipe_stays_one_cell(world, run_cli, tmp_path):
    code, out, _, _ = run_cli(["compare", f"a|b={world}/run3", "--out", tmp_path / "cmp"])
    row = next(line for line in out.splitlines() if line.startswith("| a"))
    assert code == 0 and row.startswith("| a\\|b |") and row.count(" | ") == out.splitlines()[0].count(" | ")


def test_a_byte_order_mark_in_a_config_file_is_read(tmp_path):
    from fastes.config import load_toml

    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbfepochs = 3\n")
    assert load_toml(path) == {"epochs": 3}


def test_a_16_bit_png_keeps_its_gray_levels(tmp_path):
    """PIL's conversion to 8-bit gray clips 16-bit values at 255: predict read such a PNG as
    black and white."""
    from fastes.cli.evaluate import load_image

    ramp = np.linspace(0, 65535, 28 * 28).reshape(28, 28).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    x = load_image(tmp_path / "ramp16.png", 28)
    np.testing.assert_allclose(x, np.linspace(0, 1, 28 * 28), atol=1 / 255)


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, run_cli, monkeypatch):
    """ENOSPC carries no file name: the message names the file fastes was writing."""
    import errno
    import os as os_module

    real_fsync = os_module.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("fastes.io.checkpoints.os.fsync", full)
    code, _, err, _ = run_cli(["train", "--preset", "quick", "--epochs", "1", "--quiet", "--out", tmp_path / "run"])
    monkeypatch.setattr("fastes.io.checkpoints.os.fsync", real_fsync)
    assert code == 2 and err.count("\n") == 1, err
    assert "None" not in err and "No space left on device" in err and str(tmp_path / "run") in err, err
