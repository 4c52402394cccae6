"""Step rules: how a coordinate moves given its gradient, as jitted functions the kernels take.

A step rule is two functions (numba, inlined into the kernel that receives them):

- ``linear(theta, acc, j, value, grad, lr)``: update theta[j] (1-D: w0 with j = 0, or w);
- ``factor(theta, acc, j, f, value, grad, lr)``: update theta[j, f] (V).

``value`` is theta's current entry (float32, read once by the kernel), ``grad`` the float64
gradient including the L2 term, ``acc`` the rule's per-coordinate state (unused by SGD).
Steps are computed in float64 and rounded to float32 when stored.

AdaGrad's rounding rule, for every coordinate alike: the new squared-gradient sum
a = acc + grad² is computed in float64; the step divides by sqrt(a) of that float64 sum, and a is
stored (rounded to float32) afterwards. (streamfm 0.1 divided w0 and w by the float32-rounded
sum, V by the float64 one.)
"""

from __future__ import annotations

import math
from typing import NamedTuple

from numba import njit


class StepRule(NamedTuple):
    """A step rule as the kernels take it (see the module docstring)."""

    name: str
    linear: object
    factor: object


@njit(cache=True, nogil=True, inline="always")
def sgd_linear(theta, acc, j, value, grad, lr):
    theta[j] = value - lr * grad


@njit(cache=True, nogil=True, inline="always")
def sgd_factor(theta, acc, j, f, value, grad, lr):
    theta[j, f] = value - lr * grad


@njit(cache=True, nogil=True, inline="always")
def adagrad_linear(theta, acc, j, value, grad, lr):
    a = acc[j] + grad * grad
    acc[j] = a
    theta[j] = value - lr * grad / math.sqrt(a)


@njit(cache=True, nogil=True, inline="always")
def adagrad_factor(theta, acc, j, f, value, grad, lr):
    a = acc[j, f] + grad * grad
    acc[j, f] = a
    theta[j, f] = value - lr * grad / math.sqrt(a)


@njit(cache=True, nogil=True, inline="always")
def learning_rate(lr0, decay, power_t, t):
    """Rate at case t (cases learnt before it): lr0, or lr0 / (1 + decay·t)^power_t when decay > 0."""
    if decay == 0.0:
        return lr0
    return lr0 / (1.0 + decay * t) ** power_t


SGD = StepRule("sgd", sgd_linear, sgd_factor)
ADAGRAD = StepRule("adagrad", adagrad_linear, adagrad_factor)
STEP_RULES = {"sgd": SGD, "adagrad": ADAGRAD}
