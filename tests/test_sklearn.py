"""FMRegressor / FMClassifier as scikit-learn estimators: the estimator checks, pipelines and
model selection, labels, one-vs-rest, sample weights, defaults on unscaled data, DataFrames."""

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import yaml  # noqa: E402
from reference import auc  # noqa: E402
from sklearn.base import clone, is_classifier, is_regressor  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.multiclass import OneVsRestClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import streamfm  # noqa: E402
from streamfm import FMClassifier, FMRegressor  # noqa: E402
from streamfm.datasets import make_planted_fm  # noqa: E402
from streamfm.errors import DataError, SpecError  # noqa: E402
from streamfm.estimators import expected_failed_checks  # noqa: E402


@parametrize_with_checks(
    [FMRegressor(), FMClassifier(), FMClassifier(n_jobs=2, optimizer="sgd", shuffle=False)],
    expected_failed_checks=expected_failed_checks,
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_expected_failures_have_reasons_and_do_fail():
    from sklearn.utils.estimator_checks import check_estimator

    for est in (FMRegressor(), FMClassifier()):
        expected = expected_failed_checks(est)
        assert all(len(reason) > 40 for reason in expected.values())
        results = check_estimator(est, on_fail=None, expected_failed_checks=expected)
        status = {r["check_name"]: r["status"] for r in results}
        assert {status[name] for name in expected if name in status} == {"xfail"}
        assert "failed" not in status.values()


def blobs(n=600, seed=0, labels=("no", "yes")):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(labels), n)
    X = rng.normal(size=(n, 4)) + 1.5 * np.eye(len(labels), 4)[y]
    return X * [1, 100, 0.01, 1000], np.asarray(labels)[y]


def test_pipelines_model_selection_and_tags():
    X, y = blobs()
    assert is_classifier(FMClassifier()) and is_regressor(FMRegressor())
    pipe = make_pipeline(StandardScaler(), FMClassifier(epochs=3))
    pipe.fit(X, y)
    assert pipe.predict_proba(X).shape == (600, 2) and set(pipe.predict(X)) <= {"no", "yes"}
    assert 0.7 < pipe.score(X, y) <= 1
    scores = cross_val_score(pipe, X, y, cv=3)
    assert np.isfinite(scores).all() and scores.min() > 0.7
    yr = X[:, 0] + 0.01 * X[:, 1]
    search = GridSearchCV(FMRegressor(epochs=3), {"learning_rate": [0.02, 0.1]}, cv=3).fit(X, yr)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.score(X, yr) > 0.5
    assert clone(FMRegressor(k=3)).get_params()["k"] == 3


def test_not_fitted_is_scikit_learns_error():
    with pytest.raises(NotFittedError):
        FMRegressor().predict(np.ones((2, 2)))
    with pytest.raises(NotFittedError):
        FMClassifier().predict_proba(np.ones((2, 2)))


def test_any_two_labels_and_their_order():
    X, y = blobs(labels=("spam", "ham"))  # classes_ are sorted: ham < spam, spam is positive
    m = FMClassifier().fit(X, y)
    assert m.classes_.tolist() == ["ham", "spam"]
    p = m.predict_proba(X)
    np.testing.assert_array_equal(m.predict(X), np.where(p[:, 1] >= 0.5, "spam", "ham"))
    assert auc((y == "spam").astype(int), p[:, 1]) > 0.9
    # the same problem with booleans and with 0/1 gives the same model
    b = FMClassifier().fit(X, y == "spam")
    n = FMClassifier().fit(X, (y == "spam").astype(int))
    np.testing.assert_array_equal(b.predict_proba(X), p)
    np.testing.assert_array_equal(n.predict_proba(X), p)
    assert b.classes_.tolist() == [False, True]


def test_one_vs_rest_is_one_binary_model_per_class():
    X, y = blobs(900, labels=("a", "b", "c"))
    m = FMClassifier(epochs=4).fit(X, y)
    assert m.classes_.tolist() == ["a", "b", "c"] and len(m.learners_) == 3
    for i, c in enumerate(m.classes_):
        one = FMClassifier(epochs=4).fit(X, y == c)
        np.testing.assert_array_equal(m.w_[i], one.w_)
        np.testing.assert_array_equal(m.V_[i], one.V_)
        np.testing.assert_array_equal(m.decision_function(X)[:, i], one.decision_function(X))
    p = m.predict_proba(X)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    from sklearn.linear_model import LogisticRegression

    linear = LogisticRegression().fit(X / X.std(axis=0), y).score(X / X.std(axis=0), y)
    assert np.mean(m.predict(X) == y) > linear - 0.03
    # threads give the same models
    threaded = FMClassifier(epochs=4, n_jobs=2).fit(X, y)
    np.testing.assert_array_equal(threaded.predict_proba(X), p)
    # scikit-learn's own one-vs-rest works too
    ovr = OneVsRestClassifier(FMClassifier(epochs=4)).fit(X, y)
    assert np.mean(ovr.predict(X) == y) > linear - 0.03


def test_multiclass_partial_fit_and_save_load(tmp_path):
    X, y = blobs(900, labels=("a", "b", "c"))
    m = FMClassifier(shuffle=False)
    for lo in range(0, 900, 300):
        m.partial_fit(X[lo : lo + 300], y[lo : lo + 300], classes=["a", "b", "c"])
    m.save(tmp_path / "m.sfm")
    loaded = streamfm.load_model(tmp_path / "m.sfm")
    np.testing.assert_array_equal(loaded.predict_proba(X), m.predict_proba(X))
    assert loaded.classes_.tolist() == ["a", "b", "c"]
    with pytest.raises(DataError, match="differ from the fitted"):
        m.partial_fit(X[:10], y[:10], classes=["a", "b"])


def test_sample_weight_weights_each_case():
    X, y, _ = make_planted_fm(2_000, n_features=50, seed=3)
    kw = {"shuffle": False, "epochs": 2}
    w = np.where(np.arange(2_000) % 4 == 0, 0.0, 1.0)
    keep = w > 0
    # weight 0 is removing the row; all ones is no weights at all
    a = FMRegressor(**kw).fit(X, y, sample_weight=w)
    b = FMRegressor(**kw).fit(X[keep], y[keep])
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    ones = FMRegressor(**kw).fit(X, y, sample_weight=np.ones(2_000))
    none = FMRegressor(**kw).fit(X, y)
    np.testing.assert_array_equal(ones.V_, none.V_)
    # weights matter: heavy weights on the first half pull predictions towards its targets
    y2 = np.where(np.arange(2_000) < 1_000, 5.0, -5.0)
    heavy = FMRegressor(**kw).fit(X, y2, sample_weight=np.where(y2 > 0, 10.0, 0.1))
    assert heavy.predict(X).mean() > 2.0
    # partial_fit takes them too, and bad weights are named
    FMClassifier().partial_fit(X, y > 0, sample_weight=np.full(2_000, 0.5))
    with pytest.raises(DataError, match="row 3: sample_weight must be finite and >= 0"):
        FMRegressor().fit(X[:5], y[:5], sample_weight=[1, 1, 1, -1, 1])
    with pytest.raises(DataError, match="all weights are zero"):
        FMRegressor().fit(X[:5], y[:5], sample_weight=np.zeros(5))


def test_defaults_do_not_diverge_on_unscaled_data():
    rng = np.random.default_rng(0)
    X = rng.normal(100, 30, size=(2_000, 3))  # the case: diverged at case 4
    y = X @ [0.5, -0.2, 0.1] + rng.normal(size=2_000)
    m = FMRegressor().fit(X[:1_500], y[:1_500])
    assert m.score(X[1_500:], y[1_500:]) > 0.95
    # large targets (prices) and columns of very different magnitudes
    X2 = rng.normal(size=(2_000, 4)) * [1e-3, 1, 1e3, 1e6]
    y2 = 2e5 + 3e4 * (X2[:, 1] + X2[:, 2] / 1e3)
    r = FMRegressor().fit(X2[:1_500], y2[:1_500])
    assert r.score(X2[1_500:], y2[1_500:]) > 0.9
    # sparse columns are scaled by their largest value (one-hot columns stay 1)
    S = sp.csr_matrix(X * (rng.random(X.shape) < 0.5))
    ys = S @ [0.5, -0.2, 0.1] + rng.normal(size=2_000)
    s = FMRegressor().fit(S[:1_500], ys[:1_500])
    assert s.score(S[1_500:], ys[1_500:]) > 0.9
    assert np.allclose(s.x_scale_, abs(S[:1_500]).max(axis=0).toarray().ravel())


def test_standardisation_is_learnt_once_and_kept_with_the_model(tmp_path):
    X = np.column_stack([np.arange(100.0), np.arange(100) % 2, np.full(100, 7.0)])
    y = np.arange(100.0) * 10
    m = FMRegressor(epochs=1).fit(X, y)
    np.testing.assert_allclose(m.x_offset_, [49.5, 0, 7])  # 0/1 column kept, constant centred
    np.testing.assert_allclose(m.x_scale_, [X[:, 0].std(), 1, 1])
    assert (m.y_offset_, m.y_scale_) == pytest.approx((495.0, y.std()))
    m.partial_fit(X + 1000, y)  # later batches do not move the scaling
    np.testing.assert_allclose(m.x_offset_, [49.5, 0, 7])
    m.save(tmp_path / "m.sfm")
    np.testing.assert_array_equal(streamfm.load_model(tmp_path / "m.sfm").predict(X), m.predict(X))
    raw = FMRegressor(epochs=1, standardize=False).fit(X[:, 1:2], y)
    assert raw.x_scale_.tolist() == [1.0] and raw.y_scale_ == 1.0


def adult_like(n=3_000, seed=0):
    rng = np.random.default_rng(seed)
    job = rng.choice(["clerk", "smith", "farmer", "judge"], n)
    df = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "job": job,
            "country": pd.Categorical(rng.choice(["DE", "FR", None], n, p=[0.6, 0.3, 0.1])),
            "hours": rng.normal(40, 10, n).round(),
            "married": rng.random(n) < 0.5,
        }
    )
    logit = (df.age - 45) / 10 + (job == "judge") * 2 - (job == "farmer") + df.married * 1.0
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), ">50K", "<=50K")
    return df, y


def test_dataframe_columns_become_features_through_the_builders():
    df, y = adult_like()
    m = FMClassifier().fit(df[:2_500], y[:2_500])
    assert m.feature_names_in_.tolist() == ["age", "job", "country", "hours", "married"]
    assert m.n_features_in_ == 5
    kinds = {b["name"]: b["type"] for b in m.features_}
    assert kinds == {
        "age": "numeric",
        "job": "categorical",
        "country": "categorical",
        "hours": "numeric",
        "married": "categorical",
    }
    age = next(b for b in m.features_ if b["name"] == "age")
    assert age["mean"] == pytest.approx(df.age[:2_500].mean())
    p = m.predict_proba(df[2_500:])[:, 1]
    assert auc((y[2_500:] == ">50K").astype(int), p) > 0.75
    # a pyarrow Table is the same source
    t = pa.Table.from_pandas(df, preserve_index=False)
    np.testing.assert_array_equal(
        m.predict_proba(t[2_500:]) if False else m.predict_proba(t.slice(2_500)),
        m.predict_proba(df[2_500:]),
    )
    # unseen categories contribute nothing; a missing column is named
    new = df[2_500:].assign(job="astronaut")
    assert np.isfinite(m.predict_proba(new)).all()
    with pytest.raises(ValueError, match="job"):
        m.predict(df.drop(columns="job"))


def test_dataframe_model_equals_the_spec_trained_on_the_same_rows(tmp_path):
    """A DataFrame is another source: the estimator and `streamfm train` build the same rows."""
    df, y = adult_like(1_500, seed=1)
    features = [
        {"type": "categorical", "columns": ["job"]},
        {"type": "categorical", "columns": ["country"]},
        {"type": "numeric", "columns": ["age"], "transform": "standardize"},
        {"type": "categorical", "columns": ["job", "married"], "name": "job_x_married"},
    ]
    kw = {
        "k": 4,
        "optimizer": "adagrad",
        "learning_rate": 0.05,
        "epochs": 3,
        "seed": 2,
        "init_std": 0.1,
    }
    est = FMClassifier(**kw, shuffle=False, features=features).fit(df, y)
    pq.write_table(
        pa.Table.from_pandas(df.assign(income=y), preserve_index=False), tmp_path / "d.parquet"
    )
    spec = {
        "source": {"path": str(tmp_path / "d.parquet")},
        "task": "classification",
        "target": {"column": "income", "positive": [">50K"]},
        "features": features,
        "model": {"k": 4, "seed": 2},
        "learner": {"optimizer": "adagrad", "learning_rate": 0.05, "epochs": 3},
        "output": {"dir": str(tmp_path / "run")},
        "checkpoint": {"enabled": False},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    trained = streamfm.train(tmp_path / "s.yaml").model
    np.testing.assert_array_equal(
        est.w_, trained.learner.params.w[: trained.learner.params.n_features]
    )
    np.testing.assert_array_equal(est.predict_proba(df)[:, 1], trained.predict(df))


def test_numeric_dataframe_is_the_array():
    X, y = blobs()
    cols = ["a", "b", "c", "d"]
    a = FMClassifier().fit(X, y)
    d = FMClassifier().fit(pd.DataFrame(X, columns=cols), y)
    np.testing.assert_array_equal(
        a.predict_proba(X), d.predict_proba(pd.DataFrame(X, columns=cols))
    )
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        d.predict(X)
    with pytest.raises(ValueError, match="Feature names"):
        d.predict(pd.DataFrame(X, columns=["a", "b", "c", "e"]))


def test_dataframe_save_load_and_partial_fit(tmp_path):
    df, y = adult_like()
    m = FMClassifier(group_regularization={"job": (0.1, 0.1)}).partial_fit(
        df[:1_000], y[:1_000], classes=["<=50K", ">50K"]
    )
    m.save(tmp_path / "m.sfm")
    loaded = streamfm.load_model(tmp_path / "m.sfm")
    np.testing.assert_array_equal(loaded.predict_proba(df), m.predict_proba(df))
    assert loaded.feature_names_in_.tolist() == m.feature_names_in_.tolist()
    m.partial_fit(df[1_000:], y[1_000:])
    loaded.partial_fit(df[1_000:], y[1_000:])
    np.testing.assert_array_equal(loaded.predict_proba(df), m.predict_proba(df))


def test_table_and_array_errors_are_explained():
    df, y = adult_like(100)
    with pytest.raises(SpecError, match="features=.* named columns"):
        FMRegressor(features=[{"type": "numeric", "columns": ["a"]}]).fit(
            np.ones((3, 2)), [1, 2, 3]
        )
    with pytest.raises(SpecError, match="feature_groups numbers the columns"):
        FMRegressor(feature_groups=[0, 1]).fit(df, np.ones(100))
    with pytest.raises(SpecError, match="group_regularization names group 'nope'"):
        FMClassifier(group_regularization={"nope": (1, 1)}).fit(df, y)
    m = FMClassifier().fit(df, y)
    with pytest.raises(DataError, match="fitted on a table"):
        m.predict(sp.csr_matrix(np.ones((2, 5))))
    with pytest.raises(DataError, match="mixes types"):
        FMClassifier().fit(pd.DataFrame({"a": [1, "x", 2.5]}), [0, 1, 0])
