"""set, implicit, time, join builders and the mf preset against slow per-row references."""

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from streamfm.features.pipeline import FeaturePipeline
from streamfm.testing import round_trip as state_round_trip


def pipeline(*specs):
    return FeaturePipeline.from_specs(list(specs))


def named_rows(p, chunk):
    """Each row as {feature name: value}."""
    return [
        {
            p.feature_name(int(i)): float(v)
            for i, v in zip(chunk.indices[a:b], chunk.values[a:b], strict=True)
        }
        for a, b in zip(chunk.indptr[:-1], chunk.indptr[1:], strict=True)
    ]


def in_batches(p, table, size, training=True):
    rows = []
    for start in range(0, table.num_rows, size):
        batch = table.slice(start, size).combine_chunks().to_batches()[0]
        rows += named_rows(p, p.transform(batch, training=training))
    return rows


def round_trip(p, specs):
    q = FeaturePipeline.from_specs(specs)
    q.load_state_dict(state_round_trip(p.state_dict()))
    return q


# --- set
def test_set_from_lists_and_text_with_normalisation():
    batch = pa.record_batch(
        {"g": ["a|b|a", None, "c| ", "b"], "l": [["x", "y"], [], None, ["y", "y"]]}
    )
    p = pipeline(
        {"type": "set", "column": "g", "delimiter": "|", "normalize": "sqrt"},
        {"type": "set", "column": "l", "normalize": "mean"},
    )
    got = named_rows(p, p.transform(batch, training=True))
    r2 = 1 / np.sqrt(2)
    assert got == [
        {"g=a": pytest.approx(r2), "g=b": pytest.approx(r2), "l=x": 0.5, "l=y": 0.5},
        {},
        {"g=c": 1.0},
        {"g=b": 1.0, "l=y": 1.0},
    ]


def test_weighted_set_sums_repeated_weights():
    batch = pa.record_batch({"s": [["a", "b", "a"]], "w": [[1.0, 2.0, 0.5]]})
    p = pipeline({"type": "set", "column": "s", "weights_column": "w"})
    assert named_rows(p, p.transform(batch, training=True)) == [{"s=a": 1.5, "s=b": 2.0}]


# --- implicit
def events(n=400, n_users=12, n_items=30, seed=0):
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "user": [f"u{u}" for u in rng.integers(0, n_users, n)],
            "item": [f"i{i}" for i in rng.integers(0, n_items, n)],
        }
    )


def causal_reference(table, max_items, keep_latest, normalize="sqrt"):
    """Row by row: the distinct items of the user's earlier events (bounded), then remember."""
    history: dict[str, list[str]] = {}
    out = []
    for u, i in zip(table["user"].to_pylist(), table["item"].to_pylist(), strict=True):
        h = history.setdefault(u, [])
        distinct = list(dict.fromkeys(h))
        scale = 1 / np.sqrt(len(distinct)) if distinct and normalize == "sqrt" else 1.0
        out.append({f"implicit_user={x}": pytest.approx(scale) for x in distinct})
        if keep_latest:
            h.append(i)
            del h[:-max_items]
        elif len(h) < max_items:
            h.append(i)
    return out


@pytest.mark.parametrize("when_full", ["keep_latest", "keep_first"])
@pytest.mark.parametrize("batch_size", [1, 7, 400])
def test_causal_implicit_set_uses_only_earlier_events(when_full, batch_size):
    table = events()
    spec = {
        "type": "implicit",
        "key": "user",
        "items": "item",
        "max_items": 5,
        "when_full": when_full,
    }
    p = pipeline(spec)
    got = in_batches(p, table, batch_size)
    assert got == causal_reference(table, 5, when_full == "keep_latest")
    # Predicting uses the final histories and changes nothing.
    q = round_trip(p, [spec])
    last = table.slice(0, 3).to_batches()[0]
    a = named_rows(q, q.transform(last, training=False))
    assert a == named_rows(q, q.transform(last, training=False))
    assert a == named_rows(p, p.transform(last, training=False))


def test_flipped_implicit_set():
    table = events(50)
    p = pipeline({"type": "implicit", "key": "item", "items": "user", "normalize": "none"})
    got = in_batches(p, table, 8)
    seen: dict[str, list[str]] = {}
    for row, (u, i) in zip(
        got, zip(table["user"].to_pylist(), table["item"].to_pylist(), strict=True), strict=True
    ):
        assert set(row) == {f"implicit_item={x}" for x in seen.get(i, [])}
        seen.setdefault(i, []).append(u)


def test_implicit_from_side_table(tmp_path):
    pacsv.write_csv(
        pa.table({"user": ["a", "a", "b"], "item": ["x", "y", "x"]}), tmp_path / "rated.csv"
    )
    spec = {
        "type": "implicit",
        "key": "user",
        "items": "item",
        "source": "table",
        "table": {"path": str(tmp_path / "rated.csv")},
    }
    p = pipeline(spec)
    batch = pa.record_batch({"user": ["b", "a", "zz"]})
    r2 = pytest.approx(1 / np.sqrt(2))
    expected = [{"implicit_user=x": 1.0}, {"implicit_user=x": r2, "implicit_user=y": r2}, {}]
    assert named_rows(p, p.transform(batch, training=True)) == expected
    (tmp_path / "rated.csv").unlink()  # a saved model does not need the table any more
    q = round_trip(p, [spec])
    assert named_rows(q, q.transform(batch, training=False)) == expected


# --- time
def test_time_encodings_match_datetime():
    rng = np.random.default_rng(3)
    secs = rng.integers(0, 2_000_000_000, 100)
    batch = pa.record_batch(
        {"t": pa.array(secs.astype("datetime64[s]")), "u": [f"u{i % 3}" for i in range(100)]}
    )
    p = pipeline(
        {
            "type": "time",
            "column": "t",
            "encodings": ["hour", "weekday", "month", "day", "bin"],
            "bin_days": 10,
            "origin": "2000-01-01",
        },
        {"type": "time", "column": "t", "encodings": ["weekday"], "cross": ["u"], "name": "uw"},
    )
    got = named_rows(p, p.transform(batch, training=True))
    origin = datetime(2000, 1, 1, tzinfo=timezone.utc)
    for row, s, u in zip(got, secs, batch["u"].to_pylist(), strict=True):
        d = datetime.fromtimestamp(int(s), tz=timezone.utc)
        days = (d - origin).total_seconds() / 86400
        assert row == {
            f"time_t=hour={d.hour}": 1.0,
            f"time_t=weekday={d.weekday()}": 1.0,
            f"time_t=month={d.month}": 1.0,
            f"time_t=day={int(np.floor(days))}": 1.0,
            f"time_t=bin={int(np.floor(days / 10))}": 1.0,
            f"uw={u}|weekday={d.weekday()}": 1.0,
        }


def test_time_accepts_numbers_text_and_missing():
    p = pipeline({"type": "time", "column": "t", "encodings": ["hour"], "unit": "ms"})
    got = named_rows(p, p.transform(pa.record_batch({"t": [3_600_000 * 5, None]}), training=True))
    assert got == [{"time_t=hour=5": 1.0}, {}]
    q = pipeline({"type": "time", "column": "t", "encodings": ["hour"]})
    got = named_rows(
        q,
        q.transform(
            pa.record_batch({"t": ["2026-11-21 07:15:00", "2026-11-21T08:00:00"]}), training=True
        ),
    )
    assert got == [{"time_t=hour=7": 1.0}, {"time_t=hour=8": 1.0}]


# --- join and mf
def test_join_builds_side_features_once(tmp_path):
    (tmp_path / "items.csv").write_text("item|genres|year\ni1|Comedy,Drama|1990\ni2|Drama|2000\n")
    spec = {
        "type": "join",
        "key": "item",
        "name": "movie",
        "table": {"path": str(tmp_path / "items.csv"), "csv": {"delimiter": "|"}},
        "features": [
            {"type": "set", "column": "genres", "delimiter": ","},
            {"type": "numeric", "columns": ["year"], "transform": "standardize"},
        ],
    }
    p = pipeline(spec)
    batch = pa.record_batch({"item": ["i2", "i1", "i9"]})
    expected = [
        {"movie=genres=Drama": 1.0, "movie=year": 1.0},
        {"movie=genres=Comedy": 1.0, "movie=genres=Drama": 1.0, "movie=year": -1.0},
        {},
    ]
    assert named_rows(p, p.transform(batch, training=True)) == expected
    (tmp_path / "items.csv").unlink()
    q = round_trip(p, [spec])
    assert named_rows(q, q.transform(batch, training=False)) == expected


def test_mf_preset_is_user_and_item_groups():
    p = pipeline({"type": "mf", "user": "u", "item": "i"})
    assert [b.name for b in p.builders] == ["u", "i"]
    assert named_rows(p, p.transform(pa.record_batch({"u": ["a"], "i": [7]}), training=True)) == [
        {"u=a": 1.0, "i=7": 1.0}
    ]


def test_numeric_bins_categorical_prefix_and_time_format():
    p = pipeline(
        {"type": "numeric", "columns": ["age"], "bins": [18, 30, 50], "missing": "indicator"},
        {"type": "categorical", "columns": ["zip"], "prefix": 2},
        {"type": "time", "column": "date", "encodings": ["month"], "format": "%d-%b-%Y"},
    )
    batch = pa.record_batch(
        {
            "age": [10.0, 30.0, None, 70.0],
            "zip": ["02139", "02144", "94110", None],
            "date": ["01-Jan-1995", "15-Mar-1996", "01-Dec-1997", None],
        }
    )
    got = named_rows(p, p.transform(batch, training=True))
    assert got == [
        {"age[-inf,18)": 1.0, "zip=02": 1.0, "time_date=month=1": 1.0},
        {"age[30,50)": 1.0, "zip=02": 1.0, "time_date=month=3": 1.0},
        {"age=missing": 1.0, "zip=94": 1.0, "time_date=month=12": 1.0},
        {"age[50,inf)": 1.0},
    ]


def test_latin1_text_needs_the_encoding_option(tmp_path):
    from streamfm.config import SourceConfig
    from streamfm.errors import DataError
    from streamfm.sources import open_source

    (tmp_path / "m.csv").write_bytes("id|title\n1|Café Noir\n2|Amélie\n".encode("latin-1"))
    spec = [{"type": "categorical", "columns": ["title"]}]
    raw = next(
        open_source(SourceConfig(path=str(tmp_path / "m.csv"), csv={"delimiter": "|"})).batches()
    )[0]
    with pytest.raises(DataError, match="set source.csv.encoding"):
        pipeline(*spec).transform(raw, training=True)
    cfg = SourceConfig(path=str(tmp_path / "m.csv"), csv={"delimiter": "|", "encoding": "latin-1"})
    batch = next(open_source(cfg).batches())[0]
    p = pipeline(*spec)
    assert named_rows(p, p.transform(batch, training=True)) == [
        {"title=Café Noir": 1.0},
        {"title=Amélie": 1.0},
    ]
