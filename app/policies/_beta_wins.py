"""The probability that each of several independent Beta variables is the
largest, by numerical integration (private: the registry skips modules
whose name starts with ``_``).

P(arm i is the largest) = ∫ f_i(x) · Π_{j≠i} F_j(x) dx, with f and F the
Beta densities and distribution functions. The integral is taken with
Gauss–Legendre rules on the pieces of [0, 1] cut at every arm's mean ± 12
standard deviations, so that a narrow posterior (many rewards) and a wide
one (few) are each resolved; 32 nodes per piece agree with 4 million
Monte-Carlo draws to within their error. For 5 arms this costs ~0.2 ms,
against ~4 ms for 20,000 Monte-Carlo draws with a standard error of 0.0035.
A parameter below 1 makes a density unbounded at an end of [0, 1], where the
rule is less accurate (the result is still a distribution).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy.special import betainc, betaln

_NODES = 32  # Gauss–Legendre nodes per piece
_SPREAD = 12.0  # standard deviations either side of each mean where a piece ends
_TINY = np.finfo(float).tiny
_BELOW_ONE = 1.0 - np.finfo(float).epsneg


@cache
def _rule() -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(_NODES)


def beta_win_probabilities(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """For Beta(alpha[i], beta[i]) variables, the probability that each one
    is the largest (they sum to 1).

    >>> p = beta_win_probabilities(np.array([1.0, 2.0]), np.array([1.0, 1.0]))
    >>> [round(float(v), 6) for v in p]  # P(U > V) for U ~ Beta(1,1), V ~ Beta(2,1): 1/3
    [0.333333, 0.666667]
    """
    a, b = np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float)
    if len(a) == 1:
        return np.ones(1)
    mean = a / (a + b)
    sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
    cuts = np.concatenate([mean - _SPREAD * sd, mean + _SPREAD * sd, [0.0, 1.0]])
    edges = np.unique(np.clip(cuts, 0.0, 1.0))
    nodes, weights = _rule()
    half = (edges[1:] - edges[:-1]) / 2.0
    x = ((edges[1:] + edges[:-1]) / 2.0)[:, None] + half[:, None] * nodes
    w = (half[:, None] * weights).ravel()
    x = np.clip(x.ravel(), _TINY, _BELOW_ONE)  # strictly inside (0, 1): finite logs
    ac, bc = a[:, None], b[:, None]
    with np.errstate(over="ignore", under="ignore"):
        density = np.exp((ac - 1.0) * np.log(x) + (bc - 1.0) * np.log1p(-x) - betaln(a, b)[:, None])
    cdf = betainc(ac, bc, x)
    # Π_{j≠i} F_j(x): the product of the arms before i times that of those after.
    ones = np.ones((1, x.size))
    before = np.cumprod(np.vstack([ones, cdf[:-1]]), axis=0)
    after = np.cumprod(np.vstack([ones, cdf[:0:-1]]), axis=0)[::-1]
    wins = (density * before * after) @ w
    total = wins.sum()
    if not (np.isfinite(total) and total > 0.0):
        raise FloatingPointError(f"Beta win probabilities failed for alpha={a}, beta={b}")
    return wins / total
