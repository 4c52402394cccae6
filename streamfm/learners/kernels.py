"""numba kernels: FM prediction and per-case SGD / AdaGrad over CSR chunks.

All take plain arrays. CSR rows: indptr (int64, n+1), indices (int32, global feature ids),
values (float32). Parameters are float32 and updated in place. In the prediction the products
v_if·x_i and their squares are float32 (as the parameters and values), their sums
over features float64; gradients and steps are float64, rounded to float32 when stored.

Prediction uses Rendle's O(k·nnz) identity
    Σ_{i<j} <v_i, v_j> x_i x_j = ½ Σ_f [(Σ_i v_if x_i)² − Σ_i v_if² x_i²].

Speed notes (see benchmarks/bench_kernels.py): the inner loops over the k factors are what
LLVM vectorises, so both sums of the identity are kept per factor (Σ_i v_if x_i and
Σ_i v_if² x_i², reduced over f after the row) instead of one scalar running sum; feature ids
are read as unsigned so that numba emits no negative-index wraparound; and the kernels use
numba's "numpy" error model, so divisions carry no zero check (AdaGrad's divisors are
sqrt(accumulator) with accumulators starting at adagrad_init > 0). No fastmath: the order of
every floating-point operation is fixed, results are bit-for-bit reproducible and NaN / inf
are detected.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

TASK_REGRESSION = 0
TASK_CLASSIFICATION = 1
SCHEDULE_CONSTANT = 0
SCHEDULE_INVSCALING = 1


@njit(cache=True, nogil=True, inline="always")
def _sigmoid(z):
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@njit(cache=True, nogil=True, error_model="numpy")
def predict_csr(indptr, indices, values, w0, w, V, n_features, out):
    """Raw FM scores of every CSR row into `out` (float64, n). Ids >= n_features are ignored
    (features never seen in training contribute nothing), and so are negative ids."""
    k = V.shape[1]
    sums = np.zeros(k, dtype=np.float64)
    sqs = np.zeros(k, dtype=np.float64)
    for r in range(indptr.shape[0] - 1):
        p = float(w0[0])
        for f in range(k):
            sums[f] = 0.0
            sqs[f] = 0.0
        for nz in range(np.uint64(indptr[r]), np.uint64(indptr[r + 1])):
            j = np.uint32(indices[nz])
            if j >= n_features:
                continue
            x = values[nz]
            p += w[j] * x
            for f in range(k):
                d = V[j, f] * x
                sums[f] += d
                sqs[f] += d * d
        inter = 0.0
        sq = 0.0
        for f in range(k):
            inter += sums[f] * sums[f]
            sq += sqs[f]
        out[r] = p + 0.5 * (inter - sq)


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_csr(
    indptr,
    indices,
    values,
    y,
    order,
    w0,
    w,
    V,
    group,
    reg_w_by_group,
    reg_v_by_group,
    reg0,
    adagrad,
    acc_w0,
    acc_w,
    acc_V,
    lr0,
    schedule,
    decay,
    power_t,
    t0,
    task,
    clip,
    target_range,
    pred_out,
):
    """One pass of per-case SGD over the rows `order` (int64 row numbers) of a CSR chunk.

    For each case: predict (pred_out[row] gets the prediction made before the update: a clipped
    value for regression, P(y=1) for classification), then step w0, w and V of its features with
    the gradient of ½(ŷ−y)² (regression, y real) or of the log loss (classification, y in {0,1}),
    plus L2 terms reg·θ (reg0 for w0; by each feature's group for w and V) — the libFM update.
    AdaGrad divides each coordinate's step by sqrt of its accumulated squared gradients.

    Learning rate at case t (t0 cases seen before this call): lr0, or lr0 / (1 + decay·t)^power_t.
    target_range (float64[2], min and max of targets seen so far) is updated in place.

    Returns -1 when all is well, else the position in `order` of the first case whose
    prediction or gradient was not finite (parameters are then left as they were before it).
    Raises IndexError, before any update, if a feature id is negative or >= len(w).
    """
    k = V.shape[1]
    n_params = w.shape[0]
    top = np.uint32(0)  # largest id read as unsigned: negative ids count as huge
    for nz in range(indices.shape[0]):
        top = max(top, np.uint32(indices[nz]))
    if indices.shape[0] > 0 and top >= n_params:
        raise IndexError("sgd_csr: a feature id is negative or beyond the parameter arrays")
    sums = np.zeros(k, dtype=np.float64)
    sqs = np.zeros(k, dtype=np.float64)
    for ii in range(order.shape[0]):
        r = order[ii]
        start = np.uint64(indptr[r])
        stop = np.uint64(indptr[r + 1])
        # --- predict
        p = float(w0[0])
        for f in range(k):
            sums[f] = 0.0
            sqs[f] = 0.0
        for nz in range(start, stop):
            j = np.uint32(indices[nz])
            x = values[nz]
            p += w[j] * x
            for f in range(k):
                d = V[j, f] * x
                sums[f] += d
                sqs[f] += d * d
        inter = 0.0
        sq = 0.0
        for f in range(k):
            inter += sums[f] * sums[f]
            sq += sqs[f]
        p += 0.5 * (inter - sq)
        yr = y[r]
        if task == TASK_CLASSIFICATION:
            prob = _sigmoid(p)
            pred_out[r] = prob
            g = prob - yr
        else:
            if clip and target_range[0] <= target_range[1]:
                p = min(max(p, target_range[0]), target_range[1])
            pred_out[r] = p
            g = p - yr
        if not (math.isfinite(p) and math.isfinite(g) and math.isfinite(inter)):
            return ii
        if task != TASK_CLASSIFICATION:
            if yr < target_range[0]:
                target_range[0] = yr
            if yr > target_range[1]:
                target_range[1] = yr
        # --- step
        t = t0 + ii
        lr = lr0
        if schedule == SCHEDULE_INVSCALING:
            lr = lr0 / (1.0 + decay * t) ** power_t
        if adagrad:
            gb = g + reg0 * w0[0]
            acc_w0[0] += gb * gb
            w0[0] -= lr * gb / math.sqrt(acc_w0[0])
            for nz in range(start, stop):
                j = np.uint32(indices[nz])
                x = values[nz]
                gi = group[j]
                rw = reg_w_by_group[gi]
                rv = reg_v_by_group[gi]
                gw = g * x + rw * w[j]
                acc_w[j] += gw * gw
                w[j] -= lr * gw / math.sqrt(acc_w[j])
                gx = g * x
                gxx = gx * x
                for f in range(k):
                    v = V[j, f]
                    gv = gx * sums[f] - gxx * v + rv * v
                    a = acc_V[j, f] + gv * gv
                    acc_V[j, f] = a
                    V[j, f] = v - lr * gv / math.sqrt(a)
        else:
            w0[0] -= lr * (g + reg0 * w0[0])
            for nz in range(start, stop):
                j = np.uint32(indices[nz])
                x = values[nz]
                gi = group[j]
                rw = reg_w_by_group[gi]
                rv = reg_v_by_group[gi]
                w[j] -= lr * (g * x + rw * w[j])
                gx = g * x
                gxx = gx * x
                for f in range(k):
                    v = V[j, f]
                    V[j, f] = v - lr * (gx * sums[f] - gxx * v + rv * v)
    return -1
