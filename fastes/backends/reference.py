"""Plain NumPy implementation of the same math as :mod:`fastes.backends.kernels`.

It is the ``--backend numpy`` trainer, the baseline of ``fastes bench``, and the oracle the
kernels are tested against, so it is written for clarity: each member's parameters are
formed explicitly (``theta + s * sigma * noise``, ``sigma`` one number or one per parameter)
and pushed through the network with batched matrix products, a chunk of members at a time
to bound memory.
"""

from __future__ import annotations

import math

import numpy as np

from ..layout import BINARY_ACTIVATIONS, ParamLayout

#: Members whose parameters are materialised at once.
MEMBER_CHUNK = 32


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)`` elementwise in ``x``'s dtype, NaN passed on."""
    return np.maximum(x, 0.0, dtype=x.dtype)


def _binary(low: float):
    """The activation ``1 if x >= 0 else low``, NaN passed on (as the kernels do)."""
    def activation(x: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(x), x, np.where(x >= 0, 1.0, low).astype(x.dtype))
    return activation


#: The hidden activations by ``--activation`` name (the binary ones from their two values).
ACTIVATION_FUNCTIONS = {"relu": relu, "tanh": np.tanh,
                        **{name: _binary(low) for name, (low, _) in BINARY_ACTIVATIONS.items()}}


def hidden_layers(theta: np.ndarray, layout: ParamLayout, x: np.ndarray) -> list[np.ndarray]:
    """Every hidden layer's activations, after the activation function: a list of arrays
    of shape (B, H_k), float32 (for a binary network, each value one of two).

    Parameters
    ----------
    theta : ndarray of shape (P,), float32
    x : ndarray of shape (B, d), float32
    """
    activate = ACTIVATION_FUNCTIONS[layout.activation]
    h, out = x, []
    for w, b in layout.unpack(theta)[:-1]:
        h = activate(h @ w + b)
        out.append(h)
    return out


def forward_logits(theta: np.ndarray, layout: ParamLayout, x: np.ndarray) -> np.ndarray:
    """Logits ``f(f(x @ W0 + b0) @ W1 + b1) @ W2 + b2`` (any depth), ``f`` the layout's
    hidden activation.

    Parameters
    ----------
    theta : ndarray of shape (P,) or (c, P), float32
    x : ndarray of shape (B, d), float32

    Returns
    -------
    ndarray of shape (B, C) or (c, B, C), float32
    """
    stacked = theta.ndim == 2
    params = theta if stacked else theta[None]
    h = x[None]
    activate = ACTIVATION_FUNCTIONS[layout.activation]
    for k in range(layout.n_layers):
        fan_in, fan_out = layout.dims[k], layout.dims[k + 1]
        w0, b0 = layout.w_start[k], layout.b_start[k]
        w = params[:, w0:b0].reshape(-1, fan_in, fan_out)
        h = np.matmul(h, w) + params[:, None, b0 : b0 + fan_out]
        if k < layout.n_layers - 1:
            h = activate(h)
    return h if stacked else h[0]


def losses_from_logits(logits: np.ndarray, labels: np.ndarray, loss: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-row loss (float64) and correctness of logits (..., B, C) against labels (B,).

    ``mse`` sums the squared error over the C outputs against one-hot labels;
    ``cross-entropy`` is ``logsumexp(logits) - logits[label]``; ``zero-one`` is 1 where the
    first largest logit is not the label, else 0 (NaN where a logit is not finite, as the
    others give).
    """
    z = logits.astype(np.float64)
    if loss == "zero-one":
        finite = np.isfinite(z).all(axis=-1)
        row_loss = np.where(finite, (z.argmax(axis=-1) != labels).astype(np.float64), np.nan)
    elif loss == "mse":
        onehot = np.eye(z.shape[-1])[labels]
        row_loss = ((z - onehot) ** 2).sum(axis=-1)
    elif loss == "cross-entropy":
        top = z.max(axis=-1, keepdims=True)
        lse = top[..., 0] + np.log(np.exp(z - top).sum(axis=-1))
        row_loss = lse - np.take_along_axis(z, np.broadcast_to(labels[:, None], z.shape[:-1] + (1,)), axis=-1)[..., 0]
    else:
        raise ValueError(f"unknown loss {loss!r}")
    correct = logits.argmax(axis=-1) == labels
    return row_loss, correct


def member_noise(table: np.ndarray, offsets: np.ndarray, layout: ParamLayout, perturbation: str, rank: int) -> np.ndarray:
    """Each noise vector in parameter layout, shape (n_noise, P), float32.

    Low-rank noise is expanded to ``A.T @ B / sqrt(r)`` per layer (the kernels never do).
    """
    if perturbation == "full":
        return np.stack([table[o : o + layout.size] for o in offsets])
    a_start, b_start, e_start = layout.lowrank_starts(rank)
    out = np.empty((len(offsets), layout.size), dtype=np.float32)
    for i, o in enumerate(offsets):
        for k in range(layout.n_layers):
            fan_in, fan_out = layout.dims[k], layout.dims[k + 1]
            a = table[o + a_start[k] : o + a_start[k] + fan_in * rank].reshape(rank, fan_in)
            b = table[o + b_start[k] : o + b_start[k] + fan_out * rank].reshape(rank, fan_out)
            w0, b0 = layout.w_start[k], layout.b_start[k]
            out[i, w0:b0] = (a.T @ b / np.float32(math.sqrt(rank))).ravel()
            out[i, b0 : b0 + fan_out] = table[o + e_start[k] : o + e_start[k] + fan_out]
    return out


def population_losses(
    theta, noise, sigma, layout, x, labels, loss="mse", antithetic=False, perturbation="full", rank=1,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean batch loss and correct count of each member, ordered as in the kernels.

    Parameters
    ----------
    theta : ndarray of shape (P,), float32
    noise : tuple (table (T,) float32, offsets (n_noise,) int64)
    sigma : float, or ndarray of shape (P,), float32 (a standard deviation per parameter)
    x : ndarray of shape (B, d), float32, the batch
    labels : ndarray of shape (B,), int
    antithetic : bool
        Each noise vector with both signs (population = 2 * n_noise).

    Returns
    -------
    losses : ndarray of shape (n,), float64
    correct : ndarray of shape (n,), int64
    """
    table, offsets = noise
    signs = np.array([1.0, -1.0] if antithetic else [1.0], dtype=np.float32)
    scale = np.asarray(sigma, dtype=np.float32)
    losses, correct = [], []
    for start in range(0, len(offsets), MEMBER_CHUNK):
        noise = member_noise(table, offsets[start : start + MEMBER_CHUNK], layout, perturbation, rank)
        # members k*len(signs) + i: theta + signs[i] * (sigma * noise[k])
        params = theta[None, None, :] + signs[None, :, None] * (scale * noise)[:, None, :]
        params = params.reshape(-1, layout.size)
        row_loss, row_ok = losses_from_logits(forward_logits(params, layout, x), labels, loss)
        losses.append(row_loss.mean(axis=1))
        correct.append(row_ok.sum(axis=1))
    return np.concatenate(losses), np.concatenate(correct).astype(np.int64)


def noise_weighted_sum(table, offsets, weights, size) -> np.ndarray:
    """``sum_k weights[k] * table[offsets[k] : offsets[k] + size]``, float64, shape (size,)."""
    out = np.zeros(size, dtype=np.float64)
    for w, o in zip(weights, offsets):
        out += w * table[o : o + size].astype(np.float64)
    return out


def noise_moments(table, offsets, weights, square_weights, size) -> tuple[np.ndarray, np.ndarray]:
    """``sum_k weights[k] u_k`` and ``sum_k square_weights[k] (u_k**2 - 1)``, float64, shapes (size,)."""
    total, total_sq = np.zeros(size), np.zeros(size)
    for start in range(0, len(offsets), MEMBER_CHUNK):
        noise = np.stack([table[o : o + size] for o in offsets[start : start + MEMBER_CHUNK]]).astype(np.float64)
        total += weights[start : start + MEMBER_CHUNK] @ noise
        total_sq += square_weights[start : start + MEMBER_CHUNK] @ (noise**2 - 1.0)
    return total, total_sq


def lowrank_weighted_sum(table, offsets, weights, layout, rank) -> np.ndarray:
    """``sum_k weights[k] * noise_k`` with low-rank noise expanded, float64, shape (P,)."""
    out = np.zeros(layout.size, dtype=np.float64)
    for start in range(0, len(offsets), MEMBER_CHUNK):
        noise = member_noise(table, offsets[start : start + MEMBER_CHUNK], layout, "lowrank", rank)
        out += weights[start : start + MEMBER_CHUNK] @ noise.astype(np.float64)
    return out
