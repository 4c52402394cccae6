"""Nested states (dicts and lists of JSON values and numpy arrays) as JSON plus named arrays.

Every stateful part of streamfm has `state_dict()` / `load_state_dict(state)`; a state is a tree
of dicts, lists, JSON scalars and numpy arrays. `split_arrays` moves the arrays out of the tree,
naming each by its path ("learner/params/V"), so that the rest is JSON; `join_arrays` puts them
back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ARRAY_KEY = "__array__"


def split_arrays(state: Any, arrays: dict[str, np.ndarray], path: str = "") -> Any:
    """`state` with every numpy array replaced by {"__array__": its path}, the arrays added to
    `arrays` under those paths (ValueError if a path is taken)."""
    if isinstance(state, np.ndarray):
        if path in arrays:
            raise ValueError(f"two arrays named {path!r}")
        arrays[path] = state
        return {ARRAY_KEY: path}
    if isinstance(state, dict):
        return {
            k: split_arrays(v, arrays, f"{path}/{k}" if path else str(k)) for k, v in state.items()
        }
    if isinstance(state, list | tuple):
        return [
            split_arrays(v, arrays, f"{path}/{i}" if path else str(i)) for i, v in enumerate(state)
        ]
    if isinstance(state, np.generic):
        return state.item()
    return state


def join_arrays(state: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of `split_arrays` (KeyError naming the array if one is missing)."""
    if isinstance(state, dict):
        if set(state) == {ARRAY_KEY}:
            name = state[ARRAY_KEY]
            if name not in arrays:
                raise KeyError(f"array {name!r} is missing")
            return arrays[name]
        return {k: join_arrays(v, arrays) for k, v in state.items()}
    if isinstance(state, list):
        return [join_arrays(v, arrays) for v in state]
    return state


def copy_state(state: Any) -> Any:
    """A deep copy of a state (arrays copied): a snapshot that later updates do not change."""
    if isinstance(state, np.ndarray):
        return state.copy()
    if isinstance(state, dict):
        return {k: copy_state(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return [copy_state(v) for v in state]
    return state
