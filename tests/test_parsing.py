"""Every output form of REWARDS.md, read into original pixels; hostile input costs bounded time."""

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench import parsing
from workbench.conventions import Convention
from workbench.parsing import MAX_CHARS, MAX_ITEMS, parse

REF = "<|object_ref_start|>{}<|object_ref_end|>"
BOX = "<|box_start|>{}<|box_end|>"


def test_qwen2_vl_special_tokens_in_the_0_1000_frame():
    # 500x250 image: x * 500 / 1000, y * 250 / 1000
    text = REF.format("the cat") + BOX.format("(100,200),(300,400)") + "<|im_end|>"
    pred = parse("grounding", text, convention="qwen2_vl", image_size=(500, 250))
    assert pred.boxes.tolist() == [[50, 50, 150, 100]] and pred.labels == ["the cat"]
    assert pred.format_ok and pred.malformed == [] and pred.count == 1


def test_several_blocks_follow_one_phrase_and_a_single_pair_is_a_point():
    text = (REF.format("cat") + BOX.format("(0,0),(100,100)") + BOX.format("(200,200),(400,400)")
            + REF.format("dog") + BOX.format("(500,600),(700,800)") + BOX.format("(500,500)"))
    pred = parse("counting", text, convention="qwen2_vl", image_size=(1000, 1000))
    assert pred.labels == ["cat", "cat", "dog"]
    assert pred.boxes.tolist() == [[0, 0, 100, 100], [200, 200, 400, 400], [500, 600, 700, 800]]
    assert pred.points.tolist() == [[500, 500]]
    assert pred.count == 4 and pred.format_ok


def test_qwen2_5_vl_json_in_resized_pixels_with_and_without_fence():
    body = '[{"bbox_2d": [252, 154, 504, 308], "label": "cat"}, {"point_2d": [126, 77], "label": "dot"}]'
    for text in (f"```json\n{body}\n```", body, f"Sure! Here it is:\n{body}\nDone."):
        pred = parse("counting", text, convention="qwen2_5_vl", image_size=(500, 300))
        # frame 504x308: x * 500 / 504, y * 300 / 308
        np.testing.assert_allclose(pred.boxes, [[250, 150, 500, 300]])
        np.testing.assert_allclose(pred.points, [[125, 75]])
        assert pred.labels == ["cat"] and pred.format_ok, pred.malformed


def test_qwen2_5_vl_respects_the_processor_limits():
    conv = Convention("qwen2_5_vl", max_pixels=100_000)  # 500x300 -> 392x224
    pred = parse("grounding", '{"bbox_2d": [196, 112, 392, 224]}', convention=conv, image_size=(500, 300))
    np.testing.assert_allclose(pred.boxes, [[250, 150, 500, 300]])


def test_qwen3_vl_json_in_the_0_1000_frame():
    pred = parse("detection", '```json\n[{"bbox_2d": [0, 0, 500, 1000], "label": "cat"}]\n```',
                 convention="qwen3_vl", image_size=(500, 250))
    assert pred.boxes.tolist() == [[0, 0, 250, 250]] and pred.format_ok


@pytest.mark.parametrize("text", ["[100, 200, 300, 400]", "(100,200,300,400)", "(100, 200), (300, 400)",
                                  "The box is [100,200,300,400].", "box: (+100, 200.0),(300,4e2)"])
def test_plain_forms(text):
    pred = parse("grounding", text, convention="qwen2_vl", image_size=(500, 250))
    assert pred.boxes.tolist() == [[50, 50, 150, 100]] and pred.format_ok


def test_fractions_of_the_image():
    # every coordinate in [0, 1] with a decimal point: fractions of the 500x250 image
    pred = parse("grounding", "[0.1, 0.2, 0.5, 0.6]", convention="qwen2_vl", image_size=(500, 250))
    np.testing.assert_allclose(pred.boxes, [[50, 50, 250, 150]])
    assert pred.frame == "fractions"
    # integers 0/1 alone are not fractions: (0,0),(1,1) is a tiny box in the 0-1000 frame
    tiny = parse("grounding", "(0,0),(1,1)", convention="qwen2_vl", image_size=(500, 250))
    assert tiny.frame == "qwen2_vl" and tiny.boxes.tolist() == [[0, 0, 0.5, 0.25]]


def test_think_answer_wrapper():
    text = "<think>maybe [0,0,10,10]?</think><answer>[100,200,300,400]</answer>"
    pred = parse("grounding", text, convention="qwen2_vl", image_size=(500, 250))
    assert pred.boxes.tolist() == [[50, 50, 150, 100]] and pred.format_ok
    no_answer = parse("grounding", "<think>hm</think>[100,200,300,400]", convention="qwen2_vl",
                      image_size=(500, 250))
    assert not no_answer.format_ok and len(no_answer.boxes) == 1
    assert any("<answer>" in note for note in no_answer.malformed)
    unclosed = parse("ocr", "<answer>hello", convention="qwen2_vl", image_size=(10, 10))
    assert unclosed.text == "hello" and not unclosed.format_ok


def test_counting_answers():
    size = (100, 100)
    assert parse("counting", " 7 ", convention="qwen2_vl", image_size=size).count == 7
    prose = parse("counting", "There are 7 dogs.", convention="qwen2_vl", image_size=size)
    assert prose.count == 7 and not prose.format_ok
    empty = parse("counting", "```json\n[]\n```", convention="qwen2_5_vl", image_size=size)
    assert empty.count == 0 and empty.format_ok
    nothing = parse("counting", "no idea", convention="qwen2_vl", image_size=size)
    assert nothing.count is None and not nothing.format_ok


def test_ocr_reads_plain_text_and_drops_end_tokens():
    pred = parse("ocr", "  Hello\n world <|im_end|><|endoftext|>", convention="qwen2_vl", image_size=(9, 9))
    assert pred.text == "Hello\n world" and pred.format_ok


def test_malformed_items_are_reported():
    size = (1000, 1000)
    bad_block = parse("grounding", BOX.format("(1,2,3)"), convention="qwen2_vl", image_size=size)
    assert not bad_block.format_ok and "inside a box block" in bad_block.malformed[0]
    unclosed = parse("grounding", BOX.format("(1,2),(3,4)") + "<|box_start|>(5,6),(7,8)",
                     convention="qwen2_vl", image_size=size)
    assert len(unclosed.boxes) == 1 and not unclosed.format_ok
    mixed = parse("detection", '[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [1, 2]}, 5]',
                  convention="pixels", image_size=size)
    assert len(mixed.boxes) == 1 and not mixed.format_ok and len(mixed.malformed) == 2
    unlabeled = parse("detection", "[1, 2, 3, 4]", convention="pixels", image_size=size)
    assert len(unlabeled.boxes) == 1 and not unlabeled.format_ok
    assert parse("detection", "[]", convention="pixels", image_size=size).format_ok


def test_a_list_cut_off_by_the_length_limit_is_recovered():
    text = '```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}, {"bbox_2d": [5, 6, 7, 8], "label": "dog"}, {"bbox'
    pred = parse("detection", text, convention="pixels", image_size=(100, 100))
    assert pred.boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]] and pred.labels == ["cat", "dog"]
    assert not pred.format_ok and any("invalid JSON" in note for note in pred.malformed)


def test_non_string_and_non_finite_input_never_raise():
    assert parse("ocr", None, convention="qwen2_vl", image_size=(9, 9)).malformed
    huge = parse("grounding", '{"bbox_2d": [1e400, 0, 1, 1]}', convention="pixels", image_size=(9, 9))
    assert len(huge.boxes) == 0 and not huge.format_ok
    dropped = parse("counting", '[{"point_2d": [1e400, 1]}]', convention="pixels", image_size=(9, 9))
    assert dropped.count == 0 and not dropped.format_ok  # a dropped item is not an answer of "none"


@pytest.mark.parametrize("hostile", [
    "<|box_start|>(" * 20_000,  # unclosed blocks
    "[" * 100_000 + "1",  # deep nesting for json
    "(" + "1" * 100_000 + ",",  # a very long digit run
    "[1, " * 50_000,  # a list that never closes
    '{"bbox_2d": [' * 20_000,
    "<answer>" + "<think>" * 20_000,
])
@pytest.mark.parametrize("task", parsing.TASKS)
def test_hostile_input_costs_bounded_time(hostile, task):
    start = time.perf_counter()
    pred = parse(task, hostile, convention="qwen2_5_vl", image_size=(640, 480))
    assert time.perf_counter() - start < 0.5
    assert isinstance(pred.malformed, list) and len(pred.malformed) <= parsing.MAX_NOTES + 1


def test_caps_on_length_and_items_are_reported():
    long = "x" * (MAX_CHARS + 10)
    pred = parse("ocr", long, convention="qwen2_vl", image_size=(9, 9))
    assert pred.truncated and len(pred.text) == MAX_CHARS and not pred.format_ok
    many = "".join(BOX.format("(1,2),(3,4)") for _ in range(MAX_ITEMS + 5))
    capped = parse("counting", many, convention="qwen2_vl", image_size=(1000, 1000))
    assert capped.truncated and capped.count == MAX_ITEMS and not capped.format_ok


GRAMMAR = st.sampled_from([
    "<|box_start|>", "<|box_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|im_end|>", "cat", "(", ")",
    "[", "]", "{", "}", ",", ":", '"bbox_2d"', '"point_2d"', '"label"', '"dog"', "1", "0.5", "-3", "1e999", "007",
    "```json", "```", "<answer>", "</answer>", "<think>", "</think>", " ", "\n", "NaN", "true"])


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=300), st.lists(GRAMMAR, max_size=60).map("".join)),
       task=st.sampled_from(parsing.TASKS),
       convention=st.sampled_from(["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "pixels"]))
def test_any_text_parses_into_a_well_formed_prediction(text, task, convention):
    pred = parse(task, text, convention=convention, image_size=(640, 480))
    assert pred.boxes.shape[1:] == (4,) and pred.points.shape[1:] == (2,)
    assert len(pred.labels) == len(pred.boxes)
    assert np.isfinite(pred.boxes).all() and np.isfinite(pred.points).all()
    assert pred.count is None or pred.count >= 0
    assert isinstance(pred.format_ok, bool)
