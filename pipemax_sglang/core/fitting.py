"""Robust, non-negative, prior-anchored linear least squares (numpy only).

Used by the step-cost model (t = a + b*rows + c*sum_context) and by the hardware fit
(t = latency + bytes / bandwidth). Both have 2-3 coefficients that must never be negative
(a negative per-token cost would make the selector *want* longer contexts), noisy timings
with rare gross outliers (GC pauses, a straggling all-gather, a first-call compile), and
windows where one feature barely varies (every step has the same row count).

    minimise  sum_i w_i (y_i - x_i . theta)^2 + mu * sum_j ((theta_j - prior_j) * s_j)^2
    subject to theta >= 0

- Non-negativity is exact: with p <= 4 coefficients we solve the ridge system on every
  support (2^p subsets, the rest held at zero) and keep the best feasible one. The true
  optimum is the unconstrained optimum on its own support (KKT), so this is exact NNLS,
  and it is deterministic (no iteration order, no tolerance). Supports go largest first,
  and the first whose solution meets the KKT conditions strictly (feasible, the gradient
  positive where a coefficient is held at zero) is the answer: the rest cannot beat it.
- The ridge pulls towards the prior only where the data do not decide: columns are scaled
  by their RMS (s_j), and mu is a small fraction of the total weight, so a well-posed
  direction moves by ~mu / sum(w) relative, while a collinear one (constant rows) takes the
  prior's split between intercept and slope instead of an arbitrary one.
- Robustness: residuals are relative ((y - fit) / y: timing noise is multiplicative).
  Huber IRLS from the plain fit (bounded influence), then a few Tukey bisquare steps
  (gross outliers get weight 0). Scale = 1.4826 * MAD of the relative residuals.
"""

from __future__ import annotations

import itertools

import numpy as np

_HUBER_K = 1.345     # 95% efficiency under Gaussian noise
_TUKEY_C = 4.685     # 95% efficiency, redescending
_HUBER_ITERS = 8
_TUKEY_ITERS = 4


def nnls_ridge(x: np.ndarray, y: np.ndarray, w: np.ndarray, prior: np.ndarray,
               mu: float) -> np.ndarray:
    """Exact weighted NNLS with a ridge towards `prior` (see module note). x: [n, p], p <= 4."""
    return _Ridge(x, y, prior).solve(w, mu)


class _Ridge:
    """nnls_ridge for one (x, y, prior) and any weights: the scaling, computed once for the
    IRLS loop's dozen solves (a refit runs on the scheduler's thread, so its cost is a
    stage's: 1.4-2 ms a refit of a full window here before, most of it redone per solve)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, prior: np.ndarray) -> None:
        p = x.shape[1]
        if p > 4:
            raise ValueError("nnls_ridge enumerates supports; it is meant for p <= 4")
        scale = np.sqrt(np.mean(x * x, axis=0))
        scale[scale == 0.0] = 1.0
        self.p, self.y, self.scale = p, y, scale
        self.z = x / scale                 # [n, p], columns of RMS 1
        self.phi_prior = prior * scale     # prior in scaled coordinates

    def solve(self, w: np.ndarray, mu: float) -> np.ndarray:
        p, y, z, phi_prior = self.p, self.y, self.z, self.phi_prior
        zw = z * w[:, None]
        gram = z.T @ zw                    # [p, p]
        rhs = zw.T @ y                     # [p]
        ridge = mu * np.ones(p)
        system = gram + np.diag(ridge)     # the ridge system; a support solves its sub-block
        target = rhs + ridge * phi_prior
        best_obj, best_phi = np.inf, np.zeros(p)
        for k in range(p, -1, -1):
            for support in itertools.combinations(range(p), k):
                phi = np.zeros(p)
                if support:
                    idx = list(support)
                    try:
                        # the whole support (tried first, and almost always the answer) is
                        # the system itself: no sub-block to copy out
                        phi[idx] = np.linalg.solve(system if k == p else system[np.ix_(idx, idx)],
                                                   target if k == p else target[idx])
                    except np.linalg.LinAlgError:
                        continue
                    if np.any(phi[idx] < 0.0):
                        continue
                    # KKT: a feasible stationary point on its support whose gradient is
                    # strictly positive in every coordinate held at zero is the minimum of the
                    # convex objective over theta >= 0 (the whole support: no coordinate held),
                    # so no support visited later can beat it. Strict: where a gradient is
                    # ~0 the optimum is degenerate and the enumeration's tie rule decides.
                    # A refit is 13 calls, each 8 solves without this (~240 us a call here)
                    held = [j for j in range(p) if j not in support]
                    if not held or np.all((system @ phi - target)[held] > 0.0):
                        return phi / self.scale
                r = y - z @ phi
                obj = float(np.sum(w * r * r) + np.sum(ridge * (phi - phi_prior) ** 2))
                if obj < best_obj * (1.0 - 1e-12):       # ties keep the larger support
                    best_obj, best_phi = obj, phi
        return best_phi / self.scale


def _median(a: np.ndarray) -> float:
    """np.median of a 1-D float array without NaNs, equal to it bit for bit (the middle
    element, or the mean of the two middle ones), at a fraction of its dispatch cost."""
    n = a.shape[0]
    h = n // 2
    if n % 2:
        return float(np.partition(a, h)[h])
    part = np.partition(a, (h - 1, h))
    return float((part[h - 1] + part[h]) / 2.0)


def _robust_scale(r: np.ndarray) -> float:
    med = _median(r)
    mad = _median(np.abs(r - med))
    # Floor: exact data has MAD 0; keep weights finite and near 1 there.
    return max(1.4826 * mad, 1e-9)


def robust_nnls(x: np.ndarray, y: np.ndarray, prior: np.ndarray,
                prior_strength: float = 1e-6) -> np.ndarray:
    """Huber then Tukey IRLS around `nnls_ridge`, on RELATIVE residuals (y - x.theta) / y:
    timing noise is multiplicative (a long step jitters by more seconds than a short one),
    so absolute residuals would flag every long step as an outlier. Deterministic: fixed
    iteration counts. Rows with y <= ~0 (1e-12 of max(1, max y)) get no weight."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != prior.shape[0]:
        raise ValueError("shape mismatch between x, y and prior")
    pos = y > 1e-12 * max(1.0, float(np.max(y, initial=0.0)))   # ~0 times: no weight
    if not pos.any():
        return prior.copy()
    inv_y = np.where(pos, 1.0 / np.where(pos, y, 1.0), 0.0)
    base = inv_y * inv_y                       # weights of relative squared error
    w = base.copy()
    ridge = _Ridge(x, y, prior)
    theta = ridge.solve(w, prior_strength * w.sum())
    for it in range(_HUBER_ITERS + _TUKEY_ITERS):
        rel = (y - x @ theta) * inv_y
        s = _robust_scale(rel[pos])
        u = np.abs(rel) / s
        if it < _HUBER_ITERS:
            rw = np.where(u <= _HUBER_K, 1.0, _HUBER_K / np.maximum(u, 1e-300))
        else:
            rw = (1.0 - np.minimum(u / _TUKEY_C, 1.0) ** 2) ** 2
        w = base * rw
        if w.sum() <= 0.0:          # everything flagged: keep the last estimate
            break
        theta = ridge.solve(w, prior_strength * w.sum())
    return theta
