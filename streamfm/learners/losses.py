"""Loss functions of the per-case learners, as small jitted functions the kernels take.

A loss is four functions of one case (numba, inlined into the kernel that receives them):

- ``output(score, target_range, clip)``: the prediction reported and differentiated (the clipped
  score for regression, P(y=1) for classification);
- ``gradient(prediction, y)``: d loss / d score at that prediction;
- ``observe(y, target_range)``: what the loss learns from the target itself (the range of
  regression targets seen so far, which clipping uses);
- ``value(prediction, y)``: the loss (metrics, tests).

Labels for the logistic loss are 0/1; the score is the raw FM output.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from numba import njit


class Loss(NamedTuple):
    """A loss as the kernels take it: four jitted functions (see the module docstring)."""

    name: str
    output: object
    gradient: object
    observe: object
    value: object


@njit(cache=True, nogil=True, inline="always")
def sigmoid(z):
    """1 / (1 + exp(-z)), without overflow for large |z|."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


# --- squared loss ½(ŷ − y)², predictions clipped to the targets seen so far (as libFM)


@njit(cache=True, nogil=True, inline="always")
def squared_output(score, target_range, clip):
    if clip and target_range[0] <= target_range[1]:
        return min(max(score, target_range[0]), target_range[1])
    return score


@njit(cache=True, nogil=True, inline="always")
def squared_gradient(prediction, y):
    return prediction - y


@njit(cache=True, nogil=True, inline="always")
def squared_observe(y, target_range):
    if y < target_range[0]:
        target_range[0] = y
    if y > target_range[1]:
        target_range[1] = y


@njit(cache=True, nogil=True, inline="always")
def squared_value(prediction, y):
    return 0.5 * (prediction - y) ** 2


# --- logistic loss −y·ln σ(s) − (1−y)·ln(1−σ(s)), y in {0, 1}


@njit(cache=True, nogil=True, inline="always")
def logistic_output(score, target_range, clip):
    return sigmoid(score)


@njit(cache=True, nogil=True, inline="always")
def logistic_gradient(prediction, y):
    return prediction - y


@njit(cache=True, nogil=True, inline="always")
def logistic_observe(y, target_range):
    pass


@njit(cache=True, nogil=True, inline="always")
def logistic_value(prediction, y):
    p = min(max(prediction, 1e-15), 1.0 - 1e-15)
    return -(y * math.log(p) + (1.0 - y) * math.log(1.0 - p))


SQUARED = Loss("squared", squared_output, squared_gradient, squared_observe, squared_value)
LOGISTIC = Loss("logistic", logistic_output, logistic_gradient, logistic_observe, logistic_value)
LOSSES = {"squared": SQUARED, "logistic": LOGISTIC}
