"""Nested states (dicts/lists of JSON values and numpy arrays) split into JSON + named arrays."""

from __future__ import annotations

from typing import Any

import numpy as np


def split_arrays(state: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """Replace numpy arrays in a nested state by {"__array__": name}, moving them to `arrays`."""
    if isinstance(state, np.ndarray):
        name = f"{prefix}/{len(arrays)}"
        while name in arrays:
            name += "_"
        arrays[name] = state
        return {"__array__": name}
    if isinstance(state, dict):
        return {k: split_arrays(v, prefix, arrays) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return [split_arrays(v, prefix, arrays) for v in state]
    return state


def join_arrays(state: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of `split_arrays`."""
    if isinstance(state, dict):
        if set(state) == {"__array__"}:
            return arrays[state["__array__"]]
        return {k: join_arrays(v, arrays) for k, v in state.items()}
    if isinstance(state, list):
        return [join_arrays(v, arrays) for v in state]
    return state
