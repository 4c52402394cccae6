"""Task ranking: the BPR gradient and steps against numpy, the negative sampler, batch-size
independence and exact resume, spec validation (synthetic data only)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from reference import assert_same_state

from streamfm.datasets import make_implicit_events
from streamfm.errors import SpecError
from streamfm.learners.negatives import negatives_key, sample_negatives
from streamfm.spec import parse_spec
from streamfm.store.trained import TrainedModel
from streamfm.training.loop import Trainer, train

FEATURES = [
    {"type": "categorical", "columns": ["user"], "name": "user"},
    {"type": "categorical", "columns": ["item"], "name": "item"},
    {"type": "categorical", "columns": ["genre"], "name": "genre"},
]


def ranking_spec(path="unused.parquet", **over):
    spec = {
        "source": {"path": str(path)},
        "task": "ranking",
        "features": FEATURES,
        "ranking": {"item": "item", "item_features": ["genre"]},
        "model": {"k": 3, "seed": 7, "init_std": 0.3},
        "learner": {"method": "sgd", "learning_rate": 0.05, "epochs": 1},
        "checkpoint": {"enabled": False},
    }
    for key, value in over.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and key in spec else value
    return parse_spec(spec)


# --- numpy reference of one BPR pair


def fm(theta, x):
    w0, w, V = theta
    q = V.T @ x
    return w0 + w @ x + 0.5 * (q @ q - ((V**2).T @ (x**2)).sum())


def fm_grad(theta, x):
    w0, w, V = theta
    q = V.T @ x
    return x.copy(), x[:, None] * q[None, :] - V * (x**2)[:, None]


def bpr_loss(theta, xp, xn):
    d = fm(theta, xp) - fm(theta, xn)
    return np.log1p(np.exp(-d))


def bpr_grad(theta, xp, xn):
    d = fm(theta, xp) - fm(theta, xn)
    g = -1.0 / (1.0 + np.exp(d))
    gwp, gvp = fm_grad(theta, xp)
    gwn, gvn = fm_grad(theta, xn)
    return g * (gwp - gwn), g * (gvp - gvn)


def _learn_rows(model, rows):
    batch = pa.RecordBatch.from_pylist(rows)
    chunk = model.pipeline.transform(batch, training=True)
    model.sync_features()
    return model.learner.learn(chunk, np.ones(len(rows))), chunk


def _pair_setup(method="sgd", regs=None, **learner):
    """A model whose catalogue holds item b (genre y); then the event (u1, a, genre x) has b
    as its only possible negative."""
    spec = ranking_spec(
        learner={"method": method, "learning_rate": 0.01, **learner, **(regs or {})},
        groups={"genre": {"factors": 0.03, "linear": 0.02}} if regs else {},
    )
    model = TrainedModel.from_spec(spec)
    _learn_rows(model, [{"user": "u2", "item": "b", "genre": "y"}])
    batch = pa.RecordBatch.from_pylist([{"user": "u1", "item": "a", "genre": "x"}])
    chunk = model.pipeline.transform(batch, training=True)
    model.sync_features()
    p = model.params if hasattr(model, "params") else model.learner.params
    n = p.n_features
    names = {model.pipeline.feature_name(i): i for i in range(n)}
    xp = np.zeros(n)
    xn = np.zeros(n)
    for name in ("user=u1", "item=a", "genre=x"):
        xp[names[name]] = 1.0
    for name in ("user=u1", "item=b", "genre=y"):
        xn[names[name]] = 1.0
    return model, chunk, xp, xn, names


def _theta(p):
    n = p.n_features
    return (float(p.w0[0]), p.w[:n].astype(np.float64), p.V[:n].astype(np.float64))


def test_bpr_gradient_equals_finite_differences():
    model, _chunk, xp, xn, _ = _pair_setup()
    w0, w, V = _theta(model.learner.params)
    gw, gv = bpr_grad((w0, w, V), xp, xn)
    eps = 1e-6
    for j in range(len(w)):
        wp, wm = w.copy(), w.copy()
        wp[j] += eps
        wm[j] -= eps
        fd = (bpr_loss((w0, wp, V), xp, xn) - bpr_loss((w0, wm, V), xp, xn)) / (2 * eps)
        assert gw[j] == pytest.approx(fd, abs=1e-7)
        for f in range(V.shape[1]):
            Vp, Vm = V.copy(), V.copy()
            Vp[j, f] += eps
            Vm[j, f] -= eps
            fd = (bpr_loss((w0, w, Vp), xp, xn) - bpr_loss((w0, w, Vm), xp, xn)) / (2 * eps)
            assert gv[j, f] == pytest.approx(fd, abs=1e-7)


@pytest.mark.parametrize("method", ["sgd", "adagrad"])
def test_one_bpr_step_equals_numpy_reference(method):
    regs = {"reg_linear": 0.01, "reg_factors": 0.05}
    model, chunk, xp, xn, names = _pair_setup(method, regs)
    learner = model.learner
    p = learner.params
    theta = _theta(p)
    gw, gv = bpr_grad(theta, xp, xn)
    n = p.n_features
    groups = p.group[:n]
    genre = model.pipeline.space.groups.index("genre")
    reg_w = np.where(groups == genre, 0.02, 0.01)
    reg_v = np.where(groups == genre, 0.03, 0.05)
    item_side = np.isin(groups, learner.item_groups)
    touched = (xp != 0) | (xn != 0)
    w_touched = touched & item_side
    gw = np.where(w_touched, gw + reg_w * theta[1], 0.0)
    gv = np.where(touched[:, None], gv + reg_v[:, None] * theta[2], 0.0)
    lr = 0.01
    if method == "sgd":
        want_w, want_V = theta[1] - lr * gw, theta[2] - lr * gv
    else:
        aw = p.acc_w[:n].astype(np.float64) + gw**2
        aV = p.acc_V[:n].astype(np.float64) + gv**2
        want_w = theta[1] - lr * gw / np.sqrt(aw)
        want_V = theta[2] - lr * gv / np.sqrt(aV)
    before = fm(theta, xp)
    out = learner.learn(chunk, np.ones(1))
    assert out[0] == pytest.approx(before, rel=1e-5)  # the positive's score before the update
    np.testing.assert_allclose(p.w[:n], want_w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p.V[:n], want_V, rtol=1e-5, atol=1e-7)
    assert p.w[names["user=u1"]] == theta[1][names["user=u1"]]  # context w not touched
    assert learner.catalogue.n_items == 2 and list(learner.catalogue.counts) == [1, 1]


def test_logistic_sampled_steps_positive_then_negative():
    spec = ranking_spec(ranking={"item": "item", "loss": "logistic"})
    model = TrainedModel.from_spec(spec)
    _learn_rows(model, [{"user": "u2", "item": "b", "genre": "y"}])
    w0 = float(model.learner.params.w0[0])
    _learn_rows(model, [{"user": "u1", "item": "a", "genre": "x"}])
    # w0 moved up for the positive and down for the negative: both steps were made
    assert model.learner.params.w0[0] != w0
    assert model.learner.last_sampled[1][0]


# --- the sampler


@pytest.mark.parametrize("popularity", [False, True])
def test_sampler_never_returns_the_positive_and_respects_exclude_seen(popularity):
    rng = np.random.default_rng(0)
    n_items, n = 30, 5000
    counts = rng.integers(0, 20, n_items)
    counts[0] = 0
    recent = np.full((5, 8), -1, dtype=np.int32)
    for s in range(5):
        recent[s, : s + 3] = rng.choice(n_items, s + 3, replace=False)
    events = np.arange(n, dtype=np.int64)
    pos = rng.integers(0, n_items, n)
    slots = rng.integers(-1, 5, n)
    out = sample_negatives(
        negatives_key(3), events, pos, n_items, 3, popularity, counts, True, recent, slots, 50
    )
    assert (out >= 0).all()
    assert not (out == pos[:, None]).any()
    for r in range(n):
        if slots[r] >= 0:
            assert not np.isin(out[r], recent[slots[r]]).any()
    if popularity:
        assert not (out == 0).any()  # never drawn: no positive event yet
        assert not np.isin(out, np.flatnonzero(counts == 0)).any()
    again = sample_negatives(
        negatives_key(3), events, pos, n_items, 3, popularity, counts, True, recent, slots, 50
    )
    assert np.array_equal(out, again)  # a function of (seed, event, negative) only
    other = sample_negatives(
        negatives_key(4), events, pos, n_items, 3, popularity, counts, True, recent, slots, 50
    )
    assert not np.array_equal(out, other)


def test_sampler_gives_up_when_every_item_is_excluded():
    recent = np.array([[0, 1, 2]], dtype=np.int32)
    out = sample_negatives(
        negatives_key(0), np.arange(10), np.full(10, 0), 3, 1, False, np.ones(3, np.int64),
        True, recent, np.zeros(10, np.int64), 5,
    )  # fmt: skip
    assert (out == -1).all()


# --- streams: batch sizes, resume


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranking-data")
    ev, _ = make_implicit_events(n_users=120, n_items=60, events_per_user=12, seed=2)
    pq.write_table(ev.slice(0, 800), folder / "a.parquet", row_group_size=150)
    pq.write_table(ev.slice(800), folder / "b.parquet", row_group_size=150)
    return folder


def _stream_spec(folder, out, batch_size=200, **over):
    return ranking_spec(
        folder,
        source={"path": str(folder), "batch_size": batch_size},
        ranking={
            "item": "item",
            "item_features": ["genre"],
            "negatives": {
                "sampler": "popularity",
                "per_positive": 2,
                "exclude_seen": True,
                "recent": 5,
            },
        },
        learner={"method": "adagrad", "learning_rate": 0.1, "epochs": 2},
        output={"dir": str(out), "progress_every_seconds": 1e-6},
        **over,
    )


def _state(model):
    from streamfm.store.state import copy_state

    return copy_state(model.learner.state_dict())


def test_batch_size_changes_nothing(events, tmp_path):
    a = train(_stream_spec(events, tmp_path / "a", batch_size=7))
    b = train(_stream_spec(events, tmp_path / "b", batch_size=500))
    assert_same_state(_state(a.model), _state(b.model))
    assert a.history[-1]["sampled_auc"] == b.history[-1]["sampled_auc"]
    assert a.model.learner.catalogue.n_items == 60


def test_interrupted_and_resumed_run_is_exact(events, tmp_path):
    ref = train(_stream_spec(events, tmp_path / "ref"))
    ck = {"checkpoint": {"enabled": True, "dir": str(tmp_path / "ck")}}
    spec = _stream_spec(events, tmp_path / "run", **ck)
    stops = iter([700, 1500, 2300])
    limit = [next(stops)]
    trainer = None

    def progress(event):
        if event.get("rows", 0) >= limit[0] and trainer is not None:
            trainer.request_stop()

    interrupted = 0
    for _ in range(3):
        trainer = Trainer(spec, progress, resume=trainer is not None)
        result = trainer.run_training()
        if result.summary["interrupted"] is False:
            break
        interrupted += 1
        limit[0] = next(stops, 10**9)
    assert interrupted >= 2
    trainer = Trainer(spec, None, resume=True)
    result = trainer.run_training()
    assert_same_state(_state(ref.model), _state(result.model))
    saved = TrainedModel.load(result.model_path)
    assert_same_state(_state(ref.model), _state(saved))  # the catalogue is in the model file


# --- spec validation


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"ranking": {"item": "items"}},
            r"ranking.item: 'items' names no feature builder \(builders: \['user', 'item', 'genre'\]\)",
        ),
        (
            {"ranking": {"item": "item", "item_features": ["genres"]}},
            r"ranking.item_features\[0\]: 'genres'",
        ),
        ({"ranking": {"item": "item", "user": "usr"}}, "ranking.user: 'usr'"),
        ({"ranking": {"item": "item", "loss": "warp"}}, "ranking.loss"),
        (
            {"ranking": {"item": "item", "negatives": {"sampler": "adaptive"}}},
            "ranking.negatives.sampler",
        ),
        ({"ranking": None}, "ranking: required for task ranking"),
        ({"learner": {"method": "als"}}, "task ranking learns with sgd or adagrad"),
        ({"learner": {"threads": 2}}, "learner.threads: task ranking learns on one thread"),
        ({"target": "rating"}, "target.positive"),
        ({"validation": {"split": "leave_last_out", "key": "nobody"}}, "validation.key: 'nobody'"),
    ],
)
def test_spec_errors_name_the_key(over, message):
    with pytest.raises(SpecError, match=message):
        ranking_spec(**over)


def test_ranking_section_only_for_ranking():
    with pytest.raises(SpecError, match="ranking: only for task ranking"):
        ranking_spec(task="regression", target="y")


@pytest.mark.parametrize("item_features", [[], ["genre"]])  # the MF and the CSR kernel
def test_adaptive_negative_is_the_highest_scored_of_its_candidates(item_features):
    """candidates: 4: the step's negative is the argmax of the model's scores (before the step)
    over the 4 draws sample_negatives gives for that event (slots m * 4 + c)."""
    features = FEATURES if item_features else FEATURES[:2]
    spec = ranking_spec(
        features=features,
        ranking={
            "item": "item",
            "item_features": item_features,
            "negatives": {"sampler": "uniform", "per_positive": 1, "candidates": 4},
        },
    )
    model = TrainedModel.from_spec(spec)
    rows = [{"user": f"u{i % 3}", "item": f"i{i}", "genre": f"g{i % 2}"} for i in range(12)]
    if not item_features:
        rows = [{k: v for k, v in r.items() if k != "genre"} for r in rows]
    _learn_rows(model, rows)
    learner, cat = model.learner, model.learner.catalogue
    p = learner.params
    event = {"user": "u1", "item": "new"} | ({"genre": "g0"} if item_features else {})
    batch = pa.RecordBatch.from_pylist([event])
    chunk = model.pipeline.transform(batch, training=True)
    model.sync_features()
    draws = sample_negatives(
        negatives_key(spec.model.seed), np.array([learner.t]), np.array([-1]), cat.n_items, 4,
        False, cat.counts, False, np.full((1, 1), -1, np.int32), np.array([-1]), 20,
    )[0]  # fmt: skip
    theta = _theta(p)
    n = p.n_features
    context = np.zeros(n)
    for nz in range(chunk.indptr[0], chunk.indptr[1]):
        if p.group[chunk.indices[nz]] not in learner.item_groups:
            context[chunk.indices[nz]] = chunk.values[nz]
    scores = []
    for c in draws:
        x = context.copy()
        a, b = cat.indptr[c], cat.indptr[c + 1]
        x[cat.indices[a:b]] += cat.values[a:b]
        scores.append(fm(theta, x))
    best = int(draws[int(np.argmax(scores))])
    assert len(set(np.round(scores, 9))) > 1  # the draws differ: argmax means something
    before = p.w[cat.item_fid].copy()
    learner.learn(chunk, np.ones(1))
    moved = np.flatnonzero(p.w[cat.item_fid[: len(before)]] != before)
    assert list(moved) == [best]
    assert learner.last_layout == ("csr" if item_features else "mf")


@pytest.mark.parametrize("exclude_seen", [False, True])
@pytest.mark.parametrize("layout", ["mf", "csr"])
def test_rings_hold_each_users_last_positives(events, exclude_seen, layout):
    """After two chunks the recent-positive rings equal a plain replay of the events (ring of
    each user in order of first positive, written at the head, the head wrapping), whether the
    kernel wrote them at once (exclude_seen: its draws read them) or left them for after the
    pass (`ranking._learn_pending`), through the MF-layout kernel (user + item) and the CSR one
    (+ genre)."""
    size = 3
    spec = ranking_spec(
        features=FEATURES if layout == "csr" else FEATURES[:2],
        ranking={
            "item": "item",
            "item_features": ["genre"] if layout == "csr" else [],
            "negatives": {"per_positive": 2, "exclude_seen": exclude_seen, "recent": size},
        },
    )
    model = TrainedModel.from_spec(spec)
    table = pq.read_table(events / "a.parquet")
    rows = table.select(["user", "item", "genre"]).to_pylist()
    users, items = [], []
    for part in (rows[:300], rows[300:]):
        _, chunk = _learn_rows(model, part)
        assert model.learner.last_layout == layout
        group = model.learner.params.group
        for r in range(chunk.n_rows):
            ids = chunk.indices[chunk.indptr[r] : chunk.indptr[r + 1]]
            users.append(int(ids[group[ids] == model.learner.user_group][0]))
            items.append(int(ids[group[ids] == model.learner.item_group][0]))
    index = model.learner.catalogue.item_index(np.array(items)).tolist()
    slot, rings, heads = {}, [], []
    for user, item in zip(users, index, strict=True):
        s = slot.setdefault(user, len(slot))
        if s == len(rings):
            rings.append([-1] * size)
            heads.append(0)
        rings[s][heads[s]] = item
        heads[s] = (heads[s] + 1) % size
    state = model.learner.recent.state_dict()
    assert state["users"].tolist() == list(slot)
    assert state["rings"].tolist() == rings
    assert state["heads"].tolist() == heads
