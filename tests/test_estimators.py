"""FMRegressor / FMClassifier: planted-model recovery, growth, determinism, errors, persistence."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from reference import auc

import streamfm
from streamfm import FMClassifier, FMRegressor
from streamfm.datasets import make_planted_fm
from streamfm.errors import CheckpointError, DataError, DivergenceError, SpecError

# libFM's way (and the estimators' defaults before 0.2): plain SGD, rows in order, raw values.
LIBFM = {"optimizer": "sgd", "shuffle": False, "standardize": False}


def split(X, y, n_train):
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def test_planted_regression_is_recovered():
    sigma = 0.1
    X, y, _ = make_planted_fm(30_000, n_features=300, k=4, nnz_per_row=5, noise=sigma, seed=1)
    Xtr, ytr, Xte, yte = split(X, y, 25_000)
    m = FMRegressor(k=4, learning_rate=0.005, reg_factors=0.0, epochs=30, seed=3, **LIBFM)
    m.fit(Xtr, ytr)
    rmse = np.sqrt(np.mean((m.predict(Xte) - yte) ** 2))
    assert rmse <= 1.2 * sigma


def test_planted_regression_is_recovered_by_adagrad():
    sigma = 0.1
    X, y, _ = make_planted_fm(30_000, n_features=300, k=4, nnz_per_row=5, noise=sigma, seed=2)
    Xtr, ytr, Xte, yte = split(X, y, 25_000)
    m = FMRegressor(
        k=4, optimizer="adagrad", learning_rate=0.1, reg_factors=0.0, epochs=30, shuffle=False
    ).fit(Xtr, ytr)
    assert np.sqrt(np.mean((m.predict(Xte) - yte) ** 2)) <= 1.2 * sigma


def test_planted_logistic_fm_reaches_the_planted_auc():
    X, y, truth = make_planted_fm(
        60_000, n_features=200, k=4, nnz_per_row=5, task="classification", seed=4
    )
    Xtr, ytr, Xte, yte = split(X, y, 50_000)
    m = FMClassifier(k=4, learning_rate=0.02, reg_factors=1e-4, epochs=15, **LIBFM).fit(Xtr, ytr)
    ours = auc(yte, m.predict_proba(Xte)[:, 1])
    planted = auc(yte, truth["clean"][50_000:])
    assert ours >= planted - 0.02


def test_partial_fit_with_unseen_ids_keeps_existing_parameters():
    X, y, _ = make_planted_fm(2_000, n_features=100, k=3, seed=5)
    m = FMRegressor(k=3).partial_fit(X, y)
    w_before, V_before = m.w_.copy(), m.V_.copy()
    # New rows that use only ids 100..149: nothing of ids 0..99 may move.
    rng = np.random.default_rng(0)
    cols = rng.integers(100, 150, size=(50, 3))
    Xnew = sp.csr_matrix(
        (np.ones(150), (np.repeat(np.arange(50), 3), cols.ravel())), shape=(50, 150)
    )
    m.partial_fit(Xnew, rng.normal(size=50))
    assert m.w_.shape == (150,) and m.V_.shape == (150, 3)
    np.testing.assert_array_equal(m.w_[:100], w_before)
    np.testing.assert_array_equal(m.V_[:100], V_before)
    # Ids 150.. were never seen: their rows are still their initial values.
    p = m.learner_.params
    ids = np.arange(150, p.capacity)
    np.testing.assert_array_equal(p.V[150:], p.initial_factors(ids))


def test_same_seed_same_model_and_seed_matters():
    X, y, _ = make_planted_fm(3_000, n_features=80, seed=6)
    a = FMRegressor(k=4, epochs=3, shuffle=True, seed=7).fit(X, y)
    b = FMRegressor(k=4, epochs=3, shuffle=True, seed=7).fit(X, y)
    c = FMRegressor(k=4, epochs=3, shuffle=True, seed=8).fit(X, y)
    np.testing.assert_array_equal(a.V_, b.V_)
    np.testing.assert_array_equal(a.w_, b.w_)
    assert not np.array_equal(a.V_, c.V_)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_one_chunk_or_many_chunks_give_identical_parameters(optimizer):
    X, y, _ = make_planted_fm(5_000, n_features=400, seed=8)
    kw = {"k": 4, "schedule": "invscaling", "decay": 1e-3, **LIBFM, "optimizer": optimizer}
    whole = FMRegressor(epochs=1, **kw)
    whole.fit(X, y)
    pieces = FMRegressor(**kw)
    bounds = [0, 1, 8, 700, 701, 2600, 5_000]  # chunks of 1, 7, 692, 1, 1899, 2400 rows
    for a, b in itertools.pairwise(bounds):
        pieces.partial_fit(X[a:b], y[a:b])
    np.testing.assert_array_equal(whole.V_, pieces.V_)
    np.testing.assert_array_equal(whole.w_, pieces.w_)
    assert whole.w0_ == pieces.w0_


def test_initial_factors_do_not_depend_on_growth_history():
    X, y, _ = make_planted_fm(500, n_features=1000, seed=9)
    a = FMRegressor(k=4, epochs=1).fit(X, y)
    b = FMRegressor(k=4, epochs=1).fit(X[:, :1000], y)  # same data, one growth
    np.testing.assert_array_equal(a.V_, b.V_)


def test_classifier_accepts_both_label_encodings():
    X, y, _ = make_planted_fm(2_000, n_features=50, task="classification", seed=10)
    a = FMClassifier(k=2, epochs=2).fit(X, y)
    b = FMClassifier(k=2, epochs=2).fit(X, 2 * y - 1)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert set(np.unique(a.predict(X))) <= {0, 1}
    assert set(np.unique(b.predict(X))) <= {-1, 1}
    assert a.predict_proba(X).shape == (2_000, 2)
    np.testing.assert_allclose(a.predict_proba(X).sum(1), 1.0)
    assert 0.5 < a.score(X, y) <= 1.0


def test_classifier_labels_outside_the_classes_are_errors():
    X, _, _ = make_planted_fm(10, n_features=5, seed=11)
    m = FMClassifier().partial_fit(X, np.array(["a", "b"] * 5), classes=["a", "b"])
    with pytest.raises(DataError, match="row 2: the label 'c' is not one of the classes"):
        m.partial_fit(X, np.array(["a", "b", "c", "a", "b", "a", "b", "a", "b", "b"]))
    with pytest.raises(DataError, match="at least two classes"):
        FMClassifier().fit(X, np.full(10, "a"))


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (np.ones((3, 2)), np.ones(4), "X has 3 rows but y has 4"),
        (np.ones((3, 2)), np.array([1.0, np.nan, 2.0]), "row 1: y holds a non-finite target"),
        (np.array([[1.0, np.inf]]), np.ones(1), "non-finite value"),
        (np.ones(3), np.ones(3), "2-D|2D array"),
        (np.ones((2, 2)), np.ones((2, 2)), "1d array|1-D"),
    ],
)
def test_bad_input_errors(X, y, message):
    with pytest.raises(ValueError, match=message):
        FMRegressor().fit(X, y)


def test_negative_indices_rejected():
    with pytest.raises(DataError, match="negative"):
        FMRegressor().fit((np.ones(2), (np.array([0, 1]), np.array([0, -3]))), np.ones(2))
    # Raw CSR arrays bypass scipy's own check.
    raw = (np.ones(2), np.array([0, -3]), np.array([0, 1, 2]))
    with pytest.raises(DataError, match="row 1: X has a negative column index"):
        FMRegressor().fit(raw, np.ones(2))


def test_bad_hyper_parameters_name_the_parameter():
    with pytest.raises(SpecError, match=r"learning_rate: must be > 0.0, got -0.1"):
        FMRegressor(learning_rate=-0.1).fit(np.ones((2, 2)), np.ones(2))
    with pytest.raises(SpecError, match="optimizer"):
        FMRegressor(optimizer="adam").fit(np.ones((2, 2)), np.ones(2))
    with pytest.raises(SpecError, match="unknown parameter 'lr'"):
        FMRegressor().set_params(lr=3)


def test_divergence_is_an_error_never_a_nan_model():
    X, y, _ = make_planted_fm(2_000, n_features=20, nnz_per_row=10, seed=12)
    with pytest.raises(
        DivergenceError, match=r"diverged at case \d+.*smaller learner.learning_rate"
    ):
        FMRegressor(learning_rate=50.0, clip_predictions=False, **LIBFM).fit(X * 10, y * 100)


def test_params_protocol():
    m = FMRegressor(k=3, learning_rate=0.1)
    params = m.get_params()
    assert params["k"] == 3 and params["learning_rate"] == 0.1
    clone = FMRegressor(**params)
    assert clone.get_params() == params
    assert m.set_params(k=5) is m and m.k == 5
    assert "k=5" in repr(m)


@pytest.mark.parametrize("cls", [FMRegressor, FMClassifier])
def test_save_load_round_trip_and_continue(tmp_path, cls):
    task = "classification" if cls is FMClassifier else "regression"
    X, y, _ = make_planted_fm(3_000, n_features=60, task=task, seed=13)
    kw = {
        "k": 3,
        "optimizer": "adagrad",
        "feature_groups": np.arange(60) % 2,
        "group_regularization": {1: (0.01, 0.05)},
    }
    m = cls(**kw).partial_fit(X[:1500], y[:1500])
    m.save(tmp_path / "m.sfm")
    loaded = streamfm.load_model(tmp_path / "m.sfm")
    assert type(loaded) is cls
    np.testing.assert_array_equal(loaded.predict(X), m.predict(X))
    # Continuing from the file ends where continuing in memory does.
    m.partial_fit(X[1500:], y[1500:])
    loaded.partial_fit(X[1500:], y[1500:])
    np.testing.assert_array_equal(loaded.V_, m.V_)
    np.testing.assert_array_equal(loaded.w_, m.w_)


def test_saved_model_has_no_pickle_and_corruption_is_detected(tmp_path):
    import zipfile

    X, y, _ = make_planted_fm(500, n_features=30, seed=14)
    FMRegressor(k=2, epochs=1).fit(X, y).save(tmp_path / "m.sfm")
    with zipfile.ZipFile(tmp_path / "m.sfm") as z:
        assert "meta.json" in z.namelist() and "V.npy" in z.namelist()
    data = bytearray((tmp_path / "m.sfm").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.sfm").write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        streamfm.load_model(tmp_path / "bad.sfm")
    with pytest.raises(CheckpointError, match="does not exist"):
        streamfm.load_model(tmp_path / "missing.sfm")


def test_group_regularisation_applies_per_group():
    X, y, _ = make_planted_fm(3_000, n_features=40, seed=15)
    groups = np.r_[np.zeros(20, int), np.ones(20, int)]
    m = FMRegressor(k=3, epochs=5, feature_groups=groups, group_regularization={1: (5.0, 5.0)})
    m.fit(X, y)
    # Strong L2 on group 1 shrinks its parameters far below group 0's.
    assert np.abs(m.V_[20:]).mean() < 0.3 * np.abs(m.V_[:20]).mean()
    assert np.abs(m.w_[20:]).mean() < 0.3 * np.abs(m.w_[:20]).mean()


def test_estimator_files_written_before_the_scikit_learn_estimators_load_and_predict():
    """Files saved by the estimators of 34754d3 (before defaults, labels and scaling changed)
    predict as they did: the parameters they lack mean what those versions did."""
    folder = Path(__file__).parent / "fixtures" / "estimators_before_sklearn"
    want = np.load(folder / "predictions.npz")
    reg = streamfm.load_model(folder / "regressor.sfm")
    np.testing.assert_array_equal(reg.predict(sp.load_npz(folder / "X.npz")), want["regressor"])
    clf = streamfm.load_model(folder / "classifier.sfm")
    Xc = sp.load_npz(folder / "Xc.npz")
    # within 2 ulp: a probability goes through libm's exp, whose last bit can differ between
    # machines (as tests/test_release_models.py); the labels are exact
    np.testing.assert_array_max_ulp(clf.predict_proba(Xc), want["classifier"], maxulp=2)
    np.testing.assert_array_equal(clf.predict(Xc), want["labels"])
    assert clf.classes_.tolist() == [-1.0, 1.0] and reg.standardize is False
    # ... and they keep learning
    reg.partial_fit(sp.load_npz(folder / "X.npz"), want["regressor"])


def test_n_jobs_sets_hogwild_threads_for_one_model():
    """n_jobs > 1 learns a single sgd / adagrad model with that many Hogwild threads; the fit is
    as good as with one thread (not bit-identical); n_jobs None / 1 stays exactly one thread."""
    X, y, _ = make_planted_fm(30_000, n_features=200, k=4, nnz_per_row=4, noise=0.1, seed=2)
    Xtr, ytr, Xte, yte = X[:25_000], y[:25_000], X[25_000:], y[25_000:]
    one = FMRegressor(k=4, epochs=5, n_jobs=None).fit(Xtr, ytr)
    two = FMRegressor(k=4, epochs=5, n_jobs=2).fit(Xtr, ytr)
    assert one.learner_.config.threads == 1
    assert two.learner_.config.threads == 2
    assert FMRegressor(n_jobs=-1).fit(Xtr[:100], ytr[:100]).learner_.config.threads >= 1

    def rmse(m):
        return float(np.sqrt(np.mean((m.predict(Xte) - yte) ** 2)))

    assert rmse(one) < 0.5 * float(np.std(yte))
    assert abs(rmse(two) - rmse(one)) < 0.02, (rmse(one), rmse(two))
    again = FMRegressor(k=4, epochs=5, n_jobs=1).fit(Xtr, ytr)
    np.testing.assert_array_equal(again.predict(Xte), one.predict(Xte))
    binary = FMClassifier(k=4, epochs=2, n_jobs=2).fit(Xtr, ytr > np.median(ytr))
    assert binary.learner_.config.threads == 2
    # one-vs-rest: n_jobs trains the models side by side, each with one thread
    labels = np.digitize(ytr, np.quantile(ytr, [0.33, 0.66]))
    ovr = FMClassifier(k=4, epochs=1, n_jobs=2).fit(Xtr, labels)
    assert [lrn.config.threads for lrn in ovr.learners_] == [1, 1, 1]
    # ALS / MCMC: threads over each sweep's waves, the same model as one thread
    als = FMRegressor(k=4, method="als", n_iter=2, n_jobs=2).fit(Xtr[:2000], ytr[:2000])
    assert als.learner_.config.threads == 2
    als_one = FMRegressor(k=4, method="als", n_iter=2).fit(Xtr[:2000], ytr[:2000])
    np.testing.assert_array_equal(als.predict(Xte), als_one.predict(Xte))
    # methods without threads ignore it
    sgda = FMRegressor(k=4, method="sgda", epochs=1, n_jobs=2).fit(Xtr[:2000], ytr[:2000])
    assert sgda.learner_.config.threads == 1


def test_sgda_estimator_fits_and_refuses_sample_weights():
    """FMRegressor(method="sgda") failed: the estimators pass case weights to every learner."""
    rng = np.random.default_rng(0)
    X = sp.random(400, 30, density=0.1, format="csr", random_state=0)
    y = rng.random(400)
    model = FMRegressor(k=4, method="sgda", epochs=2).fit(X, y)
    assert np.all(np.isfinite(model.predict(X)))
    with pytest.raises(SpecError, match="sample_weight"):
        FMRegressor(k=4, method="sgda", epochs=1).fit(X, y, sample_weight=np.ones(400))
