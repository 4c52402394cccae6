"""streamfm: Factorization Machines trained out-of-core on streams of events, one case at a time.

Public API (imported lazily so that `streamfm --help` starts fast):
FMRegressor, FMClassifier, FMRanker, load_model, TrainedModel, Spec, load_spec, train, and the errors
StreamFMError, SpecError, DataError.
"""

# No `from __future__ import annotations` and no module-level imports: every name of this
# namespace is public API (`dir(streamfm)` lists `__all__`).

__version__ = "0.1.0"

_LAZY = {
    "FMRegressor": "streamfm.estimators",
    "FMClassifier": "streamfm.estimators",
    "FMRanker": "streamfm.estimators",
    "load_model": "streamfm.store.models",
    "TrainedModel": "streamfm.store.trained",
    "Spec": "streamfm.spec",
    "load_spec": "streamfm.spec",
    "train": "streamfm.training.loop",
    "StreamFMError": "streamfm.errors",
    "SpecError": "streamfm.errors",
    "DataError": "streamfm.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamfm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
