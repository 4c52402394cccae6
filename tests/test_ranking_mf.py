"""The MF-layout BPR kernel (`ranking._mf_pass`) is bit for bit the CSR one (`_rank_pass`)."""

from __future__ import annotations

import numpy as np
import pytest
from reference import assert_same_state

import streamfm.learners.ranking as ranking
from streamfm.datasets import make_implicit_events
from streamfm.learners.memory_hints import HINT_MIN_BYTES
from streamfm.spec import parse_spec
from streamfm.store.trained import TrainedModel

MF = [
    {"type": "categorical", "columns": ["user"], "name": "user"},
    {"type": "categorical", "columns": ["item"], "name": "item"},
]


def _model(
    method, sampler, per_positive, exclude_seen, candidates=1, features=MF, item_features=(), k=5
):
    spec = {
        "source": {"path": "unused.parquet"},
        "task": "ranking",
        "features": features,
        "ranking": {
            "item": "item",
            "user": "user",
            "item_features": list(item_features),
            "negatives": {
                "sampler": sampler,
                "per_positive": per_positive,
                "candidates": candidates,
                "exclude_seen": exclude_seen,
                "recent": 4,
            },
        },
        "model": {"k": k, "seed": 3, "init_std": 0.3},
        "learner": {
            "method": method,
            "learning_rate": 0.1,
            "reg_linear": 0.01,
            "reg_factors": 0.02,
        },  # fmt: skip
        "checkpoint": {"enabled": False},
    }
    return TrainedModel.from_spec(parse_spec(spec))


def _learn(model, events, pieces):
    outs, layouts = [], []
    for piece in np.array_split(np.arange(events.num_rows), pieces):
        batch = events.take(piece)
        chunk = model.pipeline.transform(batch, training=True)
        model.sync_features()
        outs.append(model.learner.learn(chunk, np.ones(len(piece))))
        outs.append(model.learner.last_sampled[0])
        layouts.append(model.learner.last_layout)
    return outs, layouts


@pytest.mark.parametrize(
    ("method", "sampler", "per_positive", "exclude_seen", "candidates"),
    [
        ("sgd", "uniform", 1, False, 1),
        ("sgd", "popularity", 3, True, 1),
        ("adagrad", "uniform", 4, True, 1),
        ("adagrad", "popularity", 1, False, 1),
        ("sgd", "uniform", 2, True, 3),
    ],
)
def test_mf_kernel_equals_csr_kernel(
    monkeypatch, method, sampler, per_positive, exclude_seen, candidates
):
    events, _ = make_implicit_events(n_users=60, n_items=40, events_per_user=15, seed=5)
    fast = _model(method, sampler, per_positive, exclude_seen, candidates)
    fast_out, layouts = _learn(fast, events, 3)
    assert layouts == ["mf"] * 3
    monkeypatch.setattr(ranking, "mf_layout", lambda *args: False)
    slow = _model(method, sampler, per_positive, exclude_seen, candidates)
    slow_out, layouts = _learn(slow, events, 3)
    assert layouts == ["csr"] * 3
    for a, b in zip(fast_out, slow_out, strict=True):
        assert np.array_equal(a, b)
    assert_same_state(fast.learner.state_dict(), slow.learner.state_dict())


@pytest.mark.parametrize(
    ("method", "per_positive", "exclude_seen", "candidates"),
    [("sgd", 1, False, 1), ("adagrad", 2, True, 3)],
)
def test_mf_kernel_equals_csr_kernel_where_it_draws_ahead(
    monkeypatch, method, per_positive, exclude_seen, candidates
):
    # V of 512 KiB or more: the kernels hint memory ahead, and the MF one keeps the uniform
    # draws it made for the hints (a path the small models above never take).
    events, _ = make_implicit_events(n_users=2500, n_items=300, events_per_user=6, seed=7)
    models = []
    for layout in ("mf", "csr"):
        if layout == "csr":
            monkeypatch.setattr(ranking, "mf_layout", lambda *args: False)
        model = _model(method, "uniform", per_positive, exclude_seen, candidates, k=64)
        outs, layouts = _learn(model, events, 3)
        assert layouts == [layout] * 3
        assert model.learner.params.V.nbytes >= HINT_MIN_BYTES
        models.append((model, outs))
    (fast, fast_out), (slow, slow_out) = models
    for a, b in zip(fast_out, slow_out, strict=True):
        assert np.array_equal(a, b)
    assert_same_state(fast.learner.state_dict(), slow.learner.state_dict())
    # Other chunks: the first events of each pass draw instead of taking kept draws.
    other = _model(method, "uniform", per_positive, exclude_seen, candidates, k=64)
    _learn(other, events, 5)
    assert_same_state(other.learner.state_dict(), slow.learner.state_dict())


def test_other_layouts_take_the_csr_kernel():
    events, _ = make_implicit_events(n_users=30, n_items=20, events_per_user=5, seed=1)
    genre = {"type": "categorical", "columns": ["genre"], "name": "genre"}
    model = _model("sgd", "uniform", 1, False, features=[*MF, genre], item_features=["genre"])
    _outs, layouts = _learn(model, events, 1)
    assert layouts == ["csr"]
