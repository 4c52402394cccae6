"""Slow, obviously-correct reference implementations (float64 numpy) used by the tests."""

from __future__ import annotations

import numpy as np


def naive_fm(X: np.ndarray, w0: float, w: np.ndarray, V: np.ndarray) -> np.ndarray:
    """y(x) = w0 + Σ w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j by the O(k·n²) double sum."""
    X = np.asarray(X, dtype=np.float64)
    out = np.empty(X.shape[0])
    for r, x in enumerate(X):
        s = w0 + float(w @ x)
        nz = np.flatnonzero(x)
        for a in range(len(nz)):
            for b in range(a + 1, len(nz)):
                i, j = nz[a], nz[b]
                s += float(V[i] @ V[j]) * x[i] * x[j]
        out[r] = s
    return out


def loss(x, y, w0, w, V, task, reg=(0.0, 0.0, 0.0)):
    """Per-case objective whose gradient the SGD step follows (regularisation on touched params)."""
    p = naive_fm(x[None, :], w0, w, V)[0]
    if task == "regression":
        data = 0.5 * (p - y) ** 2
    else:
        data = np.logaddexp(0.0, p) - y * p  # log loss with y in {0, 1}
    nz = x != 0
    r0, r1, r2 = reg
    return data + 0.5 * (r0 * w0**2 + r1 * np.sum(w[nz] ** 2) + r2 * np.sum(V[nz] ** 2))


def gradient(x, y, w0, w, V, task, reg=(0.0, 0.0, 0.0)):
    """Analytic gradient of `loss` with respect to (w0, w, V)."""
    p = naive_fm(x[None, :], w0, w, V)[0]
    g = p - y if task == "regression" else 1.0 / (1.0 + np.exp(-p)) - y
    nz = (x != 0).astype(float)
    r0, r1, r2 = reg
    s = V.T @ x  # Σ_i v_if x_i
    g0 = g + r0 * w0
    gw = g * x + r1 * w * nz
    gV = g * (np.outer(x, s) - V * (x**2)[:, None]) + r2 * V * nz[:, None]
    return g0, gw, gV


def auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC by comparing every positive with every negative (ties count 1/2)."""
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (len(pos) * len(neg)))


def assert_same_state(a, b, path: str = "state") -> None:
    """Nested state dicts (dicts, lists, arrays, scalars) are equal bit for bit: the same keys,
    lengths, array dtypes and values; `path` names the first difference."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            assert_same_state(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), path
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, path
