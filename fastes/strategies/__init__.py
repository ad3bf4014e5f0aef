"""The strategies by name (``--strategy``), and what a run builds from its configuration."""

from __future__ import annotations

import numpy as np

from ..layout import ParamLayout
from .noise import noise_table, table_size_for
from .openai_es import OpenES
from .pgpe import PGPE
from .snes import SNES
from .base import Strategy

#: ``--strategy`` name -> its class (the names and which learn sigma: :data:`fastes.config.STRATEGIES`).
STRATEGY_CLASSES: dict[str, type[Strategy]] = {"openai-es": OpenES, "pgpe": PGPE, "snes": SNES}


def build_strategy(config, dataset) -> tuple[ParamLayout, np.ndarray, Strategy]:
    """What a run on ``dataset`` evolves and draws from: the model's layout, the shared
    noise table (sized to its noise vectors) and the strategy ``config.strategy`` names."""
    layout = ParamLayout.for_mlp(dataset.n_features, config.hidden, dataset.n_classes, config.activation)
    noise_size = layout.noise_size(config.perturbation, config.rank)
    table = noise_table(table_size_for(noise_size))
    return layout, table, STRATEGY_CLASSES[config.strategy](config, noise_size, len(table), layout.size)
