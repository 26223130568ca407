"""Bayesian optimisation that knows what is running: the decision, without KerasTuner.

`_kt_bayesian.ParallelBayesianOracle` puts it behind our chief. Points live in
the unit cube KerasTuner's Bayesian oracle uses (one coordinate per tunable
hyperparameter, `value_to_prob`); scores are to be minimised (the caller
negates a maximised objective). TensorFlow-free: numpy, scipy, scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

__all__ = ["LiarGP", "LIES", "steps_apart"]

#: What a running trial is taken to score, best measured first (bench/README.md).
LIES = ("believer", "worst", "mean", "best")


def steps_apart(a: np.ndarray, b: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """How far point `a` is from each row of `b`, in the space's steps.

    `a`: shape (d,); `b`: shape (n, d); `steps`: shape (d,), one step of each
    coordinate (a Choice of n values: 1/n; a continuous Float: its resolution).
    Returns shape (n,): the largest |a - b| / step over the coordinates. Below
    1, the two points are closer than one step in every coordinate, i.e. the
    same configuration as far as the space can tell.
    """
    if len(b) == 0:
        return np.zeros(0)
    return np.max(np.abs(np.asarray(b, float) - np.asarray(a, float)) / steps, axis=1)


class LiarGP:
    """GP-UCB that lies about the running trials, so parallel workers spread out.

    Gaussian-process upper confidence bound (Srinivas et al., "Gaussian Process
    Optimization in the Bandit Setting", ICML 2010), the model KerasTuner's
    Bayesian oracle uses (Matern 5/2 kernel, normalised targets, `beta` = 2.6,
    L-BFGS-B from `restarts` random starts), made parallel as Ginsbourger, Le
    Riche and Carraro propose ("Kriging Is Well-Suited to Parallelize
    Optimization", 2010): each running trial is fitted as if it had already
    ended with a provisional score, the `lie`, so the model's uncertainty
    collapses there and the next proposal goes elsewhere. The lie is the
    model's own prediction there ("believer", their kriging believer) or a
    constant liar: the worst, the mean or the best score so far. The kernel's
    length scale is fitted to the real results only.

    A proposal is also at least one step (see `steps_apart`) from every running
    and every tried point; when no optimum of the acquisition is, `propose`
    returns None (the caller samples at random).

    State: the settings and a seeded random generator.

    Args:
        lie: "believer", "worst", "mean" or "best".
        alpha: noise added to the kernel's diagonal.
        beta: exploration weight of the bound (mean - beta * std is minimised).
        restarts: L-BFGS-B starting points per proposal.
        seed: seeds the starting points and the kernel fit.

    Raises:
        ValueError: an unknown `lie`.
    """

    def __init__(
        self,
        *,
        lie: Literal["believer", "worst", "mean", "best"] = "believer",
        alpha: float = 1e-4,
        beta: float = 2.6,
        restarts: int = 50,
        seed: int = 0,
    ):
        if lie not in LIES:
            raise ValueError(f"lie must be one of {', '.join(LIES)}, but got {lie=}.")
        self.lie, self.alpha, self.beta, self.restarts, self.seed = lie, alpha, beta, restarts, seed
        self.random = np.random.RandomState(seed)

    def _kernel(self) -> object:
        import sklearn.gaussian_process

        return sklearn.gaussian_process.kernels.Matern(nu=2.5)

    def _gp(self, x: np.ndarray, y: np.ndarray, kernel: object, fit_kernel: bool = True) -> object:
        import warnings

        import sklearn.exceptions
        import sklearn.gaussian_process

        gpr = sklearn.gaussian_process.GaussianProcessRegressor(
            kernel=kernel,
            n_restarts_optimizer=20 if fit_kernel else 0,
            optimizer="fmin_l_bfgs_b" if fit_kernel else None,
            normalize_y=True,
            alpha=self.alpha,
            random_state=self.seed,
        )
        with warnings.catch_warnings():
            # A length scale at its bound is a fit, not a fault: say nothing per trial.
            warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
            gpr.fit(x, y)
        return gpr

    def lie_value(self, scores: np.ndarray) -> float:
        """A constant liar's provisional score, from the finished trials' `scores`."""
        if self.lie == "worst":
            return float(np.max(scores))
        if self.lie == "best":
            return float(np.min(scores))
        return float(np.mean(scores))

    def propose(
        self,
        observed_x: np.ndarray,
        observed_y: np.ndarray,
        running_x: np.ndarray,
        steps: np.ndarray,
        snap: Callable[[np.ndarray], np.ndarray] | None = None,
        avoid_x: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """The next point to try, given what ended and what runs.

        Args:
            observed_x: (n, d) finished trials' points, n >= 1.
            observed_y: (n,) their scores, lower is better.
            running_x: (m, d) running trials' points (m may be 0).
            steps: (d,) one step of each coordinate.
            snap: maps a point to the point of the configuration it stands for
                (discrete coordinates to their value's centre); identity if None.
            avoid_x: (k, d) further points not to propose again (failed trials).

        Returns:
            A snapped point (d,) at least one step from every observed,
            running and avoided point, or None when no optimum found is.
        """
        from threadpoolctl import threadpool_limits

        # A few hundred points at most: one BLAS thread is 3-7x faster than
        # several fighting for two cores (measured in the benchmark).
        with threadpool_limits(limits=1, user_api="blas"):
            return self._propose(observed_x, observed_y, running_x, steps, snap, avoid_x)

    def _propose(
        self,
        observed_x: np.ndarray,
        observed_y: np.ndarray,
        running_x: np.ndarray,
        steps: np.ndarray,
        snap: Callable[[np.ndarray], np.ndarray] | None,
        avoid_x: np.ndarray | None,
    ) -> np.ndarray | None:
        import scipy.optimize

        snap = snap or (lambda x: x)
        observed_x = np.asarray(observed_x, float).reshape(len(observed_y), -1)
        dims = observed_x.shape[1]
        running_x = np.asarray(running_x, float).reshape(-1, dims)
        observed_y = np.nan_to_num(np.asarray(observed_y, float), posinf=0, neginf=0)
        # The kernel is fitted to what was observed; the lies only condition it.
        # Fitted to the lies as well, a kernel sees as many made-up values as
        # real ones when many workers run, and its length scale collapses.
        gpr = self._gp(observed_x, observed_y, self._kernel())
        x = observed_x
        if len(running_x):
            x = np.vstack([observed_x, running_x])
            lies = gpr.predict(running_x) if self.lie == "believer" else np.full(len(running_x), self.lie_value(observed_y))
            y = np.concatenate([observed_y, lies])
            gpr = self._gp(x, y, gpr.kernel_, fit_kernel=False)

        def bound(point: np.ndarray) -> float:
            mean, std = gpr.predict(point.reshape(1, -1), return_std=True)
            return float(mean[0] - self.beta * std[0])

        starts = self.random.uniform(0.0, 1.0, size=(self.restarts, dims))
        found = []
        for start in starts:
            result = scipy.optimize.minimize(bound, x0=start, bounds=[(0.0, 1.0)] * dims, method="L-BFGS-B")
            found.append((float(np.ravel(result.fun)[0]), result.x))
        taken = [x]
        if avoid_x is not None and len(avoid_x):
            taken.append(np.asarray(avoid_x, float).reshape(-1, dims))
        taken_x = np.vstack(taken)
        for _, point in sorted(found, key=lambda item: item[0]):
            candidate = snap(np.clip(point, 0.0, 1.0))
            if len(taken_x) == 0 or steps_apart(candidate, taken_x, steps).min() >= 1.0 - 1e-9:
                return candidate
        return None
