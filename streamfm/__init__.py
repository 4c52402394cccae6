"""streamfm: Factorization Machines trained out-of-core on streams of events, one case at a time.

Public API (imported lazily so that `streamfm --help` starts fast):
FMRegressor, FMClassifier, load_model, Spec, load_spec, train.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FMRegressor": "streamfm.estimators",
    "FMClassifier": "streamfm.estimators",
    "load_model": "streamfm.store.models",
    "Spec": "streamfm.spec",
    "load_spec": "streamfm.spec",
    "train": "streamfm.training.loop",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamfm' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
