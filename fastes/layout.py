"""Parameter layout: one flat float32 vector holding every layer's weights and biases.

Layer ``k`` maps ``dims[k]`` inputs to ``dims[k+1]`` outputs. Its weight matrix ``Wk`` has
shape ``(fan_in, fan_out)`` and is stored row-major at ``theta[w_start[k]:b_start[k]]``,
followed by its bias ``bk`` of shape ``(fan_out,)``. The same layout describes a full-rank
noise vector, so noise and parameters line up slice for slice.

Low-rank noise (``rank = r``) has its own, shorter layout per layer: ``A (r, fan_in)``,
``B (r, fan_out)`` (each factor's rank components contiguous, so the kernels read them as
long vectors) and a full bias noise ``(fan_out,)``; the weight perturbation is
``A.T @ B / sqrt(r)``.

The layout also names the hidden layers' activation: the one fact about the network, beside
its widths, that every forward pass (kernels, reference, model files) must agree on.
"""

from __future__ import annotations

import re

from dataclasses import dataclass

import numpy as np

from .errors import ModelFileError

#: Hidden activations (``--activation``): ReLU, tanh, and two with no useful gradient,
#: sign (-1 or +1) and step (0 or 1), both taking 0 to the upper value.
ACTIVATIONS = ("relu", "tanh", "sign", "step")
#: Activations whose every output is one of two values: a binary network.
BINARY_ACTIVATIONS = {"sign": (-1.0, 1.0), "step": (0.0, 1.0)}


@dataclass(frozen=True)
class ParamLayout:
    """Where each layer lives in the flat vector.

    Attributes
    ----------
    dims : tuple of int
        Layer widths, input first: ``(784, 16, 16, 10)``.
    activation : str
        Every hidden layer's activation, one of :data:`ACTIVATIONS`; the output layer has none.
    """

    dims: tuple[int, ...]
    activation: str = "relu"

    def __post_init__(self) -> None:
        if len(self.dims) < 2 or any(int(d) < 1 for d in self.dims):
            raise ValueError(f"layer widths must be >= 2 positive integers, got {self.dims}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose one of: {', '.join(ACTIVATIONS)}")

    @classmethod
    def for_mlp(cls, n_features: int, hidden: tuple[int, ...], n_outputs: int,
                activation: str = "relu") -> "ParamLayout":
        return cls((int(n_features), *map(int, hidden), int(n_outputs)), activation)

    @property
    def n_layers(self) -> int:
        return len(self.dims) - 1

    @property
    def dims_array(self) -> np.ndarray:
        """``dims`` as int64, the form the kernels take."""
        return np.asarray(self.dims, dtype=np.int64)

    @property
    def w_start(self) -> np.ndarray:
        """Offset of each layer's weights, shape (n_layers,), int64."""
        return self._starts()[0]

    @property
    def b_start(self) -> np.ndarray:
        """Offset of each layer's bias, shape (n_layers,), int64."""
        return self._starts()[1]

    def _starts(self) -> tuple[np.ndarray, np.ndarray]:
        w, b, pos = [], [], 0
        for fan_in, fan_out in zip(self.dims[:-1], self.dims[1:]):
            w.append(pos)
            pos += fan_in * fan_out
            b.append(pos)
            pos += fan_out
        return np.asarray(w, dtype=np.int64), np.asarray(b, dtype=np.int64)

    @property
    def size(self) -> int:
        """Number of parameters P."""
        return sum(i * o + o for i, o in zip(self.dims[:-1], self.dims[1:]))

    def lowrank_starts(self, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Offsets of ``A``, ``B`` and bias noise per layer in a low-rank noise vector."""
        a, b, e, pos = [], [], [], 0
        for fan_in, fan_out in zip(self.dims[:-1], self.dims[1:]):
            a.append(pos)
            pos += fan_in * rank
            b.append(pos)
            pos += fan_out * rank
            e.append(pos)
            pos += fan_out
        as_int = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
        return as_int(a), as_int(b), as_int(e)

    def lowrank_size(self, rank: int) -> int:
        """Length of one member's low-rank noise vector: sum of r*(fan_in+fan_out)+fan_out."""
        return sum(rank * (i + o) + o for i, o in zip(self.dims[:-1], self.dims[1:]))

    def noise_size(self, perturbation: str, rank: int) -> int:
        return self.size if perturbation == "full" else self.lowrank_size(rank)

    def unpack(self, theta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Views ``[(W0, b0), (W1, b1), ...]`` into ``theta`` (shape (P,))."""
        out = []
        for k, (fan_in, fan_out) in enumerate(zip(self.dims[:-1], self.dims[1:])):
            w0, b0 = int(self.w_start[k]), int(self.b_start[k])
            out.append((theta[w0:b0].reshape(fan_in, fan_out), theta[b0 : b0 + fan_out]))
        return out

    def pack(self, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Inverse of :meth:`unpack`: a new float32 vector of shape (P,)."""
        theta = np.empty(self.size, dtype=np.float32)
        for (w_view, b_view), (w, b) in zip(self.unpack(theta), layers):
            w_view[...] = w
            b_view[...] = b
        return theta

    def init(self, scheme: str, std: float, rng: np.random.Generator) -> np.ndarray:
        """Fresh parameters (biases zero).

        ``normal``: N(0, std) as in the original; ``he``: N(0, 2/fan_in);
        ``glorot``: U(+-sqrt(6/(fan_in+fan_out))).
        """
        theta = np.zeros(self.size, dtype=np.float32)
        for w, _ in self.unpack(theta):
            fan_in, fan_out = w.shape
            if scheme == "normal":
                w[...] = rng.normal(0.0, std, size=w.shape)
            elif scheme == "he":
                w[...] = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=w.shape)
            elif scheme == "glorot":
                limit = np.sqrt(6.0 / (fan_in + fan_out))
                w[...] = rng.uniform(-limit, limit, size=w.shape)
            else:
                raise ValueError(f"unknown init scheme {scheme!r}")
        return theta

    def to_arrays(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """``{"W0": ..., "b0": ..., ...}``, the model file's arrays."""
        arrays = {}
        for k, (w, b) in enumerate(self.unpack(theta)):
            arrays[f"W{k}"] = np.ascontiguousarray(w, dtype=np.float32)
            arrays[f"b{k}"] = np.ascontiguousarray(b, dtype=np.float32)
        return arrays

    @classmethod
    def from_arrays(cls, arrays, source: str = "model", activation: str = "relu") -> tuple["ParamLayout", np.ndarray]:
        """Layout and theta from ``W0, b0, W1, b1, ...`` (hidden layers' ``activation``, which
        a model file records in its config); checks that the shapes chain."""
        layers = []
        k = 0
        while f"W{k}" in arrays:
            if f"b{k}" not in arrays:
                raise ModelFileError(f"{source}: has W{k} but no b{k}")
            w = np.asarray(arrays[f"W{k}"])
            b = np.asarray(arrays[f"b{k}"])
            if w.ndim != 2 or b.ndim != 1 or b.shape[0] != w.shape[1]:
                raise ModelFileError(
                    f"{source}: layer {k} has W{k} {w.shape} and b{k} {b.shape}; "
                    "need W of shape (fan_in, fan_out) and b of shape (fan_out,)"
                )
            if layers and layers[-1][0].shape[1] != w.shape[0]:
                raise ModelFileError(
                    f"{source}: layer shapes do not chain: W{k - 1} has {layers[-1][0].shape[1]} "
                    f"outputs but W{k} expects {w.shape[0]} inputs"
                )
            if not (np.issubdtype(w.dtype, np.floating) and np.issubdtype(b.dtype, np.floating)):
                raise ModelFileError(f"{source}: layer {k} is not floating point ({w.dtype}, {b.dtype})")
            layers.append((w, b))
            k += 1
        if not layers:
            raise ModelFileError(f"{source}: no W0/b0 arrays; is this a fastes model file?")
        later = sorted(name for name in arrays if re.fullmatch(r"[Wb]\d+", name) and int(name[1:]) >= k)
        if later:  # a layer is missing in the middle: the rest would be silently dropped
            raise ModelFileError(f"{source}: has {later[0]} but no W{k}/b{k}; the file lost a layer")
        dims = (layers[0][0].shape[0], *(w.shape[1] for w, _ in layers))
        if min(dims) < 1:
            raise ModelFileError(f"{source}: a layer has no units (layer widths {dims}); the file is damaged")
        for k, (w, b) in enumerate(layers):
            with np.errstate(invalid="ignore"):
                if not (np.isfinite(w).all() and np.isfinite(b).all()):
                    raise ModelFileError(f"{source}: parameters contain NaN or infinity")
                if max(np.abs(w).max(initial=0.0), np.abs(b).max(initial=0.0)) > float(np.finfo(np.float32).max):
                    raise ModelFileError(f"{source}: layer {k} has weights beyond float32's range, which the model "
                                         "computes in; the file is damaged or not a fastes model")
        layout = cls(dims, activation)
        return layout, layout.pack(layers)
