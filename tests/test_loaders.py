"""Benchmark loaders read fixtures written here in the public layouts and return canonical records."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from workbench.data import loaders
from workbench.data.synthetic import from_dataset


def _png(w, h, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def _save(path, w, h):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (20, 120, 220)).save(path)
    return path


# --- RefCOCO (lmms-lab parquet) -------------------------------------------------------------------------------

def write_lmms_refcoco(root, split="val", rows=3):
    """lmms-lab/RefCOCO layout: data/{split}-0000x-of-0000n.parquet, image struct, answer list, bbox xywh."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({
        "question_id": [f"q{i}" for i in range(rows)],
        "image": [{"bytes": _png(64 + 8 * i, 48), "path": None} for i in range(rows)],
        "question": ["Please carefully observe the area circled in the image and come up with a caption."] * rows,
        "answer": [[f"left thing {i}", f"red thing {i}"] for i in range(rows)],
        "segmentation": [[0.0] * 8 for _ in range(rows)],
        "bbox": [[2.0 + i, 4.0, 10.0, 20.0] for i in range(rows)],
        "iscrowd": [0] * rows,
        "file_name": [f"COCO_train2014_{i:012d}.jpg" for i in range(rows)],
    })
    frame.iloc[:2].to_parquet(data / f"{split}-00000-of-00002.parquet")
    frame.iloc[2:].to_parquet(data / f"{split}-00001-of-00002.parquet")
    return root


def test_refcoco_parquet_records(tmp_path):
    write_lmms_refcoco(tmp_path)
    write_lmms_refcoco(tmp_path, split="testA", rows=1)
    ds = loaders.load_benchmark("refcoco", tmp_path, split="val")
    recs = from_dataset(ds)
    assert len(recs) == 6  # 3 rows x 2 expressions each
    r = recs[5]
    assert r["task"] == "grounding"
    assert r["solution"]["box"] == [4.0, 4.0, 14.0, 24.0]  # xywh [4, 4, 10, 20] -> xyxy
    assert r["solution"]["phrase"] == "red thing 2"
    assert r["question"] == "Output the bounding box of the red thing 2 in the image."
    assert r["image"].size == (80, 48)
    assert json.loads(ds[5]["meta"])["question_id"] == "q2"


def test_refcoco_limit_is_a_seeded_random_subset(tmp_path):
    write_lmms_refcoco(tmp_path, rows=10)
    a = [json.loads(s)["phrase"] for s in loaders.load_refcoco(tmp_path, limit=5, seed=1)["solution"]]
    b = [json.loads(s)["phrase"] for s in loaders.load_refcoco(tmp_path, limit=5, seed=1)["solution"]]
    c = [json.loads(s)["phrase"] for s in loaders.load_refcoco(tmp_path, limit=5, seed=2)["solution"]]
    first = [json.loads(s)["phrase"] for s in loaders.load_refcoco(tmp_path)["solution"]][:5]
    assert a == b and len(a) == 5
    assert a != c or a != first


def test_refcoco_pr1_json(tmp_path):
    _save(tmp_path / "imgs" / "a.jpg", 200, 100)
    items = [{"image": "a.jpg", "problem": "the dog", "solution": [20, 10, 100, 50],
              "normalized_solution": [100, 100, 500, 500]},
             {"image": "a.jpg", "problem": "the cat", "normalized_solution": [0, 0, 1000, 1000]}]
    f = tmp_path / "refcoco_val.json"
    f.write_text(json.dumps(items))
    recs = from_dataset(loaders.load_refcoco(f, image_dir=tmp_path / "imgs"))
    assert recs[0]["solution"]["box"] == [20, 10, 100, 50]
    assert recs[1]["solution"]["box"] == [0, 0, 200, 100]  # from 0-1000 to pixels
    assert recs[1]["question"] == "Output the bounding box of the the cat in the image."

    items[0]["solution"] = [40, 20, 200, 100]  # disagrees with normalized_solution
    f.write_text(json.dumps(items))
    with pytest.raises(loaders.DatasetFormatError, match="disagree"):
        loaders.load_refcoco(f, image_dir=tmp_path / "imgs")


def test_refcoco_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no parquet files for split 'testB'"):
        write_lmms_refcoco(tmp_path)
        loaders.load_refcoco(tmp_path, split="testB")
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"image": [b"x"], "caption": ["a"]}).to_parquet(bad)
    with pytest.raises(loaders.DatasetFormatError, match=r"missing columns \['answer', 'bbox'\]"):
        loaders.load_refcoco(bad)
    broken = tmp_path / "broken.parquet"
    pd.DataFrame({"image": [{"bytes": b"not an image", "path": None}], "answer": [["x"]],
                  "bbox": [[0.0, 0, 1, 1]]}).to_parquet(broken)
    with pytest.raises(loaders.DatasetFormatError, match="do not decode"):
        loaders.load_refcoco(broken)
    with pytest.raises(ValueError, match="unknown refcocog split 'testA'"):
        loaders.load_benchmark("refcocog", tmp_path, split="testA")
    with pytest.raises(FileNotFoundError, match="image file .*missing.jpg not found"):
        f = tmp_path / "pr1.json"
        f.write_text(json.dumps([{"image": "missing.jpg", "problem": "x", "solution": [0, 0, 1, 1]}]))
        loaders.load_refcoco(f)


# --- PixMo-Count ----------------------------------------------------------------------------------------------

def test_pixmo_count_urls_with_cache_dir(tmp_path):
    cache = tmp_path / "downloads"
    _save(cache / "abc123.jpg", 60, 40)  # named by sha256
    _save(cache / "photo.png", 30, 30)  # named by the URL's file name
    frame = pd.DataFrame({
        "image_url": ["https://example.org/x/1.jpg", "https://example.org/y/photo.png"],
        "image_sha256": ["abc123", "nohash"],
        "count": [2, 3],
        "points": [{"x": [1.5, 30.0], "y": [2.0, 20.0]}, {"x": [], "y": []}],
        "label": ["boat", "person"],
    })
    f = tmp_path / "validation-00000-of-00001.parquet"
    frame.to_parquet(f)
    recs = from_dataset(loaders.load_benchmark("pixmo_count", f, image_dir=cache))
    assert recs[0]["solution"] == {"points": [[1.5, 2.0], [30.0, 20.0]], "count": 2, "label": "boat"}
    assert recs[0]["image"].size == (60, 40)
    assert recs[1]["solution"]["points"] == [] and recs[1]["solution"]["count"] == 3  # eval splits: count only
    assert recs[1]["question"] == "Output all the bounding boxes of the person"

    with pytest.raises(ValueError, match="pass image_dir"):
        loaders.load_pixmo_count(f)
    cache.rename(tmp_path / "images")  # the default: images/ beside the rows
    assert len(loaders.load_pixmo_count(f)) == 2
    cache = tmp_path / "images"
    frame.loc[1, "image_sha256"] = "zzz"
    frame.loc[1, "image_url"] = "https://example.org/gone.jpg"
    frame.to_parquet(f)
    with pytest.raises(FileNotFoundError, match="image not found"):
        loaders.load_pixmo_count(f, image_dir=cache)


def test_pixmo_count_inline_images_and_count_mismatch(tmp_path):
    rows = [{"image": {"bytes": _png(20, 10), "path": None}, "count": 1, "label": "cat",
             "points": [{"x": 5.0, "y": 5.0}]}]
    f = tmp_path / "train.parquet"
    pd.DataFrame(rows).to_parquet(f)
    assert from_dataset(loaders.load_pixmo_count(f))[0]["solution"]["points"] == [[5.0, 5.0]]
    rows[0]["count"] = 4
    pd.DataFrame(rows).to_parquet(f)
    with pytest.raises(loaders.DatasetFormatError, match="count is 4 but 1 points"):
        loaders.load_pixmo_count(f)


# --- PageOCR --------------------------------------------------------------------------------------------------

def test_pageocr_fox_json(tmp_path):
    _save(tmp_path / "en_pdf_png" / "en_1.png", 50, 70)
    items = [{"image": "en_1.png", "conversations": [
        {"from": "human", "value": "<image>\nOCR this image."}, {"from": "gpt", "value": "Hello world\nline 2"}]}]
    f = tmp_path / "en_page_ocr.json"
    f.write_text(json.dumps(items))
    recs = from_dataset(loaders.load_benchmark("pageocr", f, image_dir=tmp_path / "en_pdf_png"))
    assert recs[0]["solution"] == {"text": "Hello world\nline 2"}
    assert recs[0]["question"] == "OCR this image."
    f.write_text(json.dumps([{"image": "en_1.png", "caption": "x"}]))
    with pytest.raises(loaders.DatasetFormatError, match="expected the page text"):
        loaders.load_pageocr(f, image_dir=tmp_path / "en_pdf_png")


def test_pageocr_parquet(tmp_path):
    f = tmp_path / "test.parquet"
    pd.DataFrame({"image": [{"bytes": _png(30, 30), "path": None}], "text": ["abc"]}).to_parquet(f)
    assert from_dataset(loaders.load_pageocr(f))[0]["solution"]["text"] == "abc"


# --- COCO -----------------------------------------------------------------------------------------------------

def write_coco(root):
    _save(root / "val2017" / "000000000001.jpg", 100, 80)
    _save(root / "val2017" / "000000000002.jpg", 64, 64)
    data = {
        "images": [{"id": 2, "file_name": "000000000002.jpg", "width": 64, "height": 64},
                   {"id": 1, "file_name": "000000000001.jpg", "width": 100, "height": 80}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 18, "bbox": [10, 20, 30, 40], "area": 1000.0, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 2000.0, "iscrowd": 1},
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": [5.5, 6, 7, 8], "area": 50.0, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    f = root / "annotations" / "instances_val2017.json"
    f.write_text(json.dumps(data))
    return f


def test_coco_records(tmp_path):
    f = write_coco(tmp_path)
    ds = loaders.load_benchmark("coco", f)  # image folder found beside the annotations
    recs = from_dataset(ds)
    assert len(recs) == 2  # image 2 has no objects and is kept
    r = recs[0]
    assert r["solution"] == {"boxes": [[10.0, 20.0, 40.0, 60.0], [5.5, 6.0, 12.5, 14.0]], "labels": ["dog", "person"]}
    meta = json.loads(ds[0]["meta"])
    assert meta["image_id"] == 1 and meta["areas"] == [1000.0, 50.0]
    assert meta["crowd_boxes"] == [[0.0, 0.0, 50.0, 50.0]] and meta["crowd_labels"] == ["person"]
    assert r["question"] == "Please output bbox coordinates and names of person, dog."
    assert recs[1]["solution"] == {"boxes": [], "labels": []}
    assert len(loaders.load_coco(f, keep_empty=False)) == 1


def test_coco_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no COCO annotation file"):
        loaders.load_coco(tmp_path / "nope.json")
    f = write_coco(tmp_path)
    data = json.loads(f.read_text())
    del data["categories"]
    f.write_text(json.dumps(data))
    with pytest.raises(loaders.DatasetFormatError, match=r"missing \['categories'\]"):
        loaders.load_coco(f)
    f = write_coco(tmp_path)
    (tmp_path / "val2017" / "000000000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000000000002.jpg not found"):
        loaders.load_coco(f)


def test_hub_ids_are_not_fetched_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="hub is offline"):
        loaders.load_benchmark("refcoco", "lmms-lab/RefCOCO", split="val")


def test_aliases_folders_and_other_row_forms(tmp_path):
    write_coco(tmp_path)
    assert len(loaders.load_benchmark("coco", tmp_path, split="val")) == 2  # folder + "val" -> val2017
    _save(tmp_path / "px" / "images" / "1.jpg", 40, 40)
    rows = [{"image_url": "https://example.org/1.jpg", "count": 2, "label": "dog",
             "points": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}]
    (tmp_path / "px" / "val.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    rec = from_dataset(loaders.load_benchmark("pixmo_count", tmp_path / "px" / "val.jsonl", split="val"))[0]
    assert rec["solution"]["points"] == [[1.0, 2.0], [3.0, 4.0]]
    _save(tmp_path / "train2014" / "COCO_train2014_1.jpg", 100, 100)
    (tmp_path / "rc").mkdir()
    items = [{"image": "COCO_train2014_1.jpg", "problem": "man", "solution": "[10, 20, 30, 40]"}]
    (tmp_path / "rc" / "refcoco_train.json").write_text(json.dumps(items))
    rec = from_dataset(loaders.load_benchmark("refcoco", tmp_path / "rc" / "refcoco_train.json", split="train"))[0]
    assert rec["solution"]["box"] == [10.0, 20.0, 30.0, 40.0]  # images found in COCO's train2014/ one level up


def test_subset_indices():
    assert loaders.subset_indices(5, None).tolist() == [0, 1, 2, 3, 4]
    idx = loaders.subset_indices(1000, 10, seed=3)
    assert len(set(idx.tolist())) == 10 and np.all(np.diff(idx) > 0) and idx.max() > 10


def test_recipes_are_train_configs_with_the_papers_hyperparameters():
    from pathlib import Path

    from workbench.train_config import TrainConfig

    root = Path(__file__).resolve().parent.parent / "configs"
    files = [root / f"{name}.yaml" for name in ("grounding_qwen2vl2b_refcoco", "counting_qwen2vl2b_pixmo",
                                                "ocr_qwen2vl2b_pageocr", "detection_qwen25vl3b_coco")]
    seen = {}
    for f in files:
        cfg = TrainConfig.from_yaml(f)
        assert (cfg.num_generations, cfg.temperature, cfg.beta, cfg.learning_rate, cfg.loss_type, cfg.epochs) == \
            (8, 1.0, 0.04, 1e-6, "grpo", 1)
        assert cfg.dataset["benchmark"] in loaders.BENCHMARKS and cfg.preset == "paper"
        seen[cfg.task] = (cfg.model, cfg.dataset["benchmark"], cfg.dataset["limit"])
    assert seen == {"grounding": ("Qwen/Qwen2-VL-2B-Instruct", "refcoco", 5000),
                    "counting": ("Qwen/Qwen2-VL-2B-Instruct", "pixmo_count", 10000),
                    "ocr": ("Qwen/Qwen2-VL-2B-Instruct", "pageocr", 5000),
                    "detection": ("Qwen/Qwen2.5-VL-3B-Instruct", "coco", None)}
