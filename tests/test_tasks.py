"""Task prompts (Perception-R1's wording), chat messages and SFT targets."""

import pytest

from workbench import tasks
from workbench.data import synthetic


def test_questions_use_perception_r1_wording():
    assert tasks.question("grounding", phrase="red square") == "Output the bounding box of the red square in the image."
    assert tasks.question("counting", label="triangles") == "Output all the bounding boxes of the triangles"
    assert tasks.question("ocr") == "OCR this image."
    assert tasks.question("detection", classes=["circle", "square"]) == \
        "Please output bbox coordinates and names of circle, square."
    assert "The category set includes circle." in tasks.question("detection", classes="circle", variant="pr1_eval")
    assert set(tasks.TASKS) == {"grounding", "counting", "ocr", "detection"}


def test_question_errors_name_what_is_missing():
    with pytest.raises(ValueError, match="phrase"):
        tasks.question("grounding")
    with pytest.raises(ValueError, match="expected one of"):
        tasks.question("pose")


def test_messages_hold_image_and_question():
    r = synthetic.generate("ocr", 1)[0]
    msgs = tasks.messages(r)
    assert msgs[0]["role"] == "system" and msgs[0]["content"][0]["text"] == tasks.SYSTEM_PROMPT
    assert msgs[1]["content"][0] == {"type": "image", "image": r["image"]}
    assert msgs[1]["content"][1] == {"type": "text", "text": "OCR this image."}
    assert [m["role"] for m in tasks.messages(r, system=False)] == ["user"]


def test_sft_targets_in_qwen2_vl_format():
    g = synthetic.generate("grounding", 1)[0]
    t = tasks.sft_target(g)
    assert t.startswith(f"<|object_ref_start|>{g['solution']['phrase']}<|object_ref_end|><|box_start|>(")
    assert t.endswith(")<|box_end|>")
    c = synthetic.generate("counting", 1)[0]
    assert tasks.sft_target(c).count("<|box_start|>") == len(c["solution"]["points"])
    o = synthetic.generate("ocr", 1)[0]
    assert tasks.sft_target(o) == o["solution"]["text"]
    d = synthetic.generate("detection", 1)[0]
    assert tasks.sft_target(d).count("<|box_start|>") == len(d["solution"]["boxes"])
    assert '"bbox_2d"' in tasks.sft_target(d, "qwen2_5_vl")


@pytest.mark.parametrize("task", synthetic.TASK_NAMES)
@pytest.mark.parametrize("convention", ["qwen2_vl", "qwen2_5_vl"])
def test_sft_target_earns_full_reward(task, convention):
    pytest.importorskip("workbench.rewards")
    for r in synthetic.generate(task, 5, seed=9):
        b = tasks.get(task).score(tasks.sft_target(r, convention), r["solution"], image_size=r["image"].size,
                                  convention=convention)
        assert b.parts["format"] == 1.0
        assert b.parts["answer"] > (0.9 if task != "detection" else 2.7)  # rounding to integer coordinates only
