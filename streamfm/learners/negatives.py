"""Negative sampling for task ranking, causal and counter-based, as numba functions.

For the positive event number t (0-based over the whole training stream, all epochs: the
ranking learner's case counter), negative m is drawn from

    slot = slot_key(slot_key(iteration_key(seed, 0, STREAM_NEGATIVES), t), m)
    candidate c = 0, 1, ...: item of uniform(slot, c)

(`learners.sampling`), so a negative depends only on (seed, t, m) and on the catalogue before
event t: batch sizes change nothing and a resumed run draws what the uninterrupted one draws.

- ``uniform``: item floor(u · n) of the n items seen in earlier events;
- ``popularity``: item i with probability counts[i] / Σ counts (positive events so far), by a
  Fenwick tree over the counts (O(log n) per draw and per update).

A candidate equal to the positive, or (``exclude_seen``) among the user's last ``recent``
positives, is rejected and the next uniform of the slot is used, up to ``max_tries`` times;
then the positive has one negative fewer. No item is ever returned as a negative of itself.

Adaptive sampling (``negatives.candidates`` c > 1) happens in the kernels: negative m is the
highest scored of the draws m·c, …, m·c + c − 1 of the event (with c = 1, draw m: plain sampling).

`RecentPositives` is the bounded per-user filter: a ring of the last N positive item indices
per user (user = a feature id of the `ranking.user` builder), N · 4 bytes per user.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from streamfm.learners import sampling

_MIN = 64


def negatives_key(seed: int) -> np.uint64:
    """The key of every negative draw of a run of `seed`."""
    return np.uint64(_key(np.uint64(seed)))


@njit(cache=True, nogil=True)
def _key(seed):
    return sampling.iteration_key(seed, 0, sampling.STREAM_NEGATIVES)


# The functions the ranking kernels call per event (fenwick_add / _total / _find, in_recent,
# ring_add, draw_negative) take their arrays in tuples and index the tuple where an array is
# used. numba inlines them, but left per-call atomic reference-count updates of the arrays
# that its pruner could not remove when ring_add unpacked `recent` or took the arrays one by
# one (50-100 ns a call, measured in a loop of ring writes; 9 ns a call as written here). `draws`
# is the kernels' tuple (bit, rings): the Fenwick tree over the item counts and
# `RecentPositives.rings`.


@njit(cache=True, nogil=True, inline="always")
def fenwick_add(draws, i, delta):
    """counts[i] += delta in the Fenwick tree draws[0] (int64, size n + 1, 1-based)."""
    n = draws[0].shape[0] - 1
    j = i + 1
    while j <= n:
        draws[0][j] += delta
        j += j & (-j)


@njit(cache=True, nogil=True)
def fenwick_build(counts, n_items, size):
    """A Fenwick tree of `size` slots over counts[:n_items] (the rest 0)."""
    bit = np.zeros(size + 1, dtype=np.int64)
    for i in range(n_items):
        bit[i + 1] += counts[i]
    for j in range(1, size + 1):
        parent = j + (j & (-j))
        if parent <= size:
            bit[parent] += bit[j]
    return bit


@njit(cache=True, nogil=True, inline="always")
def fenwick_total(draws, n):
    """counts[0] + ... + counts[n - 1] of the Fenwick tree draws[0]."""
    total = 0
    j = n
    while j > 0:
        total += draws[0][j]
        j -= j & (-j)
    return total


@njit(cache=True, nogil=True, inline="always")
def fenwick_find(draws, target):
    """The smallest index i with prefix sum counts[0..i] > target (0 <= target < total) in the
    Fenwick tree draws[0]."""
    n = draws[0].shape[0] - 1
    step = 1
    while step * 2 <= n:
        step *= 2
    pos = 0
    rest = target
    while step > 0:
        nxt = pos + step
        if nxt <= n and draws[0][nxt] <= rest:
            pos = nxt
            rest -= draws[0][nxt]
        step //= 2
    return pos


@njit(cache=True, nogil=True, inline="always")
def in_recent(draws, slot, item):
    """Whether `item` is in ring `slot` (-1: none) of draws[1]."""
    if slot < 0:
        return False
    for a in range(draws[1].shape[1]):  # noqa: SIM110 - a plain loop in numba
        if draws[1][slot, a] == item:
            return True
    return False


@njit(cache=True, nogil=True, inline="always")
def ring_add(recent, user_fid, slot, item):
    """The ring of `user_fid` (its slot, -1: a new user gets the next one) takes `item`;
    `recent` is `RecentPositives.arrays()`: (sizes, slot_of, users, rings, heads)."""
    if slot < 0:
        slot = recent[0][0]
        recent[0][0] = slot + 1
        recent[1][user_fid] = slot
        recent[2][slot] = user_fid
        recent[4][slot] = 0
        for a in range(recent[3].shape[1]):
            recent[3][slot, a] = -1
    h = recent[4][slot]
    recent[3][slot, h] = item
    recent[4][slot] = h + 1 if h + 1 < recent[3].shape[1] else 0  # a compare, not a division


@njit(cache=True, nogil=True, inline="always")
def event_key(key, event):
    """The key of the draws of positive event number `event` (once per event, not per draw)."""
    return sampling.slot_key(key, event)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def uniform_candidate(draw_key, c, n_items):
    """Candidate c of the uniform sampler's draw `draw_key` (`slot_key(event_key, m)`): an
    item index in [0, n_items)."""
    cand = np.int64(sampling.uniform(draw_key, c) * n_items)
    return cand if cand < n_items else n_items - 1


@njit(cache=True, nogil=True, inline="always")
def acceptable(cand, pos_item, draws, exclude, slot):
    """Whether a drawn candidate is kept as a negative: not the positive and, with
    `exclude`, not among the user's recent positives (ring `slot`)."""
    return cand != pos_item and not (exclude and in_recent(draws, slot, cand))


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def draw_negative(
    event_key, m, n_items, pos_item, popularity, draws, total, exclude, slot, max_tries
):
    """Negative m of the event whose key is `event_key` (`event_key(key, t)`, see the module
    docstring); -1 if none was found."""
    if n_items == 0 or (n_items == 1 and pos_item == 0):
        return -1
    if popularity and total <= 0:
        return -1
    s = sampling.slot_key(event_key, m)
    for c in range(max_tries):
        if popularity:
            cand = fenwick_find(draws, np.int64(sampling.uniform(s, c) * total))
            if cand >= n_items:
                cand = n_items - 1
        else:
            cand = uniform_candidate(s, c, n_items)
        if acceptable(cand, pos_item, draws, exclude, slot):
            return cand
    return -1


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def kept_or_drawn(
    kept, event_key, m, n_items, pos_item, popularity, draws, total, exclude, slot, max_tries
):
    """Negative m of an event: `kept` (draw_negative's first try for it, drawn earlier by the
    caller; -1: none) when it is acceptable, else draw_negative's (the same result)."""
    if kept >= 0 and acceptable(kept, pos_item, draws, exclude, slot):
        return kept
    return draw_negative(
        event_key, m, n_items, pos_item, popularity, draws, total, exclude, slot, max_tries
    )


@njit(cache=True, nogil=True)
def sample_negatives(
    key, events, pos_items, n_items, n_neg, popularity, counts, exclude, recent, slots, max_tries
):
    """Negatives (int64, (len(events), n_neg); -1: none) of given events against a fixed
    catalogue state (what the kernel draws; for tests and for evaluation)."""
    bit = fenwick_build(counts, n_items, max(n_items, 1))
    total = 0
    for i in range(n_items):
        total += counts[i]
    out = np.full((events.shape[0], n_neg), -1, dtype=np.int64)
    draws = (bit, recent)
    for r in range(events.shape[0]):
        ekey = event_key(key, events[r])
        for m in range(n_neg):
            out[r, m] = draw_negative(
                ekey, m, n_items, pos_items[r], popularity, draws, total, exclude, slots[r],
                max_tries,
            )  # fmt: skip
    return out


class RecentPositives:
    """Each user's last N positive items (catalogue indices), a ring per user.

    `slot_of` maps a user's feature id to its ring (-1: no positive yet); `rings` (n_users, N)
    int32 holds item indices (-1: empty); `heads` the next position of each ring. The kernel
    adds users and items in place after `reserve`; `sizes[0]` is the number of users.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.sizes = np.zeros(1, dtype=np.int64)
        self.slot_of = np.full(0, -1, dtype=np.int32)
        self.users = np.zeros(0, dtype=np.int32)  # feature id of each ring
        self.rings = np.full((0, self.size), -1, dtype=np.int32)
        self.heads = np.zeros(0, dtype=np.int32)

    @property
    def n_users(self) -> int:
        return int(self.sizes[0])

    def reserve(self, n_features: int, more_users: int) -> None:
        """Room for `more_users` new users with feature ids below `n_features`."""
        # A user is a feature id, so there are never more than n_features rings: the bound keeps
        # a large chunk from reallocating every ring on each call.
        need = min(self.n_users + more_users, n_features)
        if self.rings.shape[0] < need:
            cap = max(_MIN, self.rings.shape[0])
            while cap < need:
                cap += cap // 2
            rings = np.full((cap, self.size), -1, dtype=np.int32)
            rings[: self.rings.shape[0]] = self.rings
            self.rings = rings
            for name in ("users", "heads"):
                old = getattr(self, name)
                new = np.zeros(cap, dtype=np.int32)
                new[: old.shape[0]] = old
                setattr(self, name, new)
        if self.slot_of.shape[0] < n_features:
            cap = max(_MIN, self.slot_of.shape[0])
            while cap < n_features:
                cap += cap // 2
            new = np.full(cap, -1, dtype=np.int32)
            new[: self.slot_of.shape[0]] = self.slot_of
            self.slot_of = new

    def arrays(self) -> tuple:
        return self.sizes, self.slot_of, self.users, self.rings, self.heads

    def items_of(self, user_fids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CSR (indptr, item indices) of the recent positives of each user feature id."""
        fids = np.asarray(user_fids, dtype=np.int64)
        slots = np.full(fids.shape, -1, dtype=np.int64)
        ok = (fids >= 0) & (fids < self.slot_of.shape[0])
        slots[ok] = self.slot_of[fids[ok]]
        rows = [
            self.rings[s][self.rings[s] >= 0] if s >= 0 else np.zeros(0, np.int32) for s in slots
        ]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(r) for r in rows])
        items = np.concatenate(rows) if rows else np.zeros(0, np.int32)
        return indptr, items.astype(np.int64)

    def state_dict(self) -> dict[str, Any]:
        n = self.n_users
        return {
            "size": self.size,
            "users": self.users[:n],
            "rings": self.rings[:n],
            "heads": self.heads[:n],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["size"]) != self.size:
            raise ValueError(
                f"recent positives: saved with recent={state['size']}, not {self.size}"
            )
        users = np.asarray(state["users"], dtype=np.int32)
        rings = np.asarray(state["rings"], dtype=np.int32)
        heads = np.asarray(state["heads"], dtype=np.int32)
        n = users.shape[0]
        if rings.shape != (n, self.size) or heads.shape != (n,):
            raise ValueError("recent positives: arrays do not match")
        if n and (users.min() < 0 or heads.min() < 0 or heads.max() >= self.size):
            raise ValueError("recent positives: bad user ids or ring positions")
        self.sizes[0] = n
        self.users, self.rings, self.heads = users.copy(), rings.copy(), heads.copy()
        self.slot_of = np.full(max(int(users.max(initial=-1)) + 1, _MIN), -1, dtype=np.int32)
        self.slot_of[users] = np.arange(n, dtype=np.int32)
