"""Hungarian matching against brute force over every assignment; acceptance rules; greedy."""

import itertools

import numpy as np
import pytest

from workbench.matching import Matching, greedy, hungarian


def brute_force_best(matrix: np.ndarray, maximize: bool) -> float:
    """Best total over every one-to-one assignment of min(N, M) pairs."""
    n, m = matrix.shape
    if min(n, m) == 0:
        return 0.0
    totals = []
    if n <= m:
        for cols in itertools.permutations(range(m), n):
            totals.append(sum(matrix[r, c] for r, c in enumerate(cols)))
    else:
        for rows in itertools.permutations(range(n), m):
            totals.append(sum(matrix[r, c] for c, r in enumerate(rows)))
    return max(totals) if maximize else min(totals)


def assert_partition(result: Matching, shape):
    rows = sorted([r for r, _ in result.pairs] + result.unmatched_rows)
    cols = sorted([c for _, c in result.pairs] + result.unmatched_cols)
    assert rows == list(range(shape[0])) and cols == list(range(shape[1]))


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("n,m", [(n, m) for n in range(0, 7) for m in range(0, 7)])
def test_hungarian_equals_brute_force(n, m, maximize):
    rng = np.random.default_rng(100 * n + m)
    for _ in range(3):
        matrix = rng.normal(size=(n, m))
        result = hungarian(matrix, maximize=maximize)
        assert len(result) == min(n, m)
        assert sum(result.scores) == pytest.approx(brute_force_best(matrix, maximize), abs=1e-12)
        assert result.scores == [matrix[r, c] for r, c in result.pairs]
        assert_partition(result, (n, m))


def test_threshold_inclusive_and_strict():
    iou = np.array([[0.5, 0.1], [0.2, 0.7]])
    inclusive = hungarian(iou, maximize=True, threshold=0.5)
    assert inclusive.pairs == [(0, 0), (1, 1)]
    strict = hungarian(iou, maximize=True, threshold=0.5, inclusive=False)
    assert strict.pairs == [(1, 1)] and strict.unmatched_rows == [0] and strict.unmatched_cols == [0]
    # for costs the threshold is an upper bound
    cost = 1 - iou
    assert hungarian(cost, threshold=0.5).pairs == [(0, 0), (1, 1)]
    assert hungarian(cost, threshold=0.5, inclusive=False).pairs == [(1, 1)]


def test_keep_mask_filters_after_the_assignment():
    # The optimal assignment on the cost is (0,0) + (1,1) = 0.2; the mask then rejects (1,1), and the rejected row
    # is not re-matched to column 0 (filter after assigning, as the released PR1 matcher does).
    cost = np.array([[0.1, 5.0], [0.2, 0.1]])
    iou = np.array([[0.9, 0.0], [0.8, 0.3]])
    result = hungarian(cost, keep=iou > 0.5)
    assert result.pairs == [(0, 0)] and result.unmatched_rows == [1] and result.unmatched_cols == [1]
    with pytest.raises(ValueError, match=r"keep mask of shape \(2, 2\)"):
        hungarian(cost, keep=np.ones((2, 3), bool))


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_empty_sides(shape):
    result = hungarian(np.zeros(shape))
    assert result.pairs == [] and result.unmatched_rows == list(range(shape[0]))
    assert result.unmatched_cols == list(range(shape[1]))
    assert greedy(np.zeros(shape)).pairs == []


def test_non_finite_matrix_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="finite cost matrix"):
        hungarian([[0.0, np.nan]])


def test_greedy_can_be_worse_than_hungarian():
    # Greedy takes the cheapest entry 1 at (0,0) and is left with 100 at (1,1): 101.
    # The optimal assignment (0,1) + (1,0) costs 2 + 2 = 4.
    cost = np.array([[1.0, 2.0], [2.0, 100.0]])
    assert greedy(cost).pairs == [(0, 0), (1, 1)] and sum(greedy(cost).scores) == 101
    assert hungarian(cost).pairs == [(0, 1), (1, 0)] and sum(hungarian(cost).scores) == 4


@pytest.mark.parametrize("maximize", [False, True])
def test_greedy_is_a_valid_matching_never_better_than_optimal(maximize):
    rng = np.random.default_rng(5)
    for n, m in [(4, 6), (6, 4), (5, 5)]:
        matrix = rng.uniform(size=(n, m))
        result = greedy(matrix, maximize=maximize)
        assert len(result) == min(n, m)
        assert_partition(result, (n, m))
        best = brute_force_best(matrix, maximize)
        total = sum(result.scores)
        assert (total <= best + 1e-12) if maximize else (total >= best - 1e-12)
        # the first pick is the best entry of the whole matrix
        flat = np.argmax(matrix) if maximize else np.argmin(matrix)
        assert divmod(int(flat), m) in result.pairs
