"""The estimators' defaults on data nobody scaled: how they were chosen, and what they give.

    python benchmarks/estimators.py [--data ../shared/data] [--tune]

Datasets: UCI Adult (pandas DataFrame of 8 text and 6 numeric columns, numbers unscaled up to
~1.5M; classification), MovieLens 100K fold u3 (DataFrame of user and item ids; regression),
and three tables bundled with scikit-learn, unscaled: diabetes (regression, target ~150),
breast cancer (binary, 30 columns of magnitudes 0.001 .. 4000), wine (3 classes, one-vs-rest),
plus the issue's case: 3 numeric columns of magnitude ~100 (synthetic).

With --tune, every candidate (learning rate, initial factor std, L2 on factors) is scored (RMSE,
log loss) on a validation split carved from each training set (a random 20% of adult.data, of
u3.base, of the 75% train part of the bundled sets), never on a test set; the default is the
candidate with the least mean regret (how much more of the constant model's loss it leaves than
the best candidate of each dataset, in %). Then the defaults are trained on each whole training
set and scored once on its test set (adult.test, u3.test, the 25% of the bundled sets). Writes the "estimators" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
from _report import command_line, machine, write_section
from _specs import DATA_PREFIX, ROOT, data_argument

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
    "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week",
    "native_country", "income",
]  # fmt: skip


def adult(data: Path):
    import pandas as pd

    def read(name: str):
        df = pd.read_csv(
            data / "adult" / name, header=None, names=ADULT_COLUMNS, skipinitialspace=True,
            na_values="?",
        )  # fmt: skip
        return df.drop(columns="income"), df["income"].str.rstrip(".").to_numpy()

    return (*read("adult.data"), *read("adult.test"), "classification")


def ml100k(data: Path):
    import pandas as pd

    def read(name: str):
        df = pd.read_csv(
            data / "ml-100k" / name, sep="\t", header=None, names=["user", "item", "r", "t"],
            dtype={"user": str, "item": str},
        )  # fmt: skip
        return df[["user", "item"]], df["r"].to_numpy(dtype=float)

    return (*read("u3.base"), *read("u3.test"), "regression")


def bundled(name: str):
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loaders = {
        "diabetes": lambda: datasets.load_diabetes(return_X_y=True, scaled=False),
        "breast_cancer": lambda: datasets.load_breast_cancer(return_X_y=True),
        "wine": lambda: datasets.load_wine(return_X_y=True),
    }
    X, y = loaders[name]()
    task = "regression" if name == "diabetes" else "classification"
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
    return Xtr, ytr, Xte, yte, task


def magnitude_100():
    rng = np.random.default_rng(0)
    X = rng.normal(100, 30, size=(2_000, 3))
    y = X @ [0.5, -0.2, 0.1] + 0.01 * X[:, 0] * X[:, 1] + rng.normal(size=2_000)
    return X[:1_500], y[:1_500], X[1_500:], y[1_500:], "regression"


def score(model, X, y, task: str) -> tuple[str, float]:
    """(metric, value): RMSE for regression, AUC (binary) or accuracy (3+ classes)."""
    from sklearn.metrics import roc_auc_score

    if task == "regression":
        return "rmse", float(np.sqrt(np.mean((model.predict(X) - y) ** 2)))
    if len(model.classes_) == 2:
        return "auc", float(roc_auc_score(y == model.classes_[1], model.predict_proba(X)[:, 1]))
    return "accuracy", float(np.mean(model.predict(X) == y))


def loss(model, X, y, task: str) -> float:
    """What tuning minimises: RMSE, or the log loss (a proper score that does not saturate on
    small, easy sets the way AUC and accuracy do)."""
    from sklearn.metrics import log_loss

    if task == "regression":
        return float(np.sqrt(np.mean((model.predict(X) - y) ** 2)))
    return float(log_loss(y, model.predict_proba(X), labels=model.classes_))


def constant_loss(y_train, y, task: str) -> float:
    """`loss` of the constant model: the training mean, or the training class frequencies."""
    if task == "regression":
        return float(np.sqrt(np.mean((y - np.mean(y_train)) ** 2)))
    classes, counts = np.unique(y_train, return_counts=True)
    freq = dict(zip(classes.tolist(), (counts / counts.sum()).tolist(), strict=True))
    return float(-np.mean([np.log(max(freq.get(v, 0.0), 1e-15)) for v in y.tolist()]))


def fit(params: dict, X, y, task: str):
    from streamfm import FMClassifier, FMRegressor

    cls = FMRegressor if task == "regression" else FMClassifier
    return cls(**params).fit(X, y)


def validation_split(X, y, seed: int = 0):
    """A random 20% of a training set as validation, the rest to train."""
    n = len(y)
    idx = np.random.default_rng(seed).permutation(n)
    cut = int(0.8 * n)
    tr, va = idx[:cut], idx[cut:]
    take = (lambda a, i: a.iloc[i]) if hasattr(X, "iloc") else (lambda a, i: a[i])
    return take(X, tr), y[tr], take(X, va), y[va]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_argument(ap)
    ap.add_argument("--tune", action="store_true", help="score the candidates (slow)")
    args = ap.parse_args()
    data = (args.data or ROOT / DATA_PREFIX).resolve()
    sets = {
        "adult": adult(data),
        "ml100k-u3": ml100k(data),
        "diabetes": bundled("diabetes"),
        "breast_cancer": bundled("breast_cancer"),
        "wine": bundled("wine"),
        "magnitude_100": magnitude_100(),
    }
    lines = []
    if args.tune:
        grid = list(itertools.product((0.02, 0.05, 0.1, 0.2), (0.1, 0.01), (0.01, 0.001)))
        table: dict[tuple, dict[str, float]] = {}
        constant: dict[str, float] = {}
        for name, (Xtr, ytr, _, _, task) in sets.items():
            a, ya, b, yb = validation_split(Xtr, ytr)
            constant[name] = constant_loss(ya, yb, task)
            for lr, init, reg in grid:
                params = {"learning_rate": lr, "init_std": init, "reg_factors": reg}
                value = loss(fit(params, a, ya, task), b, yb, task)
                table.setdefault((lr, init, reg), {})[name] = value
                print(f"{name:14} {params} {value:.4f}", flush=True)
        # A candidate's regret on a dataset: how much more of the constant model's loss it
        # leaves than the best candidate there (in %; units and easy sets weigh alike); the
        # default has the least mean regret.
        regret = {c: 0.0 for c in table}
        for name in sets:
            best_loss = min(table[c][name] for c in table)
            for c in table:
                regret[c] += 100 * (table[c][name] - best_loss) / constant[name] / len(sets)
        best = min(regret, key=regret.get)
        lines += [
            "Validation splits (20% carved from each training set): RMSE (regression) or log "
            "loss (classification); the constant model's loss (training mean or class "
            "frequencies) in the first row; mean regret: how much more of the constant model's "
            "loss a candidate leaves than the best candidate of each dataset, in %:",
            "",
            "| learning_rate | init_std | reg_factors | " + " | ".join(sets) + " | mean regret % |",
            "|---:|---:|---:|" + "---:|" * (len(sets) + 1),
            "| constant | | | " + " | ".join(f"{constant[n]:.4f}" for n in sets) + " | |",
        ]
        for c in sorted(table, key=regret.get):
            cells = " | ".join(f"{table[c][n]:.4f}" for n in sets)
            lines.append(f"| {c[0]} | {c[1]} | {c[2]} | {cells} | {regret[c]:.2f} |")
        lines += [
            "",
            f"Best: learning_rate {best[0]}, init_std {best[1]}, reg_factors {best[2]}.",
            "",
        ]
    lines += [
        "Defaults (`FMRegressor()` / `FMClassifier()`), trained on the whole training set, "
        "scored once on the test set:",
        "",
        "| dataset | X | train rows | test rows | metric | test | seconds |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for name, (Xtr, ytr, Xte, yte, task) in sets.items():
        t = time.perf_counter()
        model = fit({}, Xtr, ytr, task)
        seconds = time.perf_counter() - t
        metric, value = score(model, Xte, yte, task)
        kind = "DataFrame" if hasattr(Xtr, "iloc") else "ndarray"
        lines.append(
            f"| {name} | {kind} | {len(ytr):,} | {len(yte):,} | {metric} | {value:.4f} | "
            f"{seconds:.1f} |"
        )
        print(lines[-1], flush=True)
    body = "\n".join(
        [
            "## Estimators: defaults on unscaled data",
            "",
            f"Command: `{command_line()}`  ",
            f"Machine: {machine()}",
            "",
            *lines,
        ]
    )
    write_section("estimators", body)


if __name__ == "__main__":
    main()
