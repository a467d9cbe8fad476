"""Worked examples of the ``pr1_released`` preset: the released PR1 code's numbers, quirks included."""

import math

import pytest

from workbench.rewards import reward_range, score

REF = "<|object_ref_start|>{}<|object_ref_end|>"
BOX = "<|box_start|>{}<|box_end|>"
END = "<|im_end|>"
DIAGONAL = 1000 * math.sqrt(2)

# The same inputs as test_rewards_paper.py, so the two presets can be compared line by line.
GROUNDING_GT = {"box": [50, 50, 150, 100]}  # [100,200,300,400] in the 0-1000 frame of 500x250
COUNTING_GT = {"points": [[100, 50], [400, 200]]}  # (200,200), (800,800) in 0-1000 units
DETECTION_GT = {"boxes": [[0, 0, 250, 150], [250, 150, 500, 250], [375, 0, 500, 75]],
                "labels": ["cat", "dog", "car"]}
DETECTION_TEXT = ('```json\n[{"bbox_2d": [0, 0, 500, 300], "label": "cat"}, '
                  '{"bbox_2d": [500, 600, 1000, 1000], "label": "cat"}, '
                  '{"bbox_2d": [200, 800, 500, 1000], "label": "dog"}]\n```')


def released(task, text, solution, size=(500, 250), convention="qwen2_vl"):
    return score(task, text, solution, image_size=size, convention=convention, preset="pr1_released")


# --- grounding: IoU squared in the 0-1000 frame ------------------------------------------------------------------
def test_grounding_iou_squared():
    # GT [50,50,150,100] px on 500x250 is [100,200,300,400] in the frame; pred (100,200),(200,400): IoU 0.5
    text = REF.format("the cat") + BOX.format("(100,200),(200,400)") + END + "<|endoftext|>" * 3
    b = released("grounding", text, GROUNDING_GT)
    # answer = 0.5 ** 2 = 0.25; format 1 -> 1.25
    assert b.parts["iou"] == pytest.approx(0.5) and b.parts["answer"] == pytest.approx(0.25)
    assert b.total == pytest.approx(1.25)
    assert reward_range("grounding", "pr1_released") == (0.0, 2.0)


def test_grounding_fractions_are_truncated_to_ints():
    # no <|box_start|>: 0-1 fractions * 1000 truncated: [100, 200, int(299.9) = 299, 400]
    b = released("grounding", "[0.1, 0.2, 0.2999, 0.4]", GROUNDING_GT)
    # IoU with [100,200,300,400] = 199*200 / (200*200) = 0.995; squared 0.990025.
    # The text does not start with '<' (nor any other branch of the mis-escaped pattern): format 0.
    assert b.total == pytest.approx(0.995 ** 2)
    assert b.parts["format"] == 0.0
    # the paper preset reads fractions of the image without truncation: px [50, 50, 149.95, 100],
    # IoU = 99.95 * 50 / (100 * 50) = 0.9995, plus format +1
    paper = score("grounding", "[0.1, 0.2, 0.2999, 0.4]", GROUNDING_GT, image_size=(500, 250))
    assert paper.total == pytest.approx(1.9995)


def test_grounding_quirks_inverted_first_match_and_loose_format():
    # an inverted box is not sorted: IoU 0; the format pattern still gives 1 (the text starts with '<')
    inverted = released("grounding", BOX.format("(300,400),(100,200)"), GROUNDING_GT)
    assert inverted.total == 1.0
    assert score("grounding", BOX.format("(300,400),(100,200)"), GROUNDING_GT, image_size=(500, 250)).total == 2.0
    # the [a,b,c,d] pattern is tried first anywhere in the text, before the (a,b),(c,d) of the box block
    both = BOX.format("(1,2),(3,4)") + " I mean [100,200,300,400]"
    assert released("grounding", both, GROUNDING_GT).total == 2.0  # IoU 1, format 1
    assert score("grounding", both, GROUNDING_GT, image_size=(500, 250)).total == 1.0  # paper: first box, IoU 0
    # the unescaped '|' make the format check pass for any text starting with '<' and fail otherwise
    assert released("grounding", "<garbage", GROUNDING_GT).parts["format"] == 1.0
    assert released("grounding", "The box: " + BOX.format("(100,200),(300,400)"), GROUNDING_GT).total == 1.0
    # nothing found scores [0,0,0,0]: IoU 0
    assert released("grounding", "<no box>", GROUNDING_GT).total == 1.0
    # a huge fraction times 1000 stays a finite float (not an overflowing integer): IoU 0
    huge = released("grounding", "[0, 0, 0, -9223372474941440.0]", GROUNDING_GT)
    assert huge.total == 0.0 and not any(note.startswith("reward failed") for note in huge.malformed)


# --- counting: format gate, box centres, no clipping ---------------------------------------------------------------
def test_counting_gate_and_formula():
    # GT (200,200), (800,800) in 0-1000 units; centres (200,200), (800,780): mean distance 10, ratio 1
    blocks = REF.format("cat") + BOX.format("(150,150),(250,250)") + BOX.format("(700,700),(900,860)")
    b = released("counting", blocks + END, COUNTING_GT)
    # answer = 1 * (1 - 10 / 1414.2136) = 0.99292893; no separate format part
    assert b.total == pytest.approx(1 - 10 / DIAGONAL)
    assert b.parts["format"] == 0.0 and b.parts["gate"] == 1.0
    # the gate needs <|im_end|> (or the end of a text whose end token was dropped) right after the last box block:
    # anything else there gives 0 (paper: 1 + 0.99292893)
    assert released("counting", blocks, COUNTING_GT).total == pytest.approx(1 - 10 / DIAGONAL)
    assert released("counting", blocks + " and more", COUNTING_GT).total == 0.0
    assert released("counting", blocks + " and more", COUNTING_GT).parts["gate"] == 0.0
    assert score("counting", blocks, COUNTING_GT, image_size=(500, 250)).total == pytest.approx(2 - 10 / DIAGONAL)
    assert reward_range("counting", "pr1_released") == (0.0, 1.0)


def test_counting_quirks():
    # a point block "(x,y)" does not evaluate as two pairs and is skipped: one centre (200,200) vs two GT points,
    # ratio 1/2, distance 0 -> 0.5. The paper preset reads the point: both exact -> 1 + 1.
    text = REF.format("cat") + BOX.format("(150,150),(250,250)") + BOX.format("(800,800)") + END
    assert released("counting", text, COUNTING_GT).total == pytest.approx(0.5)
    assert score("counting", text, COUNTING_GT, image_size=(500, 250)).total == pytest.approx(2.0)
    # GT count 0 always scores 0 (paper: a "0" answer would score 1 + 1)
    assert released("counting", text, {"points": []}).total == 0.0
    # no clipping: centre (5000,5000) is 4800 sqrt2 from (200,200): 1 - 4.8 < 0, clamped to the range's 0
    # (paper: clipped to (1000,1000), 1 - 0.8 = 0.2, see test_rewards_paper)
    far = REF.format("cat") + BOX.format("(5000,5000),(5000,5000)") + END
    b = released("counting", far, {"points": [[100, 50]]})
    assert b.total == 0.0 and any("clamped" in note for note in b.malformed)


# --- OCR: MMR1's edit similarity, 0 when empty ----------------------------------------------------------------------
def test_ocr():
    b = released("ocr", "helo   world<|endoftext|>", {"text": "Hello world"})
    # 2 edits over 11 characters: 1 - 2/11; no format part
    assert b.total == pytest.approx(1 - 2 / 11) and b.parts["format"] == 0.0
    assert released("ocr", "", {"text": ""}).total == 0.0  # paper: 1 + 1
    assert released("ocr", "   ", {"text": "abc"}).total == 0.0
    # the whole completion is compared, tags included: 17 extra characters over 22 -> 1 - 17/22
    assert released("ocr", "<answer>hello</answer>", {"text": "hello"}).total == pytest.approx(1 - 17 / 22)


# --- detection: DETR matching, IoU > 0.5 strictly, no penalty -----------------------------------------------------
def test_detection_worked_example():
    b = released("detection", DETECTION_TEXT, DETECTION_GT, convention="qwen3_vl")
    # In the 0-1000 frame, cxcywh: p0 (250,150,500,300), p1 (750,800,500,400), p2 (350,900,300,200);
    # A (250,300,500,600), B (750,800,500,400), C (875,150,250,300).
    # L1 sums of the assignments: (A,B,C) 450 + 0 + 1425 = 1875 < (C,B,A) 875 + 0 + 1300 = 2175 < ...; 5 x 300
    # dominates the GIoU and class terms (< 6.1), so the match is p0-A, p1-B, p2-C.
    # Kept with IoU > 0.5 strictly: p0-A has IoU exactly 0.5 -> dropped (the paper keeps it); p1-B kept; m = 1.
    # format = 0.25 * 3/3; F1 = 2 (1/3)(1/3) / (2/3) = 1/3; cls = 0 (cat vs dog); loc = 1
    # r = 0.25 + 0.75/3 + 0 + 1 = 1.5
    assert b.parts["format"] == 0.25
    assert b.parts["f1"] == pytest.approx(1 / 3) and b.parts["cls"] == 0.0 and b.parts["loc"] == 1.0
    assert b.total == pytest.approx(1.5)
    assert [(m.pred, m.gt) for m in b.matches] == [(1, 1)]
    assert reward_range("detection", "pr1_released") == (0.0, 3.0)


def test_detection_in_qwen2_5_vl_resized_pixels():
    # GT px [250,150,500,300] on 500x300 is [252,154,504,308] in the 504x308 frame: IoU 1, F1 1, cls 1
    text = '[{"bbox_2d": [252, 154, 504, 308], "label": "dog"}]'
    b = released("detection", text, {"boxes": [[250, 150, 500, 300]], "labels": ["dog"]}, size=(500, 300),
                 convention="qwen2_5_vl")
    # 0.25 + 0.75 * 1 + 1 + 1 = 3 (F1 carries PR1's 1e-8 in its denominator)
    assert b.total == pytest.approx(3.0)


def test_detection_quirks():
    size, conv = (500, 250), "qwen3_vl"
    # an unknown label makes its item malformed: format 0.25 * 3/4; the rest as in the worked example
    unicorn = DETECTION_TEXT.replace('"dog"}]', '"dog"}, {"bbox_2d": [0, 0, 10, 10], "label": "unicorn"}]')
    b = released("detection", unicorn, DETECTION_GT, size, conv)
    # 0.1875 + 0.25 + 0 + 1 = 1.4375
    assert b.parts["format"] == pytest.approx(0.1875) and b.total == pytest.approx(1.4375)
    # a record's own class list extends the COCO names
    shapes = {"boxes": [[0, 0, 250, 150]], "labels": ["triangle"]}
    triangle = '[{"bbox_2d": [0, 0, 500, 600], "label": "triangle"}]'
    assert released("detection", triangle, shapes, size, conv).total == pytest.approx(3.0)
    # empty GT: the format part alone (an empty record lists no classes, so "triangle" would be unknown there)
    assert released("detection", triangle.replace("triangle", "cat"), {"boxes": [], "labels": []}, size,
                    conv).total == 0.25
    assert released("detection", triangle, {"boxes": [], "labels": []}, size, conv).total == 0.0
    # invalid JSON, an inverted box, a box of 3 numbers, a list without valid items: 0
    assert released("detection", DETECTION_TEXT[:-6], DETECTION_GT, size, conv).total == 0.0
    inverted = '[{"bbox_2d": [500, 600, 0, 0], "label": "cat"}]'
    assert released("detection", inverted, DETECTION_GT, size, conv).total == 0.0
    assert released("detection", '[{"bbox_2d": [1, 2, 3], "label": "cat"}]', DETECTION_GT, size, conv).total == 0.0
    assert released("detection", '[{"box": [1, 2, 3, 4]}]', DETECTION_GT, size, conv).total == 0.0
    # leading prose breaks json.loads: 0 (the paper preset still reads the list)
    assert released("detection", "Here: " + DETECTION_TEXT, DETECTION_GT, size, conv).total == 0.0
    # no pair with IoU > 0.5: the format part alone
    far = '[{"bbox_2d": [0, 0, 10, 10], "label": "cat"}]'
    assert released("detection", far, DETECTION_GT, size, conv).total == 0.25
