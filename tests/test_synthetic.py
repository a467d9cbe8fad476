"""ShapesWorld: deterministic scenes, canonical solutions, datasets round trip."""

import numpy as np
import pytest

from workbench.data import synthetic


@pytest.mark.parametrize("task", synthetic.TASK_NAMES)
def test_same_seed_same_records(task):
    a = synthetic.generate(task, 5, seed=3)
    b = synthetic.generate(task, 5, seed=3)
    c = synthetic.generate(task, 5, seed=4)
    for x, y in zip(a, b):
        assert x["question"] == y["question"] and x["solution"] == y["solution"]
        assert np.array_equal(np.asarray(x["image"]), np.asarray(y["image"]))
    assert any(not np.array_equal(np.asarray(x["image"]), np.asarray(z["image"])) for x, z in zip(a, c))


def test_records_do_not_depend_on_n():
    assert synthetic.generate("counting", 3, seed=1)[2]["solution"] == synthetic.generate("counting", 9, seed=1)[2]["solution"]


@pytest.mark.parametrize("task", synthetic.TASK_NAMES)
def test_canonical_record(task):
    for r in synthetic.generate(task, 20, seed=0, image_size=140):
        assert set(r) >= {"image", "task", "question", "solution"}
        assert r["task"] == task and r["image"].mode == "RGB" and r["image"].size == (140, 140)
        sol = r["solution"]
        if task == "grounding":
            x1, y1, x2, y2 = sol["box"]
            assert 0 <= x1 < x2 <= 140 and 0 <= y1 < y2 <= 140
            assert sol["phrase"] in r["question"]
        elif task == "counting":
            assert len(sol["points"]) == len(sol["boxes"]) >= 1
            assert all(b[0] <= p[0] <= b[2] and b[1] <= p[1] <= b[3] for p, b in zip(sol["points"], sol["boxes"]))
        elif task == "ocr":
            assert sol["text"] in synthetic.WORDS
        else:
            assert len(sol["boxes"]) == len(sol["labels"]) >= 1
            assert set(sol["labels"]) <= set(synthetic.SHAPES)


def test_grounding_target_is_unique_and_visible():
    for r in synthetic.generate("grounding", 30, seed=2):
        target = r["meta"]["objects"][0]
        same = [o for o in r["meta"]["objects"] if (o["color"], o["shape"]) == (target["color"], target["shape"])]
        assert len(same) == 1
        x1, y1, x2, y2 = r["solution"]["box"]
        patch = np.asarray(r["image"])[y1:y2, x1:x2].astype(int)
        background = np.asarray(r["image"])[0, 0].astype(int)
        assert np.abs(patch - background).sum(-1).max() > 60  # the shape is drawn inside its box


def test_counting_matches_scene():
    for r in synthetic.generate("counting", 30, seed=5):
        (key, value), = r["meta"]["query"].items()
        assert len(r["solution"]["points"]) == sum(o[key] == value for o in r["meta"]["objects"])


def test_mask_marks_objects():
    r = synthetic.generate("detection", 1, seed=0, with_mask=True)[0]
    mask = r["meta"]["mask"]
    assert mask.shape == (112, 112) and mask.max() == len(r["meta"]["objects"])


def test_unknown_task_and_option():
    with pytest.raises(ValueError, match="expected one of"):
        synthetic.generate("segmentation", 1)
    with pytest.raises(ValueError, match="unknown ShapesWorld options"):
        synthetic.generate("ocr", 1, colour="red")


def test_dataset_round_trip_keeps_images(tmp_path):
    records = synthetic.generate_mixed(8, seed=1)
    ds = synthetic.to_dataset(records)
    assert len(ds) == 8 and set(ds.column_names) >= {"image", "task", "question", "solution"}
    ds.save_to_disk(str(tmp_path / "ds"))
    import datasets

    back = synthetic.from_dataset(datasets.load_from_disk(str(tmp_path / "ds")))
    for a, b in zip(records, back):
        assert a["task"] == b["task"] and a["question"] == b["question"]
        assert a["solution"] == b["solution"]
        assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
