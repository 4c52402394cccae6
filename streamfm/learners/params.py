"""FMParams: the parameters of a second-order factorization machine and their optimiser state.

    y(x) = w0 + Σ_i w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j

Arrays grow by capacity doubling as new feature ids appear. Ids in [0, n_features) are "seen";
rows beyond that are pre-initialised capacity. A feature's initial factors depend only on
(seed, feature id), so growth history never changes a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamfm.rng import normal_by_id

PARAM_DTYPE = np.float32
MIN_CAPACITY = 64


class FMParams:
    """w0 (shape (1,)), w (capacity,), V (capacity, k), all float32; feature group per id (int32).

    With AdaGrad, acc_w0 / acc_w / acc_V hold the per-coordinate sums of squared gradients.
    """

    def __init__(
        self,
        k: int,
        *,
        seed: int = 0,
        init_std: float = 0.1,
        adagrad: bool = False,
        adagrad_init: float = 1.0,
        capacity: int = MIN_CAPACITY,
    ) -> None:
        self.k = int(k)
        self.seed = int(seed)
        self.init_std = float(init_std)
        self.adagrad = bool(adagrad)
        self.adagrad_init = float(adagrad_init)
        self._reset(max(int(capacity), MIN_CAPACITY))

    def _reset(self, capacity: int) -> None:
        """Initial parameters, no feature seen, `capacity` rows allocated."""
        self.n_features = 0
        self.w0 = np.zeros(1, dtype=PARAM_DTYPE)
        self.w = np.zeros(0, dtype=PARAM_DTYPE)
        self.V = np.zeros((0, self.k), dtype=PARAM_DTYPE)
        self.group = np.zeros(0, dtype=np.int32)
        # Plain SGD keeps empty accumulators: the kernels take the same arrays either way.
        self.acc_w0 = np.full(1, self.adagrad_init if self.adagrad else 0.0, dtype=PARAM_DTYPE)
        self.acc_w = np.zeros(0, dtype=PARAM_DTYPE)
        self.acc_V = np.zeros((0, self.k), dtype=PARAM_DTYPE)
        self._grow_to(capacity)

    @property
    def capacity(self) -> int:
        """Number of rows allocated in w and V (>= n_features)."""
        return int(self.w.shape[0])

    def initial_factors(self, ids: np.ndarray) -> np.ndarray:
        """Initial V rows for feature `ids`: N(0, init_std²), a function of (seed, id) only."""
        ids = np.asarray(ids)
        out = np.empty((len(ids), self.k), dtype=PARAM_DTYPE)
        # In blocks: the hashing makes several float64/uint64 temporaries per value.
        block = max(1, (1 << 20) // max(self.k, 1))
        for start in range(0, len(ids), block):
            part = ids[start : start + block]
            out[start : start + len(part)] = self.init_std * normal_by_id(self.seed, part, self.k)
        return out

    def _grow_to(self, capacity: int) -> None:
        old = self.capacity
        if capacity <= old:
            return
        new_ids = np.arange(old, capacity, dtype=np.int64)
        self.w = np.concatenate([self.w, np.zeros(capacity - old, dtype=PARAM_DTYPE)])
        V = np.empty((capacity, self.k), dtype=PARAM_DTYPE)
        V[:old] = self.V
        V[old:] = self.initial_factors(new_ids)
        self.V = V
        self.group = np.concatenate([self.group, np.zeros(capacity - old, dtype=np.int32)])
        if self.adagrad:
            fill = self.adagrad_init
            self.acc_w = np.concatenate([self.acc_w, np.full(capacity - old, fill, PARAM_DTYPE)])
            self.acc_V = np.concatenate(
                [self.acc_V, np.full((capacity - old, self.k), fill, PARAM_DTYPE)]
            )

    def ensure_features(self, n_features: int) -> None:
        """Make ids [0, n_features) usable: grow capacity (doubling) and mark them seen."""
        if n_features > self.capacity:
            cap = self.capacity
            while cap < n_features:
                cap *= 2
            self._grow_to(cap)
        self.n_features = max(self.n_features, int(n_features))

    def all_finite(self) -> bool:
        """True when w0, w and V of the seen features are all finite."""
        n = self.n_features
        return bool(
            np.isfinite(self.w0).all()
            and np.isfinite(self.w[:n]).all()
            and np.isfinite(self.V[:n]).all()
        )

    def state_dict(self) -> dict[str, Any]:
        """The seen part of every array (views of the live arrays: copy to keep them) and
        the number of seen features."""
        n = self.n_features
        out: dict[str, Any] = {
            "n_features": n,
            "w0": self.w0,
            "w": self.w[:n],
            "V": self.V[:n],
            "group": self.group[:n],
        }
        if self.adagrad:
            out.update(acc_w0=self.acc_w0, acc_w=self.acc_w[:n], acc_V=self.acc_V[:n])
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; capacity beyond it is initialised by id as usual.

        ValueError if the arrays do not fit these parameters (k, optimiser state)."""
        V = np.asarray(state["V"])
        n = int(state["n_features"])
        if V.shape != (n, self.k):
            raise ValueError(f"V has shape {V.shape}, expected ({n}, {self.k})")
        if self.adagrad != ("acc_w" in state):
            raise ValueError("the saved parameters were learnt with another optimiser")
        self._reset(max(n, MIN_CAPACITY))
        self.n_features = n
        self.w0[:] = state["w0"]
        self.w[:n] = state["w"]
        self.V[:n] = V
        self.group[:n] = state["group"]
        if self.adagrad:
            self.acc_w0[:] = state["acc_w0"]
            self.acc_w[:n] = state["acc_w"]
            self.acc_V[:n] = state["acc_V"]
