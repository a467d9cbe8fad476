"""Worked examples of the ``paper`` preset (REWARDS.md), numbers computed by hand in the comments."""

import math

import Levenshtein
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.conventions import Convention
from workbench.rewards import reward_range, score
from workbench.rewards.ocr import edit_similarity

REF = "<|object_ref_start|>{}<|object_ref_end|>"
BOX = "<|box_start|>{}<|box_end|>"
END = "<|im_end|>"
DIAGONAL = 1000 * math.sqrt(2)

# 500x250 image, Qwen2-VL 0-1000 frame: x_px = x / 2, y_px = y / 4.
# GT box [50, 50, 150, 100] px is (100,200),(300,400) in the frame.
GROUNDING_GT = {"box": [50, 50, 150, 100]}


# --- grounding ----------------------------------------------------------------------------------------------------
def test_grounding_in_the_0_1000_frame_of_a_500x250_image():
    text = REF.format("the cat") + BOX.format("(100,200),(200,400)") + END
    b = score("grounding", text, GROUNDING_GT, image_size=(500, 250))
    # pred px [50, 50, 100, 100]: area 50*50 = 2500; GT area 100*50 = 5000; intersection 2500
    # IoU = 2500 / (2500 + 5000 - 2500) = 0.5; total = format 1 + 0.5
    assert b.parts["iou"] == pytest.approx(0.5)
    assert b.total == pytest.approx(1.5) and b.parts["format"] == 1.0 and b.parts["answer"] == pytest.approx(0.5)
    assert b.prediction.boxes.tolist() == [[50, 50, 100, 100]]
    assert b.matches[0].pred == 0 and b.matches[0].iou == pytest.approx(0.5)


def test_grounding_in_qwen2_5_vl_resized_pixels_504x308():
    # 500x300 image fed at 504x308: bbox [252,154,504,308] -> px [250,150,500,300] (x * 500/504, y * 300/308)
    text = '```json\n[{"bbox_2d": [252, 154, 504, 308], "label": "cat"}]\n```'
    b = score("grounding", text, {"box": [300, 150, 500, 300]}, image_size=(500, 300), convention="qwen2_5_vl")
    # pred area 250*150 = 37500; GT area 200*150 = 30000 inside it; IoU = 30000 / 37500 = 0.8
    assert b.total == pytest.approx(1.8)


def test_grounding_with_a_convention_object_carrying_max_pixels():
    conv = Convention("qwen2_5_vl", max_pixels=100_000)  # 500x300 fed at 392x224 (see test_conventions)
    b = score("grounding", '{"bbox_2d": [196, 112, 392, 224]}', {"box": [250, 150, 500, 300]},
              image_size=(500, 300), convention=conv)
    # 196 * 500/392 = 250, 112 * 300/224 = 150: the GT box exactly, IoU 1
    assert b.total == pytest.approx(2.0)


def test_grounding_edge_cases():
    size = (500, 250)
    # inverted corners are sorted first: same box as above, IoU 0.5
    inverted = score("grounding", BOX.format("(200,400),(100,200)"), GROUNDING_GT, image_size=size)
    assert inverted.total == pytest.approx(1.5)
    # several boxes: the first one counts (the second would be a perfect match)
    first = score("grounding", BOX.format("(100,200),(200,400)") + BOX.format("(100,200),(300,400)"),
                  GROUNDING_GT, image_size=size)
    assert first.parts["iou"] == pytest.approx(0.5)
    # a degenerate box has IoU 0 but is still a box: format +1
    assert score("grounding", "[100,200,100,400]", GROUNDING_GT, image_size=size).total == 1.0
    # clipped to the image: (0,0),(2000,2000) becomes the whole image [0,0,500,250];
    # IoU = 5000 / (500*250) = 0.04
    clipped = score("grounding", "[0,0,2000,2000]", GROUNDING_GT, image_size=size)
    assert clipped.parts["iou"] == pytest.approx(0.04)
    # no box: format -1, answer 0
    nothing = score("grounding", "I cannot see a cat.", GROUNDING_GT, image_size=size)
    assert nothing.total == -1.0 and nothing.prediction.boxes.shape == (0, 4) and nothing.malformed


def test_weights_and_gate():
    size = (500, 250)
    text = BOX.format("(100,200),(200,400)")  # IoU 0.5, format ok
    weighted = score("grounding", text, GROUNDING_GT, image_size=size, weights={"format": 0.5, "answer": 2})
    # 0.5 * 1 + 2 * 0.5 = 1.5, split into its weighted parts
    assert weighted.total == pytest.approx(1.5) and weighted.parts["format"] == 0.5
    assert weighted.parts["answer"] == pytest.approx(1.0)
    assert reward_range("grounding", "paper", weights={"format": 0.5, "answer": 2}) == (-0.5, 2.5)
    # thinking without an <answer> block: the box is read (IoU 0.5) but the format fails
    broken = "<think>it is there</think>" + text
    assert score("grounding", broken, GROUNDING_GT, image_size=size).total == pytest.approx(-1 + 0.5)
    assert score("grounding", broken, GROUNDING_GT, image_size=size, format_mode="gate").total == -1.0
    with pytest.raises(ValueError, match="unknown reward weight"):
        score("grounding", text, GROUNDING_GT, image_size=size, weights={"iou": 1})
    with pytest.raises(ValueError, match="unknown format_mode"):
        score("grounding", text, GROUNDING_GT, image_size=size, format_mode="multiply")


def test_solution_as_json_string_and_errors_for_unknown_names():
    text = BOX.format("(100,200),(200,400)")
    as_string = score("grounding", text, '{"box": [50, 50, 150, 100]}', image_size=(500, 250))
    assert as_string.total == pytest.approx(1.5)
    with pytest.raises(ValueError, match="unknown task"):
        score("segmentation", text, {}, image_size=(9, 9))
    with pytest.raises(ValueError, match="unknown reward preset"):
        score("grounding", text, GROUNDING_GT, image_size=(9, 9), preset="r1")


# --- counting -----------------------------------------------------------------------------------------------------
# 500x250 image; GT points px (100,50), (400,200) are (200,200), (800,800) in 0-1000 units.
COUNTING_GT = {"points": [[100, 50], [400, 200]]}


def test_counting_points_in_normalised_units():
    text = REF.format("cat") + BOX.format("(150,150),(250,250)") + BOX.format("(700,700),(900,860)") + BOX.format(
        "(450,450),(550,550)")
    b = score("counting", text, COUNTING_GT, image_size=(500, 250))
    # centres (200,200), (800,780), (500,500); Hungarian pairs (0,0) d=0 and (1,1) d=20 (not 5: the y gap is
    # 5 px but 20 units of 1000), mean 10; ratio 2/3
    # answer = 2/3 * (1 - 10 / (1000 * sqrt 2)) = 2/3 * 0.99292893 = 0.66195262
    assert b.parts["mean_distance"] == pytest.approx(10.0)
    assert b.parts["count_ratio"] == pytest.approx(2 / 3)
    assert b.parts["answer"] == pytest.approx(2 / 3 * (1 - 10 / DIAGONAL))
    assert b.total == pytest.approx(1 + 0.66195262, abs=1e-8)
    assert sorted((m.pred, m.gt) for m in b.matches) == [(0, 0), (1, 1)]


def test_counting_points_from_qwen2_5_vl_json():
    # point_2d (252,154) in the 504x308 frame is px (250,150) on 500x300: the GT point, distance 0
    b = score("counting", '[{"point_2d": [252, 154]}]', {"points": [[250, 150]]}, image_size=(500, 300),
              convention="qwen2_5_vl")
    assert b.total == pytest.approx(2.0)


def test_counting_edge_cases():
    size = (500, 250)
    # a bare integer: no locations, the count ratio alone: min(3,2)/max(3,2) = 2/3
    assert score("counting", "3", COUNTING_GT, image_size=size).total == pytest.approx(1 + 2 / 3)
    # N = M = 0: 1; exactly one of them 0: 0
    assert score("counting", "0", {"points": []}, image_size=size).total == 2.0
    assert score("counting", "[]", {"points": []}, image_size=size).total == 2.0
    assert score("counting", "0", COUNTING_GT, image_size=size).total == 1.0
    assert score("counting", BOX.format("(1,1),(3,3)"), {"points": []}, image_size=size).total == 1.0
    # points outside the image are clipped: centre (5000,5000) px -> (500,250) px = (1000,1000) units;
    # distance to (200,200) = 800 * sqrt 2, answer = 1 - 800 sqrt2 / (1000 sqrt2) = 0.2
    far = score("counting", BOX.format("(10000,20000),(10000,20000)"), {"points": [[100, 50]]}, image_size=size)
    assert far.parts["answer"] == pytest.approx(0.2)
    # GT given as boxes: their centres are the points
    boxes_gt = {"boxes": [[50, 25, 150, 75], [350, 150, 450, 250]]}  # centres (100,50), (400,200)
    same = score("counting", BOX.format("(150,150),(250,250)") + BOX.format("(700,700),(900,900)"), boxes_gt,
                 image_size=size)
    assert same.total == pytest.approx(2.0)


# --- OCR ----------------------------------------------------------------------------------------------------------
def test_ocr_worked_example():
    b = score("ocr", "<think>reading</think><answer>  helo world </answer>", {"text": "Hello   world\n"},
              image_size=(100, 100))
    # normalised "helo world" vs "Hello world": H->h and one missing l = 2 edits; max length 11
    # answer = 1 - 2/11 = 0.81818182
    assert b.parts["edit_similarity"] == pytest.approx(1 - 2 / 11)
    assert b.total == pytest.approx(1 + 1 - 2 / 11)
    assert score("ocr", "", {"text": ""}, image_size=(9, 9)).total == 2.0  # both empty: 1
    assert score("ocr", "abc", {"text": ""}, image_size=(9, 9)).total == 1.0  # 1 - 3/3 = 0
    assert score("ocr", "abc", "abc", image_size=(9, 9)).total == 2.0  # a plain-string solution is its text


@settings(max_examples=200, deadline=None)
@given(pred=st.text(alphabet="ab \t\n", max_size=30), gt=st.text(alphabet="abc \n", max_size=30))
def test_edit_similarity_equals_levenshtein_directly(pred, gt):
    p, g = " ".join(pred.split()), " ".join(gt.split())
    expected = 1.0 if not p and not g else max(0.0, 1 - Levenshtein.distance(p, g) / max(len(p), len(g)))
    assert edit_similarity(pred, gt) == pytest.approx(expected)
    assert score("ocr", pred, {"text": gt}, image_size=(9, 9)).parts["answer"] == pytest.approx(expected)


def test_whitespace_rules():
    # runs of any whitespace collapse to one space; ends are stripped; inner single spaces still count
    assert edit_similarity(" a\t\n b ", "a b") == 1.0
    assert edit_similarity("ab", "a b") == pytest.approx(1 - 1 / 3)


# --- detection ----------------------------------------------------------------------------------------------------
# 500x250 image, Qwen3-VL JSON in the 0-1000 frame (x_px = x / 2, y_px = y / 4).
# GT px: A = [0,0,250,150] cat, B = [250,150,500,250] dog, C = [375,0,500,75] car.
DETECTION_GT = {"boxes": [[0, 0, 250, 150], [250, 150, 500, 250], [375, 0, 500, 75]],
                "labels": ["cat", "dog", "car"]}
DETECTION_TEXT = ('```json\n[{"bbox_2d": [0, 0, 500, 300], "label": "cat"}, '
                  '{"bbox_2d": [500, 600, 1000, 1000], "label": "cat"}, '
                  '{"bbox_2d": [200, 800, 500, 1000], "label": "dog"}]\n```')


def test_detection_worked_example():
    b = score("detection", DETECTION_TEXT, DETECTION_GT, image_size=(500, 250), convention="qwen3_vl")
    # pred px: p0 [0,0,250,75] cat, p1 [250,150,500,250] cat, p2 [100,200,250,250] dog (touches B, no overlap).
    # IoU(p0, A) = 250*75 / (250*150) = 0.5; IoU(p1, B) = 1; everything else 0.
    # cost = (1 - IoU) + 0.5 [labels differ]: p0-A 0.5, p1-B 0.5, p2-C 1.5 -> total 2.5, the unique optimum
    # (next best p0-A, p1-C, p2-B = 0.5 + 1.5 + 1 = 3). TPs need IoU >= 0.5: p0-A and p1-B, m = 2.
    # P = R = F1 = 2/3; loc = (0.5 + 1)/2 = 0.75; cls = 1/2 (p1 says cat, B is a dog);
    # penalty = 0.5 * (1/3 + 1/3) = 1/3; answer = 2/3 + 0.75 + 0.5 - 1/3 = 1.58333333
    assert b.parts["f1"] == pytest.approx(2 / 3)
    assert b.parts["loc"] == pytest.approx(0.75) and b.parts["cls"] == pytest.approx(0.5)
    assert b.parts["penalty"] == pytest.approx(1 / 3)
    assert b.total == pytest.approx(1 + 2 / 3 + 0.75 + 0.5 - 1 / 3)
    assert sorted((m.pred, m.gt) for m in b.matches) == [(0, 0), (1, 1)]


def test_detection_edge_cases():
    size = (500, 250)
    # empty GT and empty prediction: full marks, 1 + 3
    assert score("detection", "[]", {"boxes": [], "labels": []}, image_size=size).total == 4.0
    # empty GT with predictions: F1/loc/cls 0; penalty 0.5 * (1 + 0) -> 1 - 0.5
    one = '[{"bbox_2d": [0, 0, 100, 100], "label": "cat"}]'
    assert score("detection", one, {"boxes": [], "labels": []}, image_size=size,
                 convention="qwen3_vl").total == 0.5
    # nothing matched: penalty 0.5 * (1 + 1) = 1 -> 1 - 1 = 0
    far = score("detection", one, {"boxes": [[400, 200, 500, 250]], "labels": ["cat"]}, image_size=size,
                convention="qwen3_vl")
    assert far.total == 0.0 and far.matches == []
    # empty prediction with GT: penalty 0.5 * (0 + 1) -> 1 - 0.5
    assert score("detection", "[]", DETECTION_GT, image_size=size).total == 0.5
    # unparseable: format -1, and the empty prediction's -0.5
    assert score("detection", "no objects", DETECTION_GT, image_size=size).total == -1.5
    # labels compare without case or extra spaces: " Cat " is the GT "cat", a perfect single match -> 1 + 3
    cat = '[{"bbox_2d": [0, 0, 500, 600], "label": " Cat "}]'
    assert score("detection", cat, {"boxes": [[0, 0, 250, 150]], "labels": ["cat"]}, image_size=size,
                 convention="qwen3_vl").total == 4.0


def test_unreadable_ground_truth_raises_with_what_was_found():
    with pytest.raises(ValueError, match="one of \\('box',\\)"):
        score("grounding", "[1,2,3,4]", {"boxes": [[1, 2, 3, 4]]}, image_size=(9, 9))
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        score("grounding", "[1,2,3,4]", {"box": [1, 2, 3]}, image_size=(9, 9))
    with pytest.raises(ValueError, match="positive image size"):
        score("grounding", "[1,2,3,4]", {"box": [1, 2, 3, 4]}, image_size=(0, 9))
    with pytest.raises(ValueError, match="2 boxes and 1 labels"):
        score("detection", "[]", {"boxes": [[1, 2, 3, 4]] * 2, "labels": ["cat"]}, image_size=(9, 9))
