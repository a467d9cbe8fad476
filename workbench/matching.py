"""One-to-one matching of predictions (rows) to ground truth (columns).

Perception-R1 scores multi-instance answers by *bipartite* matching: each prediction is paired with at most one
ground-truth object so that the total cost is minimal (the Hungarian algorithm, here
``scipy.optimize.linear_sum_assignment``), and only then are pairs judged (e.g. "true positive if IoU >= 0.5").
``greedy`` is the naive alternative (take the best remaining pair, repeat), kept for teaching: on crowded scenes it
can lock in one good pair and leave the rest badly matched, which the Hungarian assignment never does.

Both return a :class:`Matching` and share one acceptance rule, applied after the assignment:

- ``threshold``: a pair is kept when its score is at least (``inclusive=True``) or strictly beyond
  (``inclusive=False``) the threshold — "beyond" means above for ``maximize=True``, below for costs;
- ``keep``: an optional boolean mask [N, M] computed from another matrix, e.g. the released PR1 detection reward
  matches on a DETR cost and then keeps pairs whose IoU > 0.5 (``keep=iou > 0.5``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass
class Matching:
    """Result of matching N rows (predictions) to M columns (ground truth).

    ``pairs[k] = (row, col)`` with ``scores[k]`` the matrix entry of that pair; rows are sorted ascending.
    Every row index appears exactly once in ``pairs`` or ``unmatched_rows`` (same for columns).
    """

    pairs: list[tuple[int, int]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    unmatched_rows: list[int] = field(default_factory=list)
    unmatched_cols: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def rows(self) -> np.ndarray:
        """Matched row indices [K] (int)."""
        return np.asarray([r for r, _ in self.pairs], dtype=np.int64)

    @property
    def cols(self) -> np.ndarray:
        """Matched column indices [K] (int)."""
        return np.asarray([c for _, c in self.pairs], dtype=np.int64)


def hungarian(matrix, *, maximize: bool = False, threshold: float | None = None, inclusive: bool = True,
              keep=None) -> Matching:
    """Optimal one-to-one assignment on a cost (or, with ``maximize=True``, reward) matrix [N, M].

    Rectangular matrices assign min(N, M) pairs; an empty side gives no pairs. The matrix must be finite
    (``linear_sum_assignment`` cannot order NaN or infinite entries). Pairs failing the acceptance rule (see the
    module docstring) are moved to the unmatched lists.
    """
    m = _as_matrix(matrix)
    if m.size == 0:
        return _accept(m, np.zeros(0, np.int64), np.zeros(0, np.int64), maximize, threshold, inclusive, keep)
    rows, cols = linear_sum_assignment(m, maximize=maximize)
    return _accept(m, rows, cols, maximize, threshold, inclusive, keep)


def greedy(matrix, *, maximize: bool = False, threshold: float | None = None, inclusive: bool = True,
           keep=None) -> Matching:
    """Greedy one-to-one assignment: repeatedly take the best remaining entry whose row and column are free.

    Same input, acceptance rule and result type as :func:`hungarian`; ties are broken by row-major order.
    """
    m = _as_matrix(matrix)
    n_rows, n_cols = m.shape
    order = np.argsort(-m if maximize else m, axis=None, kind="stable")
    row_free, col_free = np.ones(n_rows, bool), np.ones(n_cols, bool)
    rows, cols = [], []
    for flat in order:
        if len(rows) == min(n_rows, n_cols):
            break
        r, c = divmod(int(flat), n_cols)
        if row_free[r] and col_free[c]:
            row_free[r] = col_free[c] = False
            rows.append(r)
            cols.append(c)
    rows_arr, cols_arr = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    by_row = np.argsort(rows_arr, kind="stable")
    return _accept(m, rows_arr[by_row], cols_arr[by_row], maximize, threshold, inclusive, keep)


def _as_matrix(matrix) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        if m.size == 0:
            return np.zeros((0, 0))
        raise ValueError(f"expected a 2-D cost matrix [N, M], got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"expected a finite cost matrix, got {int((~np.isfinite(m)).sum())} non-finite entries")
    return m


def _accept(m: np.ndarray, rows: np.ndarray, cols: np.ndarray, maximize: bool, threshold, inclusive: bool,
            keep) -> Matching:
    """Apply the acceptance rule to assigned pairs (rows[k], cols[k]) and collect the unmatched indices."""
    scores = m[rows, cols]
    ok = np.ones(len(rows), bool)
    if threshold is not None:
        if maximize:
            ok &= scores >= threshold if inclusive else scores > threshold
        else:
            ok &= scores <= threshold if inclusive else scores < threshold
    if keep is not None:
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != m.shape:
            raise ValueError(f"expected a keep mask of shape {m.shape}, got {keep.shape}")
        ok &= keep[rows, cols]
    rows, cols, scores = rows[ok], cols[ok], scores[ok]
    row_used, col_used = np.zeros(m.shape[0], bool), np.zeros(m.shape[1], bool)
    row_used[rows], col_used[cols] = True, True
    return Matching(pairs=list(zip(rows.tolist(), cols.tolist())), scores=scores.tolist(),
                    unmatched_rows=np.flatnonzero(~row_used).tolist(),
                    unmatched_cols=np.flatnonzero(~col_used).tolist())
