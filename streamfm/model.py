"""FMParams: the parameters of a second-order factorization machine and their optimiser state.

    y(x) = w0 + Σ_i w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j

Arrays grow by capacity doubling as new feature ids appear. Ids in [0, n_features) are "seen";
rows beyond that are pre-initialised capacity. A feature's initial factors depend only on
(seed, feature id), so growth history never changes a model.
"""

from __future__ import annotations

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
        self.n_features = 0
        self.w0 = np.zeros(1, dtype=PARAM_DTYPE)
        self.w = np.zeros(0, dtype=PARAM_DTYPE)
        self.V = np.zeros((0, self.k), dtype=PARAM_DTYPE)
        self.group = np.zeros(0, dtype=np.int32)
        # Plain SGD keeps empty accumulators: the kernels take the same arrays either way.
        self.acc_w0 = np.full(1, self.adagrad_init if adagrad else 0.0, dtype=PARAM_DTYPE)
        self.acc_w = np.zeros(0, dtype=PARAM_DTYPE)
        self.acc_V = np.zeros((0, self.k), dtype=PARAM_DTYPE)
        self._grow_to(max(int(capacity), MIN_CAPACITY))

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

    def arrays(self) -> dict[str, np.ndarray]:
        """The seen part of every array (what a saved model holds), keyed by name."""
        n = self.n_features
        out = {"w0": self.w0, "w": self.w[:n], "V": self.V[:n], "group": self.group[:n]}
        if self.adagrad:
            out.update(acc_w0=self.acc_w0, acc_w=self.acc_w[:n], acc_V=self.acc_V[:n])
        return out

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], *, seed: int, init_std: float, adagrad_init: float = 1.0
    ) -> FMParams:
        """Rebuild parameters saved by `arrays()`; capacity beyond them is initialised by id as usual."""
        V = np.asarray(arrays["V"], dtype=PARAM_DTYPE)
        n, k = V.shape
        adagrad = "acc_w" in arrays
        p = cls(
            k, seed=seed, init_std=init_std, adagrad=adagrad, adagrad_init=adagrad_init, capacity=n
        )
        p.n_features = n
        p.w0[:] = arrays["w0"]
        p.w[:n] = arrays["w"]
        p.V[:n] = V
        p.group[:n] = arrays["group"]
        if adagrad:
            p.acc_w0[:] = arrays["acc_w0"]
            p.acc_w[:n] = arrays["acc_w"]
            p.acc_V[:n] = arrays["acc_V"]
        return p
