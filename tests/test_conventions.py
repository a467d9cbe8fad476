"""Coordinate frames of each model family, checked against hand-computed sizes and the parser."""

import json

import numpy as np
import pytest

from workbench import conventions, parsing
from workbench.conventions import Convention


def test_normalised_frame_of_a_500x250_image():
    qwen2 = conventions.get("qwen2_vl")
    assert qwen2.frame_size((500, 250)) == (1000.0, 1000.0)
    # x scales by 500 / 1000 = 0.5, y by 250 / 1000 = 0.25
    assert qwen2.to_pixels([100, 200, 300, 400], (500, 250)).tolist() == [50, 50, 150, 100]
    assert qwen2.from_pixels([[500, 250]], (500, 250)).tolist() == [[1000, 1000]]
    assert conventions.get("qwen3_vl").to_pixels([1000, 1000], (500, 250)).tolist() == [500, 250]


def test_qwen2_5_vl_resized_frame_of_a_500x300_image():
    qwen25 = conventions.get("qwen2_5_vl")
    # smart_resize rounds each side to a multiple of 28: round(500 / 28) = 18 -> 504, round(300 / 28) = 11 -> 308;
    # 504 * 308 = 155,232 pixels lies inside the default [3136, 12845056].
    assert qwen25.frame_size((500, 300)) == (504.0, 308.0)
    # 252 * 500 / 504 = 250 and 154 * 300 / 308 = 150
    np.testing.assert_allclose(qwen25.to_pixels([252, 154, 504, 308], (500, 300)), [250, 150, 500, 300])
    np.testing.assert_allclose(qwen25.from_pixels([250, 150], (500, 300)), [252, 154])


def test_qwen2_5_vl_honours_max_pixels():
    small = Convention("qwen2_5_vl", max_pixels=100_000)
    # 504 * 308 > 100,000: beta = sqrt(500 * 300 / 100,000) = 1.2247;
    # h = floor(300 / 1.2247 / 28) * 28 = 8 * 28 = 224, w = floor(500 / 1.2247 / 28) * 28 = 14 * 28 = 392
    assert small.frame_size((500, 300)) == (392.0, 224.0)
    assert conventions.get(small) is small


def test_pixels_frame_is_the_identity():
    px = conventions.get("pixels")
    assert px.to_pixels([1.5, 2, 3, 4], (640, 480)).tolist() == [1.5, 2, 3, 4]


@pytest.mark.parametrize("name", conventions.NAMES)
def test_round_trip_between_frames(name):
    conv = conventions.get(name)
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 300, (5, 4))
    np.testing.assert_allclose(conv.to_pixels(conv.from_pixels(coords, (333, 517)), (333, 517)), coords)


def test_qwen2_vl_writes_special_token_blocks():
    qwen2 = conventions.get("qwen2_vl")
    text = qwen2.write_boxes([[50, 50, 150, 100], [0, 0, 5, 5]], ["cat", "cat"], (500, 250))
    # one phrase for consecutive boxes of the same label; 0-1000 integers
    assert text == ("<|object_ref_start|>cat<|object_ref_end|><|box_start|>(100,200),(300,400)<|box_end|>"
                    "<|box_start|>(0,0),(10,20)<|box_end|>")
    assert qwen2.write_points([[250, 125]], (500, 250), "dot") == (
        "<|object_ref_start|>dot<|object_ref_end|><|box_start|>(500,500)<|box_end|>")


def test_json_families_write_bbox_2d_in_their_frame():
    text = conventions.get("qwen2_5_vl").write_box([250, 150, 500, 300], (500, 300), phrase="cat")
    body = json.loads(text.removeprefix("```json").removesuffix("```"))
    assert body == [{"bbox_2d": [252, 154, 504, 308], "label": "cat"}]
    points = conventions.get("qwen3_vl").write_points([[250, 125]], (500, 250))
    assert json.loads(points.removeprefix("```json").removesuffix("```")) == [{"point_2d": [500, 500]}]


@pytest.mark.parametrize("name", conventions.NAMES)
def test_what_a_family_writes_the_parser_reads_back(name):
    conv = conventions.get(name)
    size = (500, 300)
    gt = np.array([[10, 20, 200, 150], [300, 100, 480, 290]], dtype=float)
    pred = parsing.parse("detection", conv.write_boxes(gt, ["cat", "dog"], size), convention=conv,
                         image_size=size)
    assert pred.format_ok and pred.labels == ["cat", "dog"]
    # writers round to integers of the frame: at most half a frame unit of error, in pixels
    frame_w, frame_h = conv.frame_size(size)
    tolerance = 0.5 * max(size[0] / frame_w, size[1] / frame_h) + 1e-9
    assert np.abs(pred.boxes - gt).max() <= tolerance


def test_errors_name_what_was_expected():
    with pytest.raises(ValueError, match="unknown convention 'qwen9'"):
        conventions.get("qwen9")
    with pytest.raises(ValueError, match="positive image size"):
        conventions.get("qwen2_vl").to_pixels([1, 2], (0, 10))
    assert conventions.for_model_type("qwen3_vl_moe") == "qwen3_vl"
    with pytest.raises(ValueError, match="no coordinate convention"):
        conventions.for_model_type("llava")
