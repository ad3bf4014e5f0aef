import numpy as np
import pytest

from fastes.config import PRESETS, Config, load_toml, parse_hidden, preset, resolve
from fastes.errors import ConfigError


def test_seed_preset_is_the_original():
    c = preset("seed")
    assert (c.population, c.batch_size, c.hidden, c.init_std, c.sigma, c.lr, c.epochs) == (8, 64, (16, 16), 0.1, 0.001, 0.001, 100)
    assert (c.loss, c.shaping, c.optimizer, c.antithetic, c.shuffle, c.init) == ("mse", "zscore", "sgd", False, False, "normal")


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(sigma=0), "sigma must be positive"),
        (dict(sigma=-1.0), "sigma must be positive"),
        (dict(lr=0), "lr must be positive"),
        (dict(population=0), "population must be >= 1"),
        (dict(population=1), "at least 2"),
        (dict(batch_size=-3), "batch_size must be >= 1"),
        (dict(hidden="16,x"), "positive integers"),
        (dict(hidden=[16, 0]), "integers from 1 to"),
        (dict(loss="hinge"), "unknown loss 'hinge'"),
        (dict(optimizer="rmsprop"), "unknown optimizer"),
        (dict(antithetic=True, population=7), "even population"),
        (dict(sigma=float("nan")), "finite"),
        (dict(momentum=1.0), r"\[0, 1\)"),
        (dict(epochs=2.5), "integer"),
        (dict(strategy="cma-es"), "unknown strategy 'cma-es'; choose one of: openai-es, pgpe, snes"),
        (dict(strategy="pgpe", perturbation="lowrank"), "--strategy pgpe .* needs full-rank noise"),
        (dict(strategy="snes", sigma_schedule="exponential", sigma_decay=0.5), "--strategy snes learns .*constant"),
        (dict(sigma_max_change=1.0), r"sigma_max_change must be in \[0, 1\)"),
        (dict(sigma_lr=0.0), "sigma_lr must be positive"),
        (dict(max_speed=-1.0), "max_speed must be positive"),
        (dict(optimizer="clipupp"), "unknown optimizer 'clipupp'"),
        (dict(shift=8), "shift must be at most 7"),
    ],
)
def test_invalid_values_rejected(changes, match):
    with pytest.raises(ConfigError, match=match):
        preset("seed").replace(**changes)


def test_unknown_preset_and_option():
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        preset("nope")
    with pytest.raises(ConfigError, match="unknown config option"):
        Config().replace(colour="red")


def test_parse_hidden():
    assert parse_hidden("16, 16") == (16, 16)
    assert parse_hidden([64]) == (64,)
    assert parse_hidden("") == ()


def test_toml_roundtrip_and_precedence(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(preset("seed").replace(epochs=3, hidden=(8,)).to_toml())
    assert resolve("seed", path) == preset("seed").replace(epochs=3, hidden=(8,))
    # flags override the file, the file overrides the preset
    assert resolve("seed", path, epochs=5).epochs == 5
    (tmp_path / "bad.toml").write_text("epochs = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(tmp_path / "bad.toml")
    (tmp_path / "unknown.toml").write_text("colour = 1\n")
    with pytest.raises(ConfigError, match="unknown option"):
        resolve(None, tmp_path / "unknown.toml")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_is_config_defaults_but_what_it_names(name):
    """``Config()`` is the ``default`` preset (a bare ``fastes train``); every preset differs
    from it in exactly the fields it lists."""
    got, base = preset(name).to_dict(), Config().to_dict()
    changed = {k for k in base if got[k] != base[k]}
    assert changed == {k for k, v in PRESETS[name].items() if base[k] != (list(v) if isinstance(v, tuple) else v)}
    assert (changed == set()) == (name == "default")


def test_the_estimator_starts_from_the_tabular_preset():
    """... with its population and epochs sized to the data, unless given."""
    from fastes import ESClassifier
    from fastes.estimator import PARAMETERS, SIZED, sized_epochs, sized_population

    tabular = preset("tabular")
    params = ESClassifier().get_params()
    assert params["random_state"] is None and all(params[p] is None for p in SIZED)
    assert all(params[p] == getattr(tabular, f) for p, f in PARAMETERS.items() if p != "random_state" and p not in SIZED)
    clf = ESClassifier(random_state=3)
    clf.classes_ = np.arange(10)
    n_params = 64 * 32 + 32 + 32 * 10 + 10
    sized = tabular.replace(seed=3, population=sized_population(n_params), epochs=sized_epochs(1437, 64), threads=1)
    assert clf._config(3, n_rows=1437, n_features=64) == sized  # a small run: one thread
    given = ESClassifier(population=10, epochs=2, n_threads=2)
    given.classes_ = np.arange(10)
    assert given._config(3, n_rows=1437, n_features=64) == tabular.replace(seed=3, population=10, epochs=2, threads=2)
    wide = ESClassifier(hidden=(1024,))
    wide.classes_ = np.arange(10)
    assert wide._config(3, n_rows=1437, n_features=784).threads is None  # every core for a large generation


def test_the_sizing_rules():
    """``population=None`` grows with the parameters, within bounds; ``epochs=None`` gives a
    small table enough generations, a larger one the preset's passes."""
    from fastes.config import MAX_POPULATION, MIN_POPULATION, sized_population
    from fastes.estimator import MIN_EPOCHS, MIN_GENERATIONS, sized_epochs

    assert sized_population(4) == MIN_POPULATION and sized_population(10**6) == MAX_POPULATION
    assert sized_population(2410) == 242 and sized_population(2000) == 200  # the digits' 64-32-10 network: 2410
    assert preset("digits").population == sized_population(64 * 64 + 64 + 64 * 10 + 10) == 482
    assert sized_epochs(120, 64) * 2 >= MIN_GENERATIONS > (sized_epochs(120, 64) - 1) * 2
    assert sized_epochs(100_000, 64) == MIN_EPOCHS


def test_a_run_on_the_digits_starts_from_their_preset_unless_one_is_named(tmp_path):
    """The digits have a preset sized for them; MNIST, a --data-dir folder and any named preset
    are as before (a bare ``fastes train`` is the ``default`` preset)."""
    assert resolve() == preset("default")
    assert resolve(None, None, dataset="digits") == preset("digits")
    assert resolve(None, None, dataset="digits", epochs=3) == preset("digits").replace(epochs=3)
    assert resolve("default", None, dataset="digits") == preset("default").replace(dataset="digits")
    assert resolve(None, None, data_dir=str(tmp_path)) == preset("default").replace(data_dir=str(tmp_path))
    path = tmp_path / "run.toml"
    path.write_text('dataset = "digits"\n')
    assert resolve(None, path) == preset("digits")
    path.write_text('preset = "default"\ndataset = "digits"\n')
    assert resolve(None, path) == preset("default").replace(dataset="digits")
