"""Quick start through the Python API: fit an FM on generated data and print test RMSE.

python examples/quickstart.py
"""

import time

import numpy as np

from streamfm import FMRegressor
from streamfm.datasets import make_planted_fm

X, y, truth = make_planted_fm(200_000, n_features=2_000, k=8, nnz_per_row=4, noise=0.3, seed=0)
X_train, y_train, X_test, y_test = X[:180_000], y[:180_000], X[180_000:], y[180_000:]

model = FMRegressor(k=8, optimizer="adagrad", learning_rate=0.1, reg_factors=1e-4, epochs=10)
start = time.perf_counter()
model.fit(X_train, y_train)
seconds = time.perf_counter() - start

rmse = float(np.sqrt(np.mean((model.predict(X_test) - y_test) ** 2)))
baseline = float(np.sqrt(np.mean((y_test - y_train.mean()) ** 2)))
print(f"trained 10 epochs over {X_train.shape[0]:,} rows in {seconds:.2f} s (incl. compilation)")
print(f"test RMSE {rmse:.4f}  (noise floor 0.3000, predicting the mean {baseline:.4f})")
