"""Synthetic data with a known answer, for tests, examples and benchmarks.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same arguments give identical
output on every run. Generation is vectorised (no Python loop over rows or events).

- ``make_planted_fm``: sparse rows of a known second-order factorization machine.
- ``make_event_log``: a planted recommendation event log (user, item, time, star rating) with an
  item side table; ``write_event_log`` writes it as a temporal train/test split in Parquet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from scipy.special import expit

from streamfm.numpy_arrow import to_numpy

__all__ = ["make_event_log", "make_planted_fm", "write_event_log"]

TASKS = ("regression", "classification")
_FM_BLOCK_ROWS = 1 << 16  # rows per block when evaluating f(x): bounds the temporaries

# Event log: the planted model's constants (stars are 1..5, so the scales are in stars).
EVENT_LOG_START = np.datetime64("2024-01-01T00:00:00", "s")
EVENT_LOG_DAYS = 180
_MU = 3.6  # global mean before rounding
_SD_USER_BIAS, _SD_ITEM_BIAS = 0.35, 0.45
_SD_DOT = 0.6  # std of <p_u, q_i> whatever k is
_SD_GENRE_TASTE = 0.4  # a user's liking of a genre
_GLOBAL_DRIFT = 0.2  # stars the mean rises over the whole period
_SD_ITEM_DRIFT = 0.5  # stars an item gains or loses over the whole period
_LATE_FRACTION = 0.2  # users and items that first appear during the period, not at its start
_ROW_GROUPS = 8  # row groups per written event file (so readers can be tested on several)
_MAX_ROW_GROUP = 1 << 16


def _distinct_ids(rng: np.random.Generator, n_rows: int, n_features: int, nnz: int) -> np.ndarray:
    """(n_rows, nnz) int64: per row, nnz distinct ids drawn uniformly from [0, n_features), sorted.

    Floyd's algorithm, vectorised over rows: exact, no rejection loop, O(n_rows * nnz^2).
    """
    ids = np.empty((n_rows, nnz), dtype=np.int64)
    for c, j in enumerate(range(n_features - nnz, n_features)):
        t = rng.integers(0, j + 1, size=n_rows)
        taken = (ids[:, :c] == t[:, None]).any(axis=1)
        ids[:, c] = np.where(taken, j, t)
    ids.sort(axis=1)
    return ids


def _fm_predict_dense(
    ids: np.ndarray, vals: np.ndarray, w0: float, w: np.ndarray, V: np.ndarray
) -> np.ndarray:
    """f(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j for rows of distinct ids.

    ``ids``, ``vals``: (n, nnz); returns (n,) float64. Uses the O(k * nnz) identity
    sum_{i<j} <v_i,v_j> x_i x_j = 1/2 sum_f [(sum_i v_if x_i)^2 - sum_i v_if^2 x_i^2].
    """
    out = np.empty(ids.shape[0], dtype=np.float64)
    for a in range(0, ids.shape[0], _FM_BLOCK_ROWS):
        b = min(a + _FM_BLOCK_ROWS, ids.shape[0])
        x = vals[a:b]
        vx = V[ids[a:b]] * x[:, :, None]  # (rows, nnz, k)
        s = vx.sum(axis=1)
        pair = 0.5 * (np.square(s) - np.square(vx).sum(axis=1)).sum(axis=1)
        out[a:b] = w0 + (w[ids[a:b]] * x).sum(axis=1) + pair
    return out


def make_planted_fm(
    n_rows: int,
    n_features: int = 200,
    k: int = 4,
    nnz_per_row: int = 5,
    noise: float = 0.1,
    task: str = "regression",
    seed: int = 0,
    init_std: float = 0.5,
    bias: float = 0.5,
) -> tuple[sp.csr_matrix, np.ndarray, dict]:
    """Rows of a known second-order factorization machine.

    The truth is w0 = ``bias``, w ~ N(0, init_std^2) of shape (n_features,), V ~ N(0, init_std^2)
    of shape (n_features, k); it depends on ``seed``, ``n_features``, ``k``, ``init_std`` and
    ``bias`` only, not on ``n_rows``. Each row has ``nnz_per_row`` distinct feature ids (uniform);
    about half the rows have binary values 1.0, the others values uniform in [0.5, 1.5].

    Returns ``(X, y, truth)``:

    - ``X``: (n_rows, n_features) CSR; data float32, indices int32 (sorted per row), indptr int64.
      (scipy may normalise both index arrays to one dtype in matrices derived from ``X``.)
    - ``y``: (n_rows,) float64. Regression: f(x) + N(0, noise^2). Classification: labels 0.0 or
      1.0 drawn from Bernoulli(sigmoid(f(x))); ``noise`` is not used.
    - ``truth``: {"w0": float, "w": (n_features,), "V": (n_features, k), "clean": (n_rows,) f(x)
      without noise (the logit for classification)}, all float64, computed from the float32
      values stored in ``X``.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if n_rows < 0 or n_features < 1 or k < 0:
        raise ValueError(
            f"need n_rows >= 0, n_features >= 1, k >= 0; got {n_rows}, {n_features}, {k}"
        )
    if not 1 <= nnz_per_row <= n_features:
        raise ValueError(f"nnz_per_row must be in [1, n_features={n_features}], got {nnz_per_row}")
    if noise < 0 or init_std < 0:
        raise ValueError(f"noise and init_std must be >= 0, got {noise} and {init_std}")

    rng = np.random.default_rng(seed)
    # The model is drawn first so that it does not depend on n_rows.
    w0 = float(bias)
    w = rng.normal(0.0, init_std, n_features)
    V = rng.normal(0.0, init_std, (n_features, k))

    ids = _distinct_ids(rng, n_rows, n_features, nnz_per_row)
    binary = rng.random(n_rows) < 0.5
    vals = rng.uniform(0.5, 1.5, (n_rows, nnz_per_row)).astype(np.float32)
    vals[binary] = 1.0
    # The truth is computed from the float32 values actually stored, so it is exact for X.
    clean = _fm_predict_dense(ids, vals.astype(np.float64), w0, w, V)

    if task == "regression":
        y = clean + rng.normal(0.0, noise, n_rows)
    else:
        y = (rng.random(n_rows) < expit(clean)).astype(np.float64)

    X = sp.csr_matrix(
        (vals.ravel(), ids.ravel().astype(np.int32), np.arange(n_rows + 1) * nnz_per_row),
        shape=(n_rows, n_features),
    )
    # scipy gives indices and indptr one common dtype; set the documented ones afterwards.
    X.indices = ids.ravel().astype(np.int32)
    X.indptr = np.arange(n_rows + 1, dtype=np.int64) * nnz_per_row
    X.has_sorted_indices = True
    truth = {"w0": w0, "w": w, "V": V, "clean": clean}
    return X, y, truth


def _power_law(rng: np.random.Generator, n: int, offset: float, exponent: float) -> np.ndarray:
    """Probabilities (n,) proportional to (rank + offset)^-exponent, ranks in random order."""
    p = (np.arange(n) + offset) ** -exponent
    return rng.permutation(p / p.sum())


def _names(prefix: str, n: int, width: int) -> pa.Array:
    """pa.string array of prefix + zero-padded number, e.g. "u00042" (n strings, not per event)."""
    width = max(width, len(str(max(n - 1, 0))))
    return pa.array([f"{prefix}{j:0{width}d}" for j in range(n)], type=pa.string())


def _sample_after(
    rng: np.random.Generator, p: np.ndarray, arrival: np.ndarray, times: np.ndarray
) -> np.ndarray:
    """For each time, an index drawn with probabilities ``p`` among those already arrived.

    Rejection: redraw the cases whose pick arrives later than their time. Ends quickly because
    most entries, and always the most probable one, arrive at time 0.
    """
    arrival = arrival.copy()
    arrival[np.argmax(p)] = 0  # someone must be there at the start, or the loop never ends
    idx = rng.choice(p.size, size=times.size, p=p)
    bad = np.flatnonzero(arrival[idx] > times)
    while bad.size:
        idx[bad] = rng.choice(p.size, size=bad.size, p=p)
        bad = bad[arrival[idx[bad]] > times[bad]]
    return idx


def make_event_log(
    n_users: int = 2000,
    n_items: int = 1000,
    n_events: int = 200_000,
    n_genres: int = 18,
    k: int = 8,
    noise: float = 0.5,
    seed: int = 0,
) -> tuple[pa.Table, pa.Table]:
    """A planted recommendation event log over 180 days from 2024-01-01, sorted by time.

    Rating (stars) = clip(round(3.6 + b_u + b_i + <p_u, q_i> + taste_u(genres of i)
    + drift(i, t) + N(0, noise^2)), 1, 5), where taste is the user's mean liking of the item's
    genres and drift a slow linear trend (global plus per item) over the period. User and item
    popularity follow power laws; about 20% of users and items first appear during the period (cold
    starts). The same (user, item) pair can occur more than once.

    Returns ``(events, items)``:

    - events: user (string "u00042"), item (string "i00017"), timestamp (timestamp[s]),
      rating (float32, 1..5), label (int8, rating >= 4); n_events rows, timestamps non-decreasing.
    - items: item (string), genres (list<string> of 1-3 distinct names like "genre07", the main
      genre first), year (int16); one row per item, in id order, seen in events or not.
    """
    if min(n_users, n_items, n_genres) < 1 or n_events < 0 or k < 0 or noise < 0:
        raise ValueError(
            "need n_users, n_items, n_genres >= 1 and n_events, k, noise >= 0; got "
            f"{n_users}, {n_items}, {n_genres}, {n_events}, {k}, {noise}"
        )
    rng = np.random.default_rng(seed)
    period = EVENT_LOG_DAYS * 86400  # seconds

    # Items: genres by weighted sampling without replacement (Gumbel top-k), popular genres first.
    genre_p = _power_law(rng, n_genres, 1.0, 0.7)
    n_per_item = np.minimum(rng.choice([1, 2, 3], size=n_items, p=[0.5, 0.35, 0.15]), n_genres)
    keys = np.log(genre_p) + rng.gumbel(size=(n_items, n_genres))
    top = np.argsort(-keys, axis=1)[:, : min(3, n_genres)]
    has = np.arange(top.shape[1]) < n_per_item[:, None]  # (n_items, <=3) which slots are real
    year = np.clip(2024 - np.floor(rng.exponential(10.0, n_items)), 1930, 2024).astype(np.int16)

    # The planted model. Factor scale chosen so that <p_u, q_i> has std _SD_DOT for any k.
    sd_factor = (_SD_DOT**2 / k) ** 0.25 if k else 0.0
    b_u = rng.normal(0.0, _SD_USER_BIAS, n_users)
    b_i = rng.normal(0.0, _SD_ITEM_BIAS, n_items)
    P = rng.normal(0.0, sd_factor, (n_users, k))
    Q = rng.normal(0.0, sd_factor, (n_items, k))
    taste = rng.normal(0.0, _SD_GENRE_TASTE, (n_users, n_genres))
    item_drift = rng.normal(0.0, _SD_ITEM_DRIFT, n_items)

    # Who and when: power-law popularity; late arrivals cannot act before they arrive.
    user_p = _power_law(rng, n_users, 10.0, 0.7)
    item_p = _power_law(rng, n_items, 20.0, 0.9)
    user_arrival = np.where(
        rng.random(n_users) < _LATE_FRACTION, rng.integers(0, period, n_users), 0
    )
    item_arrival = np.where(
        rng.random(n_items) < _LATE_FRACTION, rng.integers(0, period, n_items), 0
    )
    t = np.sort(rng.integers(0, period, n_events))
    u = _sample_after(rng, user_p, user_arrival, t)
    i = _sample_after(rng, item_p, item_arrival, t)

    frac = t / period - 0.5  # in [-0.5, 0.5): drifts are centred on the middle of the period
    genre_taste = (taste[u[:, None], top[i]] * has[i]).sum(axis=1) / n_per_item[i]
    raw = (
        _MU
        + b_u[u]
        + b_i[i]
        + np.einsum("nk,nk->n", P[u], Q[i])
        + genre_taste
        + (_GLOBAL_DRIFT + item_drift[i]) * frac
        + rng.normal(0.0, noise, n_events)
    )
    rating = np.clip(np.rint(raw), 1, 5).astype(np.float32)

    user_names = _names("u", n_users, 5)
    item_names = _names("i", n_items, 5)
    events = pa.table(
        {
            "user": user_names.take(pa.array(u, type=pa.int64())),
            "item": item_names.take(pa.array(i, type=pa.int64())),
            "timestamp": pa.array(EVENT_LOG_START + t.astype("timedelta64[s]"), pa.timestamp("s")),
            "rating": pa.array(rating, type=pa.float32()),
            "label": pa.array((rating >= 4).astype(np.int8), type=pa.int8()),
        }
    )
    offsets = np.concatenate([[0], np.cumsum(n_per_item)]).astype(np.int32)
    genres = pa.ListArray.from_arrays(
        pa.array(offsets), _names("genre", n_genres, 2).take(pa.array(top[has], type=pa.int64()))
    )
    items = pa.table(
        {"item": item_names, "genres": genres, "year": pa.array(year, type=pa.int16())}
    )
    return events, items


def write_event_log(
    out_dir: str | Path, *, test_fraction: float = 0.1, **kwargs: Any
) -> dict[str, Path]:
    """Generate an event log (``kwargs`` go to ``make_event_log``) and write it as Parquet.

    Writes ``train.parquet`` (the earliest events), ``test.parquet`` (about the last
    ``test_fraction`` of events; every test event is strictly later than every train event) and
    ``items.parquet`` into ``out_dir`` (created if missing). Event files have several row groups.
    Parquet has no seconds unit, so ``timestamp`` reads back as timestamp[ms] (the same instants).
    Returns {"train": path, "test": path, "items": path}.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    events, items = make_event_log(**kwargs)
    n = events.num_rows
    cut = int(round(n * (1.0 - test_fraction)))
    if 0 < cut < n:
        # Move the cut back to the start of its second: no timestamp is on both sides.
        ts = to_numpy(events.column("timestamp"))
        cut = int(np.searchsorted(ts, ts[cut], side="left"))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.parquet" for name in ("train", "test", "items")}
    for name, part in (("train", events.slice(0, cut)), ("test", events.slice(cut))):
        group = min(_MAX_ROW_GROUP, max(1, -(-part.num_rows // _ROW_GROUPS)))
        pq.write_table(part, paths[name], row_group_size=group)
    pq.write_table(items, paths["items"])
    return paths


def make_implicit_events(
    n_users: int = 300,
    n_items: int = 200,
    events_per_user: int = 20,
    n_genres: int = 8,
    k: int = 4,
    temperature: float = 0.5,
    seed: int = 0,
    taste: float = 0.5,
) -> tuple[pa.Table, np.ndarray]:
    """Implicit feedback from a planted low-rank preference model (task ranking).

    Planted score s(u, i) = b_i + <p_u, q_i> + t_u[genre of i], with p, q ~ N(0, 1/k) · 2,
    b_i ~ N(0, 0.5²), tastes t ~ N(0, taste²). Each user draws `events_per_user` distinct items with
    probability ∝ exp(s(u, i) / temperature) (without replacement); events of all users are
    interleaved in a random order, and each user's last event in that order is flagged.

    Returns ``(events, scores)``: events with columns user ("u0042"), item ("i0017"),
    genre ("g3", the item's genre), t (int64 event order), last (bool: the user's last event);
    scores the planted (n_users, n_items) float64 matrix.
    """
    rng = np.random.default_rng(seed)
    P = rng.normal(0, 2.0 / np.sqrt(k), (n_users, k))
    Q = rng.normal(0, 1.0 / np.sqrt(k), (n_items, k))
    b = rng.normal(0, 0.5, n_items)
    genre = rng.integers(0, n_genres, n_items)
    tastes = rng.normal(0, taste, (n_users, n_genres))
    scores = b[None, :] + P @ Q.T + tastes[:, genre]
    users, items = [], []
    for u in range(n_users):
        logits = scores[u] / temperature
        # Gumbel top-m: m distinct items by softmax without replacement
        g = logits + rng.gumbel(size=n_items)
        chosen = np.argsort(-g)[:events_per_user]
        users.append(np.full(len(chosen), u))
        items.append(rng.permutation(chosen))
    u_all = np.concatenate(users)
    i_all = np.concatenate(items)
    # interleave users keeping each user's own order
    keys = rng.random(len(u_all))
    order = np.lexsort((np.arange(len(u_all)), keys))
    per_user_rank = np.concatenate([np.arange(len(x)) for x in users])
    # sort each user's events by their position so that their order is kept
    pos = np.empty(len(u_all), dtype=np.int64)
    pos[order] = np.arange(len(u_all))
    for u in range(n_users):
        sel = np.flatnonzero(u_all == u)
        pos[sel] = np.sort(pos[sel])[per_user_rank[sel]]
    final = np.argsort(pos)
    u_all, i_all = u_all[final], i_all[final]
    last = np.zeros(len(u_all), dtype=bool)
    _, last_idx = np.unique(u_all[::-1], return_index=True)
    last[len(u_all) - 1 - last_idx] = True
    table = pa.table(
        {
            "user": pa.array([f"u{u:04d}" for u in u_all]),
            "item": pa.array([f"i{i:04d}" for i in i_all]),
            "genre": pa.array([f"g{genre[i]}" for i in i_all]),
            "t": pa.array(np.arange(len(u_all), dtype=np.int64)),
            "last": pa.array(last),
        }
    )
    return table, scores
