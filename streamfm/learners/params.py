"""FMParams: the parameters of a second-order factorization machine and their optimiser state.

    y(x) = w0 + Σ_i w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j

Arrays grow as new feature ids appear, by a quarter of their size at a time (capacity is
resident memory), in place where they can (`streamfm.growth`: no copy, so a growth does not
hold an array twice; where it must copy, one array at a time). Ids in
[0, n_features) are "seen"; rows beyond that are pre-initialised capacity. A feature's initial
factors depend only on (seed, feature id), so growth history never changes a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from streamfm.growth import empty_rows, resize_rows
from streamfm.rng import normal_by_id

PARAM_DTYPE = np.float32
MIN_CAPACITY = 64


@njit(cache=True, nogil=True)
def _finite_and_above(values: np.ndarray, low: float, strict: bool) -> bool:
    """Whether every value is finite and > low (strict) or >= low (no temporary arrays)."""
    i = 0
    n = values.shape[0]
    while i < n:
        x = values[i]
        if not np.isfinite(x) or x < low or (strict and x == low):
            break
        i += 1
    return i == n


def all_finite(array: np.ndarray) -> bool:
    """Whether every value of a float array is finite (no NaN, no inf)."""
    return bool(_finite_and_above(np.ascontiguousarray(array).reshape(-1), -np.inf, False))


class FMParams:
    """w0 (shape (1,)), w (capacity,), V (capacity, k), all float32 (or `dtype`: ALS and MCMC
    keep float64); feature group per id (int32).

    With `random_w`, w starts N(0, init_std²) by (seed, id) too (libFM's start for ALS and MCMC;
    otherwise w starts at 0). With `adagrad`, acc_w0 / acc_w / acc_V (float32) hold
    per-coordinate step-rule state shaped like the parameters, starting at `adagrad_init`:
    AdaGrad's sums of squared gradients, or SGDA's last gradients (started at 0).
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
        dtype=PARAM_DTYPE,
        random_w: bool = False,
    ) -> None:
        self.k = int(k)
        self.dtype = np.dtype(dtype)
        self.random_w = bool(random_w)
        self.seed = int(seed)
        self.init_std = float(init_std)
        self.adagrad = bool(adagrad)
        self.adagrad_init = float(adagrad_init)
        self._reset(max(int(capacity), MIN_CAPACITY))

    def _reset(self, capacity: int) -> None:
        """Initial parameters, no feature seen, `capacity` rows allocated."""
        self.n_features = 0
        self.w0 = np.zeros(1, dtype=self.dtype)
        # Plain SGD keeps empty accumulators: the kernels take the same arrays either way.
        self.acc_w0 = np.full(1, self.adagrad_init if self.adagrad else 0.0, dtype=PARAM_DTYPE)
        self.w = None
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        """Grow every array to `capacity` rows, the new rows initialised (w 0, V by id, group 0,
        accumulators adagrad_init), one array at a time: in place where the array can grow so
        (`streamfm.growth.resize_rows`), else only one old array is alive beside its new one."""
        old_rows = 0 if getattr(self, "w", None) is None else self.w.shape[0]
        if capacity <= old_rows:
            return
        acc = self.adagrad
        for name, shape, fill in (
            ("V", (self.k,), None),
            ("w", (), "random" if self.random_w else 0.0),
            ("group", (), 0),
            ("acc_V", (self.k,), self.adagrad_init if acc else None),
            ("acc_w", (), self.adagrad_init if acc else None),
        ):
            if name.startswith("acc") and not acc:
                setattr(self, name, np.zeros((0, *shape), dtype=PARAM_DTYPE))
                continue
            dtype = {"group": np.int32, "V": self.dtype, "w": self.dtype}.get(name, PARAM_DTYPE)
            if getattr(self, name, None) is None or not old_rows:
                setattr(self, name, empty_rows(0, shape, dtype))
            new = resize_rows(self, name, capacity)  # in place where it can (streamfm.growth)
            ids = np.arange(old_rows, capacity, dtype=np.int64)
            if fill is None:
                self._initial_factors_into(ids, new[old_rows:])
            elif fill == "random":
                new[old_rows:] = self.init_std * normal_by_id(self.seed, ids, 1, stream=1)[:, 0]
            elif fill != 0:
                new[old_rows:] = fill
            del new

    @property
    def capacity(self) -> int:
        """Number of rows allocated in w and V (>= n_features)."""
        return int(self.w.shape[0])

    def initial_factors(self, ids: np.ndarray) -> np.ndarray:
        """Initial V rows for feature `ids`: N(0, init_std²), a function of (seed, id) only."""
        ids = np.asarray(ids)
        out = np.empty((len(ids), self.k), dtype=self.dtype)
        self._initial_factors_into(ids, out)
        return out

    def _initial_factors_into(self, ids: np.ndarray, out: np.ndarray) -> None:
        # In blocks: the hashing makes several float64/uint64 temporaries per value.
        block = max(1, (1 << 20) // max(self.k, 1))
        for start in range(0, len(ids), block):
            part = ids[start : start + block]
            out[start : start + len(part)] = self.init_std * normal_by_id(self.seed, part, self.k)

    def ensure_features(self, n_features: int) -> None:
        """Make ids [0, n_features) usable: grow capacity (by quarters) and mark them seen."""
        if n_features > self.capacity:
            cap = self.capacity
            while cap < n_features:
                cap = max(cap + cap // 4, MIN_CAPACITY)
            self._allocate(cap)
        self.n_features = max(self.n_features, int(n_features))

    def all_finite(self) -> bool:
        """True when w0, w and V of the seen features are all finite."""
        n = self.n_features
        return all_finite(self.w0) and all_finite(self.w[:n]) and all_finite(self.V[:n])

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
        """Restore what `state_dict` returned; ValueError if the arrays do not fit these
        parameters (k, optimiser state) or are not what `state_dict` writes: values of this
        dtype (accumulators float32, groups integers >= 0) of the right shapes, all finite
        (AdaGrad accumulators > 0).

        Arrays that are not views of others (as read from a file, or copied) are adopted as
        they are (capacity = the saved rows), so that loading does not hold the parameters
        twice."""
        n = state["n_features"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n_features must be a non-negative integer, got {n!r}")
        if self.adagrad != ("acc_w" in state):
            raise ValueError("the saved parameters were learnt with another optimiser")
        names = ["w0", "w", "V", "group"] + (["acc_w0", "acc_w", "acc_V"] if self.adagrad else [])
        shapes = {"w0": (1,), "acc_w0": (1,), "w": (n,), "acc_w": (n,), "group": (n,)}
        checked = {}
        for name in names:
            arr = state[name]
            if not isinstance(arr, np.ndarray):
                raise ValueError(f"{name} is not an array")
            want = shapes.get(name, (n, self.k))
            if arr.shape != want:
                raise ValueError(f"{name} has shape {arr.shape}, expected {want}")
            if name == "group":
                if arr.dtype.kind not in "iu" or (n and int(arr.min()) < 0):
                    raise ValueError(f"group must hold non-negative integers, not {arr.dtype}")
            elif arr.dtype != (PARAM_DTYPE if name.startswith("acc") else self.dtype):
                want_dtype = PARAM_DTYPE if name.startswith("acc") else self.dtype
                raise ValueError(f"{name} has dtype {arr.dtype}, expected {want_dtype}")
            elif not all_finite(arr):
                raise ValueError(f"{name} holds NaN or infinite values")
            elif (
                name.startswith("acc")
                and self.adagrad_init > 0
                and not _finite_and_above(np.ascontiguousarray(arr).reshape(-1), 0.0, True)
            ):
                raise ValueError(f"{name} holds values <= 0 (AdaGrad accumulators are positive)")
            checked[name] = arr
        self.n_features = 0
        self.w0 = checked["w0"].astype(self.dtype)
        self.acc_w0 = (
            checked["acc_w0"].copy() if self.adagrad else np.full(1, 0.0, dtype=PARAM_DTYPE)
        )
        for name in ("w", "V", "group", "acc_w", "acc_V"):
            setattr(self, name, None)
        for name in ("w", "V", "group", "acc_w", "acc_V"):
            if name not in checked:
                setattr(self, name, np.empty((0, self.k) if name == "acc_V" else 0, PARAM_DTYPE))
                continue
            arr = checked[name]
            dtype = {"group": np.int32, "V": self.dtype, "w": self.dtype}.get(name, PARAM_DTYPE)
            own = arr.base is None and arr.flags.owndata and arr.flags.writeable
            if own and arr.flags.c_contiguous and arr.dtype == dtype:
                setattr(self, name, arr)
            else:
                setattr(self, name, np.ascontiguousarray(arr, dtype=dtype).copy())
        self.n_features = n
        self._allocate(MIN_CAPACITY)  # capacity beyond the saved rows: initialised by id

    def load_values(self, state: dict[str, Any]) -> None:
        """Take w0, w, V and the groups of another learner's parameters (a `state_dict`, any
        dtype or optimiser): a warm start. The step rule's state starts afresh.

        ValueError if k differs."""
        V = np.asarray(state["V"])
        n = int(state["n_features"])
        if V.shape != (n, self.k):
            raise ValueError(f"the saved factors have shape {V.shape}, this model has k={self.k}")
        self._reset(max(n, MIN_CAPACITY))
        self.n_features = n
        self.w0[:] = state["w0"]
        self.w[:n] = state["w"]
        self.V[:n] = V
        self.group[:n] = state["group"]
