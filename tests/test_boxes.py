"""Box geometry against supervision, SciPy and hand-written scalar references."""

import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from workbench import boxes

with warnings.catch_warnings():  # supervision warns that OpenCV is absent; its IoU is pure NumPy anyway
    warnings.simplefilter("ignore")
    import supervision as sv


def scalar_iou(a, b) -> float:
    """Textbook IoU of two xyxy boxes; a box with no positive area has IoU 0 with everything."""
    area_a = (a[2] - a[0]) * (a[3] - a[1]) if a[2] > a[0] and a[3] > a[1] else 0.0
    area_b = (b[2] - b[0]) * (b[3] - b[1]) if b[2] > b[0] and b[3] > b[1] else 0.0
    if area_a == 0 or area_b == 0:
        return 0.0
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / (area_a + area_b - inter)


def scalar_giou(a, b) -> float:
    """GIoU (Rezatofighi et al. 2019) of two valid xyxy boxes."""
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = area_a + area_b - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


def random_valid_boxes(rng, n, scale=100.0):
    xy = rng.uniform(0, scale, (n, 2))
    wh = rng.uniform(0.5, scale / 2, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


@pytest.mark.parametrize("seed", range(5))
def test_iou_matrix_equals_supervision_and_scalar_reference(seed):
    rng = np.random.default_rng(seed)
    a, b = random_valid_boxes(rng, 13), random_valid_boxes(rng, 7)
    ours = boxes.iou_matrix(a, b)
    assert ours.shape == (13, 7)
    np.testing.assert_allclose(ours, sv.box_iou_batch(a, b), atol=1e-5)  # supervision computes in float32
    reference = np.array([[scalar_iou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)
    assert (ours > 0).any() and (ours == 0).any()  # the sample has both overlapping and disjoint pairs


def test_iou_matrix_on_arbitrary_corners_matches_the_scalar_rule():
    # Random corners: many boxes are inverted or degenerate; their IoU must be 0, never NaN.
    rng = np.random.default_rng(7)
    a = rng.integers(0, 20, (40, 4)).astype(float)
    b = rng.integers(0, 20, (30, 4)).astype(float)
    ours = boxes.iou_matrix(a, b)
    reference = np.array([[scalar_iou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(ours, reference, atol=1e-12)
    assert np.isfinite(ours).all()
    assert (~boxes.is_valid(a)).any() and (ours > 0).any()


@pytest.mark.parametrize("seed", range(3))
def test_giou_matrix_equals_scalar_reference(seed):
    rng = np.random.default_rng(seed)
    a, b = random_valid_boxes(rng, 9), random_valid_boxes(rng, 11)
    ours = boxes.giou_matrix(a, b)
    reference = np.array([[scalar_giou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)
    assert (ours <= boxes.iou_matrix(a, b) + 1e-12).all() and (ours >= -1).all()
    assert (ours < 0).any()  # far-apart pairs are penalised below 0, unlike IoU


def test_giou_worked_example_and_invalid_boxes():
    # [0,0,2,2] vs [3,0,4,2]: IoU 0, union 4 + 2 = 6, hull [0,0,4,2] = 8 -> GIoU = 0 - (8 - 6) / 8 = -0.25
    assert boxes.giou_matrix([[0, 0, 2, 2]], [[3, 0, 4, 2]])[0, 0] == pytest.approx(-0.25)
    # identical boxes: 1; an inverted or zero-area box: -1 (never preferred by a matcher)
    assert boxes.giou_matrix([[0, 0, 2, 2]], [[0, 0, 2, 2]])[0, 0] == pytest.approx(1.0)
    assert boxes.giou_matrix([[2, 2, 0, 0], [1, 1, 1, 3]], [[0, 0, 2, 2]]).tolist() == [[-1.0], [-1.0]]


def test_iou_worked_examples():
    # half overlap: [0,0,2,2] and [1,0,3,2]: intersection 2, union 4 + 4 - 2 = 6 -> 1/3
    assert boxes.iou_matrix([[0, 0, 2, 2]], [[1, 0, 3, 2]])[0, 0] == pytest.approx(1 / 3)
    # touching edges have zero intersection
    assert boxes.iou_matrix([[0, 0, 2, 2]], [[2, 0, 4, 2]])[0, 0] == 0.0
    # inverted box scores 0 unless repaired by sort_corners
    inverted = [[2, 2, 0, 0]]
    assert boxes.iou_matrix(inverted, [[0, 0, 2, 2]])[0, 0] == 0.0
    assert boxes.iou_matrix(boxes.sort_corners(inverted), [[0, 0, 2, 2]])[0, 0] == 1.0
    assert boxes.iou_matrix(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)


def test_format_conversions():
    xyxy = np.array([[10.0, 20.0, 30.0, 60.0]])
    assert boxes.convert(xyxy, "xyxy", "xywh").tolist() == [[10, 20, 20, 40]]
    assert boxes.convert(xyxy, "xyxy", "cxcywh").tolist() == [[20, 40, 20, 40]]
    rng = np.random.default_rng(0)
    many = random_valid_boxes(rng, 20)
    for fmt in ("xywh", "cxcywh"):
        np.testing.assert_allclose(boxes.convert(boxes.convert(many, "xyxy", fmt), fmt, "xyxy"), many)
    with pytest.raises(ValueError, match="unknown box format"):
        boxes.convert(xyxy, "xyxy", "yolo")


def test_validity_area_centres_and_clipping():
    b = np.array([[0, 0, 2, 4], [3, 3, 1, 5], [1, 1, 1, 2], [0, 0, np.inf, 1]])
    assert boxes.is_valid(b).tolist() == [True, False, False, False]
    assert boxes.area(b).tolist() == [8.0, 0.0, 0.0, 0.0]
    assert boxes.sort_corners(b[1:2]).tolist() == [[1, 3, 3, 5]]
    assert boxes.centers(b[:1]).tolist() == [[1.0, 2.0]]
    assert boxes.clip_to_image([[-5, 10, 700, 90]], (640, 80)).tolist() == [[0, 10, 640, 80]]
    with pytest.raises(ValueError, match=r"expected boxes of shape \[N, 4\]"):
        boxes.as_boxes([[1, 2, 3]])


def test_distance_matrices_equal_scipy():
    rng = np.random.default_rng(3)
    p, q = rng.normal(size=(6, 2)), rng.normal(size=(4, 2))
    np.testing.assert_allclose(boxes.point_distance_matrix(p, q), cdist(p, q))
    a, b = random_valid_boxes(rng, 5), random_valid_boxes(rng, 3)
    np.testing.assert_allclose(boxes.l1_matrix(a, b), cdist(a, b, metric="cityblock"))
    assert boxes.point_distance_matrix([], [[0, 0]]).shape == (0, 1)
