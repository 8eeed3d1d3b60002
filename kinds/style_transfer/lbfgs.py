"""L-BFGS with a backtracking (Armijo) line search, in numpy, resumable bit for bit.

scipy's L-BFGS-B keeps its state inside Fortran code: it cannot be checkpointed and
resumed. Here the whole state is a few arrays (the point, its gradient and the last
`memory` correction pairs) that a checkpoint stores exactly, so a resumed run repeats the
uninterrupted one. Directions come from the standard two-loop recursion (Nocedal &
Wright, algorithm 7.4) with the initial Hessian scaled by s.y / y.y; dot products are
taken in float64, the stored arrays are float32 like the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

ARMIJO = 1e-4  # sufficient decrease: f(x + t d) <= f(x) + ARMIJO * t * g.d
BACKTRACK = 0.5  # step shrink factor per failed trial
MAX_TRIALS = 30  # trials per line search before giving up (step shrunk by 2**-29)
CURVATURE_EPSILON = 1e-10  # pairs with s.y <= eps * y.y are skipped (no positive curvature)

Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]
"""float32 point (flat) -> (loss, float32 gradient (flat))."""


@dataclass
class LbfgsState:
    x: np.ndarray  # float32, flat
    loss: float
    gradient: np.ndarray  # float32, flat
    s: list[np.ndarray] = field(default_factory=list)  # x_{k+1} - x_k, oldest first
    y: list[np.ndarray] = field(default_factory=list)  # g_{k+1} - g_k
    evaluations: int = 1
    stalled: bool = False  # the last line search found no decrease

    def arrays(self) -> dict[str, np.ndarray]:
        size = self.x.size
        return {
            "lbfgs.x": self.x,
            "lbfgs.gradient": self.gradient,
            "lbfgs.s": np.stack(self.s) if self.s else np.zeros((0, size), np.float32),
            "lbfgs.y": np.stack(self.y) if self.y else np.zeros((0, size), np.float32),
        }

    def meta(self) -> dict[str, object]:
        return {"loss": self.loss, "evaluations": self.evaluations, "stalled": self.stalled}

    @classmethod
    def from_checkpoint(
        cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, object]
    ) -> LbfgsState:
        return cls(
            x=np.array(arrays["lbfgs.x"], np.float32),
            loss=float(meta["loss"]),  # type: ignore[arg-type]
            gradient=np.array(arrays["lbfgs.gradient"], np.float32),
            s=[np.array(row, np.float32) for row in arrays["lbfgs.s"]],
            y=[np.array(row, np.float32) for row in arrays["lbfgs.y"]],
            evaluations=int(meta["evaluations"]),  # type: ignore[call-overload]
            stalled=bool(meta["stalled"]),
        )


class Lbfgs:
    """Minimises `objective`; `initial_step` scales the first direction (-initial_step * g)."""

    def __init__(self, objective: Objective, memory: int = 10, initial_step: float = 1.0):
        self.objective = objective
        self.memory = memory
        self.initial_step = initial_step

    def start(self, x: np.ndarray) -> LbfgsState:
        x = np.ascontiguousarray(x, np.float32).reshape(-1)
        loss, gradient = self.objective(x)
        return LbfgsState(x=x, loss=loss, gradient=gradient)

    def iterate(self, state: LbfgsState) -> None:
        """One iteration: a direction, a line search, and the new correction pair.
        Leaves the state unchanged, but `stalled`, when no step decreases the loss."""
        g = state.gradient.astype(np.float64)
        direction = self.direction(state, g)
        slope = float(g @ direction)
        if not slope < 0:  # not a descent direction: forget the curvature history
            state.s.clear()
            state.y.clear()
            direction = -self.initial_step * g
            slope = float(g @ direction)
        step = 1.0
        for _ in range(MAX_TRIALS):
            trial = (state.x + step * direction).astype(np.float32)
            loss, gradient = self.objective(trial)
            state.evaluations += 1
            if math.isfinite(loss) and loss <= state.loss + ARMIJO * step * slope:
                break
            step *= BACKTRACK
        else:
            state.stalled = True
            return
        s = trial - state.x
        y = gradient - state.gradient
        if _dot(s, y) > CURVATURE_EPSILON * _dot(y, y):
            state.s.append(s)
            state.y.append(y)
            del state.s[: -self.memory]
            del state.y[: -self.memory]
        state.x, state.loss, state.gradient, state.stalled = trial, loss, gradient, False

    def direction(self, state: LbfgsState, g: np.ndarray) -> np.ndarray:
        """-H g by the two-loop recursion over the stored pairs (in float64)."""
        if not state.s:
            return -self.initial_step * g
        pairs = list(zip(state.s, state.y, strict=True))
        rhos = [1.0 / _dot(s, y) for s, y in pairs]
        q = g.copy()
        alphas = []
        for (s, y), rho in zip(reversed(pairs), reversed(rhos), strict=True):
            alpha = rho * _dot(s, q)
            q -= alpha * y.astype(np.float64)
            alphas.append(alpha)
        s, y = pairs[-1]
        r = q * (_dot(s, y) / _dot(y, y))
        for (s, y), rho, alpha in zip(pairs, rhos, reversed(alphas), strict=True):
            beta = rho * _dot(y, r)
            r += (alpha - beta) * s.astype(np.float64)
        return -r


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.astype(np.float64, copy=False) @ b.astype(np.float64, copy=False))
