"""Benchmark metrics: COCO AP equal to pycocotools, inclusive grounding thresholds, hand-computed OCR values."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

from workbench import metrics as M

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

LABELS = ("cat", "dog", "car", "person")


def random_detection_data(n_images: int, seed: int, *, grid: bool = False, many: bool = False):
    """Per-image GT and predictions: small/medium/large boxes, crowd regions, custom areas, images without GT
    or without predictions, duplicated boxes (IoU ties), wrong and unknown labels, varied scores."""
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    for _ in range(n_images):
        def boxes(k):
            if grid:  # integer coordinates: exact IoU ties and IoU exactly at thresholds
                x, y = rng.integers(0, 10, k) * 10, rng.integers(0, 10, k) * 10
                w, h = rng.choice([4, 10, 20, 40, 120], k), rng.choice([4, 10, 20, 40, 120], k)
            else:
                scale = rng.choice([8, 40, 200], k)  # small / medium / large
                x, y = rng.uniform(0, 600, k), rng.uniform(0, 600, k)
                w, h = scale * rng.uniform(0.5, 1.5, k), scale * rng.uniform(0.5, 1.5, k)
            return np.stack([x, y, x + w, y + h], 1).astype(float)

        ng = 0 if rng.random() < 0.1 else int(rng.integers(1, 8))
        g = boxes(ng)
        if ng > 1 and rng.random() < 0.3:
            g[1] = g[0]
        glab = [str(v) for v in rng.choice(LABELS, ng)]
        keep = rng.random(ng) < 0.7
        jitter = rng.normal(0, 0.08, (int(keep.sum()), 4)) * (g[keep, 2:3] - g[keep, 0:1])
        p = np.concatenate([g[keep] + (0 if grid else jitter), boxes(int(rng.integers(0, 150 if many else 5)))])
        plab = [lab if rng.random() > 0.1 else str(rng.choice(LABELS)) for lab, k in zip(glab, keep) if k]
        plab += [str(v) for v in rng.choice(LABELS + ("unicorn",), len(p) - len(plab))]
        if rng.random() < 0.1:
            p, plab = np.zeros((0, 4)), []
        order = rng.permutation(len(p))
        p[:, 2:] = np.maximum(p[:, 2:], p[:, :2] + 0.5)
        gts.append({"boxes": g.tolist(), "labels": glab, "iscrowd": (rng.random(ng) < 0.1).tolist(),
                    "areas": ((g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) * rng.uniform(0.5, 1.0, ng)).tolist()})
        preds.append({"boxes": p[order].tolist(), "labels": [plab[j] for j in order],
                      "scores": rng.choice([1.0, 0.9, 0.5], len(p)).tolist()})
    return preds, gts


def pycocotools_eval(preds, gts, *, use_scores: bool):
    cats = sorted({lab for g in gts for lab in g["labels"]})
    cid = {c: k + 1 for k, c in enumerate(cats)}
    anns = []
    for i, g in enumerate(gts):
        for b, lab, crowd, area in zip(g["boxes"], g["labels"], g["iscrowd"], g["areas"]):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cid[lab], "area": area,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "iscrowd": int(crowd)})
    res = [{"image_id": i + 1, "category_id": cid.get(lab, 999), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            "score": s if use_scores else 1.0}
           for i, p in enumerate(preds) for b, lab, s in zip(p["boxes"], p["labels"], p["scores"])]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": i + 1} for i in range(len(gts))], "annotations": anns,
                        "categories": [{"id": v, "name": k} for k, v in cid.items()]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(res), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("seed,grid,many,use_scores", [(0, False, False, False), (1, True, False, True),
                                                       (2, False, True, False), (3, True, True, False)])
def test_detection_metrics_equal_pycocotools(seed, grid, many, use_scores):
    preds, gts = random_detection_data(250, seed, grid=grid, many=many)
    ev = pycocotools_eval(preds, gts, use_scores=use_scores)
    if not use_scores:
        preds = [{k: v for k, v in p.items() if k != "scores"} for p in preds]
    ours = M.detection_metrics(preds, gts)
    for name, theirs in zip(M.COCO_STATS, ev.stats):
        assert ours[name] == pytest.approx(theirs, abs=1e-6), name
    precision, recall, _ = M.coco_precision_recall(preds, gts)
    np.testing.assert_allclose(precision, ev.eval["precision"], atol=1e-12)
    np.testing.assert_allclose(recall, ev.eval["recall"], atol=1e-12)
    assert ours["n_images"] == 250


def test_detection_metrics_default_areas_and_no_crowd_match_pycocotools():
    preds, gts = random_detection_data(120, 7)
    for g in gts:
        g["areas"] = [(b[2] - b[0]) * (b[3] - b[1]) for b in g["boxes"]]
        g["iscrowd"] = [False] * len(g["boxes"])
    ev = pycocotools_eval(preds, gts, use_scores=False)
    plain_gts = [{"boxes": g["boxes"], "labels": g["labels"]} for g in gts]
    plain_preds = [{"boxes": p["boxes"], "labels": p["labels"]} for p in preds]
    ours = M.detection_metrics(plain_preds, plain_gts)
    assert [ours[k] for k in M.COCO_STATS] == pytest.approx(list(ev.stats), abs=1e-6)


def test_detection_edge_cases():
    gts = [{"boxes": [[0, 0, 10, 10]], "labels": ["cat"]}, {"boxes": [], "labels": []}]
    # no prediction anywhere (pycocotools cannot even load an empty result list)
    empty = M.detection_metrics([{"boxes": [], "labels": []}] * 2, gts)
    assert empty["AP"] == 0 and empty["AR100"] == 0
    assert empty["APm"] == -1  # no medium GT: undefined, as COCOeval reports
    perfect = M.detection_metrics([{"boxes": [[0, 0, 10, 10]], "labels": ["cat"]}, {"boxes": [], "labels": []}], gts)
    assert perfect["AP"] == pytest.approx(1.0) and perfect["APs"] == pytest.approx(1.0)
    # a false positive on the image without GT lowers precision
    fp = M.detection_metrics([{"boxes": [[0, 0, 10, 10]], "labels": ["cat"]},
                              {"boxes": [[0, 0, 5, 5]], "labels": ["cat"]}], gts)
    assert fp["AP"] < 1
    no_gt = M.detection_metrics([{"boxes": [[0, 0, 1, 1]], "labels": ["cat"]}], [{"boxes": [], "labels": []}])
    assert no_gt["AP"] == -1 and no_gt["ignored_labels"] == 1
    with pytest.raises(ValueError, match="one label per box"):
        M.detection_metrics([{"boxes": [[0, 0, 1, 1]], "labels": []}], gts[:1])
    with pytest.raises(ValueError, match="one prediction entry per image"):
        M.detection_metrics([], gts)


def test_grounding_threshold_is_inclusive():
    gt = [0, 0, 20, 100]
    # IoU exactly 0.5, 0.75 and 0.95 (integer boxes: the division is exact to the nearest double)
    at = {0.5: [0, 0, 10, 100], 0.75: [0, 0, 15, 100], 0.95: [0, 0, 19, 100]}
    for t, box in at.items():
        assert M.grounding_ious([box], [gt])[0] == t
        m = M.grounding_metrics([box], [gt])
        assert m[f"acc@{t:g}"] == 1.0
        higher = [x for x in M.GROUNDING_THRESHOLDS if x > t]
        assert all(m[f"acc@{x:g}"] == 0.0 for x in higher)
    below = M.grounding_metrics([[0, 0, 9.999, 100]], [gt])
    assert below["acc@0.5"] == 0.0


def test_grounding_metrics_values():
    m = M.grounding_metrics([[0, 0, 10, 10], None, [0, 0, 5, 10]], [[0, 0, 10, 10], [0, 0, 1, 1], [0, 0, 10, 10]])
    assert m["acc@0.5"] == pytest.approx(2 / 3) and m["acc@0.75"] == pytest.approx(1 / 3)
    assert m["acc_mean"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3)
    assert m["miou"] == pytest.approx((1 + 0 + 0.5) / 3) and m["n"] == 3


def test_counting_metrics():
    m = M.counting_metrics([0, 3, None, 5], [0, 2, 4, 5])
    assert m["accuracy"] == 0.5  # GT 0 answered 0 is correct; None is wrong
    assert m["mae"] == pytest.approx(1 / 3) and m["unparsed"] == 1


def test_ocr_metrics_hand_computed():
    m = M.ocr_metrics(["the cat sat"], ["the cat sat down"])
    assert m["edit_distance"] == pytest.approx(5 / 16)
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert m["bleu4"] == 0.0  # no 4-gram in a 3-word hypothesis
    # every n-gram matches; brevity penalty exp(1 - 6/5)
    assert M.sentence_bleu4("a b c d e".split(), "a b c d e f".split()) == pytest.approx(math.exp(-0.2))
    # p1..p4 = 5/6, 3/5, 2/4, 1/3; hypothesis longer than the reference: no penalty
    assert M.sentence_bleu4("a b c d x e".split(), "a b c d e".split()) == pytest.approx((1 / 12) ** 0.25)
    both = M.ocr_metrics(["", None], ["", "abc"])
    assert both["edit_distance"] == pytest.approx((0 + 1) / 2)
    assert both["f1"] == pytest.approx(0.5)
    assert both["n"] == 2


def test_ocr_meteor_is_reported_missing_without_its_data():
    m = M.ocr_metrics(["a b"], ["a b"])
    if m["meteor"] is None:
        assert "WordNet" in m["missing"]["meteor"]
    else:  # nltk and WordNet installed
        assert 0 <= m["meteor"] <= 1
