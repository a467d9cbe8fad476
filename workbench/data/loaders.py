"""Loaders for the benchmarks Perception-R1 trains and evaluates on, from the public formats on local disk.

Each loader returns a ``datasets.Dataset`` of canonical records (DESIGN.md), made by
``workbench.data.synthetic.to_dataset``: ``image`` (Image feature: files and encoded bytes are stored as they are
and decoded lazily), ``task``, ``question``, ``solution`` and ``meta`` (JSON strings; ``synthetic.from_dataset``
turns rows back into records). Solutions are in pixels of the original image.

============  =========================================================================================
benchmark     what ``path`` may be
============  =========================================================================================
refcoco(+/g)  the lmms-lab parquet layout (a ``.parquet`` file, or a folder holding ``{split}-*.parquet``):
              ``image`` (bytes), ``answer`` (list of referring expressions), ``bbox`` [x, y, w, h] pixels;
              or PR1's evaluation JSON (``problem``, ``solution`` pixels, ``normalized_solution`` 0-1000)
pixmo_count   allenai/pixmo-count rows (parquet / JSON / JSONL): ``image`` or ``image_url`` (+ ``image_dir``
              holding the downloaded files), ``label``, ``count``, ``points`` (pixels)
pageocr       the Fox page-OCR JSON (``image`` + a ``conversations`` answer or a ``text`` field), or
              parquet with ``image`` and ``text``
coco          COCO 2017 ``instances_*.json`` + ``image_dir``: one detection record per image
============  =========================================================================================

``limit`` takes a seeded random subset (not the first N rows, which is what the released PR1 script took).
A ``path`` that is not on disk but looks like a hub id (``owner/name``) is loaded with ``datasets`` when the
network is reachable (never in tests).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from workbench import boxes as B
from workbench import conventions, tasks
from workbench.data.synthetic import to_dataset  # one schema for every dataset: image, task, question, solution, meta

BENCHMARKS = ("refcoco", "refcoco+", "refcocog", "pixmo_count", "pageocr", "coco")
SPLITS = {
    "refcoco": ("train", "val", "test", "testA", "testB"),
    "refcoco+": ("train", "val", "testA", "testB"),
    "refcocog": ("train", "val", "test"),
    "pixmo_count": ("train", "validation", "test"),
    "pageocr": ("train", "test"),
    "coco": ("val2017", "train2017"),
}
TASK_OF = {"refcoco": "grounding", "refcoco+": "grounding", "refcocog": "grounding", "pixmo_count": "counting",
           "pageocr": "ocr", "coco": "detection"}
# Split names other code may use for the same split (TrainConfig asks every benchmark for "val").
SPLIT_ALIASES = {"pixmo_count": {"val": "validation"}, "coco": {"val": "val2017", "train": "train2017"},
                 "pageocr": {"val": "test"}}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


class DatasetFormatError(ValueError):
    """A file is there but not in the expected layout (missing columns/keys, wrong values)."""


# --- entry point ----------------------------------------------------------------------------------------------

def load_benchmark(benchmark: str, path=None, *, split: str | None = None, limit: int | None = None, seed: int = 0,
                   **options):
    """Load ``benchmark`` (one of :data:`BENCHMARKS`) from ``path`` as canonical records.

    ``split`` defaults to the evaluation split (val / validation / test / val2017; "val" and "train" are
    understood for every benchmark); ``options`` go to the benchmark's loader (e.g. ``image_dir``).
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    if path is None:
        raise ValueError(f"{benchmark} needs a path: a local file or folder in its public layout (or a hub id)")
    split = SPLIT_ALIASES.get(benchmark, {}).get(split, split)
    if split is not None and split not in SPLITS[benchmark]:
        raise ValueError(f"unknown {benchmark} split {split!r}; expected one of {SPLITS[benchmark]}")
    if benchmark.startswith("refcoco"):
        return load_refcoco(path, split=split or "val", variant=benchmark, limit=limit, seed=seed, **options)
    if benchmark == "pixmo_count":
        return load_pixmo_count(path, split=split or "validation", limit=limit, seed=seed, **options)
    if benchmark == "pageocr":
        return load_pageocr(path, limit=limit, seed=seed, **options)
    if split == "train2017" and Path(path).is_dir():
        path = Path(path) / "annotations" / "instances_train2017.json"
    elif Path(path).is_dir():
        path = Path(path) / "annotations" / "instances_val2017.json"
    return load_coco(path, limit=limit, seed=seed, **options)


load = load_benchmark  # the name TrainConfig's record loading calls


def subset_indices(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Indices of a seeded random subset of ``limit`` of ``n`` rows, in ascending order (all rows if None)."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


# --- RefCOCO / RefCOCO+ / RefCOCOg ----------------------------------------------------------------------------

def load_refcoco(path, *, split: str = "val", variant: str = "refcoco", image_dir=None, limit=None, seed=0):
    """RefCOCO-family grounding records, one per referring expression.

    lmms-lab parquet rows hold several expressions (``answer`` list) for one box; each becomes a record, as
    lmms-eval does. Solution: ``{"box": [x1, y1, x2, y2], "phrase": expression}``; meta keeps the source ids.
    """
    p = Path(path)
    if p.suffix in (".json", ".jsonl"):
        return _refcoco_pr1_json(p, image_dir=image_dir, variant=variant, split=split, limit=limit, seed=seed)
    if not p.exists() and _is_hub_id(str(path)):
        frame = _hub_frame(str(path), split)
    else:
        frame = _read_parquets(p, split)
    _require_columns(frame, ("image", "answer", "bbox"), source=str(path), layout="lmms-lab RefCOCO parquet")
    rows = []
    for r, answers in enumerate(frame["answer"]):
        answers = [answers] if isinstance(answers, str) else list(answers if answers is not None else [])
        rows += [(r, a) for a in answers]
    keep = subset_indices(len(rows), limit, seed)
    records = []
    for i in keep:
        r, phrase = rows[i]
        bbox = np.asarray(frame["bbox"].iloc[r], dtype=float)
        if bbox.shape != (4,):
            raise DatasetFormatError(f"{path}: row {r}: expected bbox [x, y, w, h] in pixels, got {bbox.tolist()}")
        box = B.convert(bbox, "xywh", "xyxy")[0].tolist()
        image = _image_value(frame["image"].iloc[r], image_dir, where=f"{path}: row {r}")
        meta = {"source": variant, "split": split, "row": int(r)}
        for key in ("question_id", "file_name"):
            if key in frame.columns:
                meta[key] = _plain(frame[key].iloc[r])
        records.append(_record(image, "grounding", tasks.question("grounding", phrase=phrase),
                               {"box": box, "phrase": phrase}, meta))
    return to_dataset(records)


def _refcoco_pr1_json(p: Path, *, image_dir, variant, split, limit, seed):
    """PR1's evaluation JSON: a list of {image, problem, solution (pixels), normalized_solution (0-1000)}."""
    items = _read_json_rows(p)
    keep = subset_indices(len(items), limit, seed)
    root = Path(image_dir) if image_dir else _image_root(p, items)
    frame_conv = conventions.get("qwen2_vl")  # normalized_solution is in Qwen2-VL's 0-1000 frame
    records = []
    for i in keep:
        item = items[i]
        where = f"{p}: item {i}"
        phrase = _first_key(item, ("problem", "phrase", "sentence", "expression", "question"), where)
        image_path = _first_key(item, ("image", "image_path", "file_name"), where)
        image = _image_value(image_path, root, where=where)
        size = _image_size(image)
        px = _box4(item.get("solution"), where, "solution") if item.get("solution") is not None else None
        norm = item.get("normalized_solution")
        norm = _box4(norm, where, "normalized_solution") if norm is not None else None
        if px is None and norm is None:
            raise DatasetFormatError(f"{where}: expected 'solution' (pixels) or 'normalized_solution' (0-1000), "
                                     f"found keys {sorted(item)}")
        if norm is not None:
            from_norm = frame_conv.to_pixels(norm, size)
            if px is None:
                px = from_norm.tolist()
            elif np.abs(np.asarray(px) - from_norm).max() > 0.01 * max(size) + 1:
                raise DatasetFormatError(
                    f"{where}: 'solution' {px} (pixels) and 'normalized_solution' {norm} (0-1000) disagree for "
                    f"an image of size {size}: {np.round(from_norm, 1).tolist()} pixels expected")
        meta = {"source": variant, "split": split, "row": int(i), "file_name": str(image_path)}
        records.append(_record(image, "grounding", tasks.question("grounding", phrase=phrase),
                               {"box": [float(v) for v in px], "phrase": phrase}, meta))
    return to_dataset(records)


def _image_root(p: Path, items: list[dict]) -> Path:
    """Where PR1-style JSON keeps its images when no image_dir is given: beside the JSON, in images/ there, or
    in COCO's train2014/ one level up (RefCOCO images are COCO train2014 images)."""
    candidates = [p.parent, p.parent / "images", p.parent.parent / "train2014", p.parent / "train2014"]
    first = next((str(i.get("image") or i.get("image_path") or "") for i in items), "")
    return next((c for c in candidates if first and (c / first).is_file()), p.parent)


# --- PixMo-Count ----------------------------------------------------------------------------------------------

def load_pixmo_count(path, *, split: str = "validation", image_dir=None, limit=None, seed=0,
                     verify_sha256: bool = False):
    """PixMo-Count counting records: ``{"points": [[x, y], ...], "count": n, "label": str}``.

    The val/test splits carry a count but no points (``points`` is then empty and ``count`` is the answer).
    Images come from an ``image`` column, or from ``image_dir`` (default: ``images/`` beside ``path``) holding
    the files downloaded from ``image_url`` — named by their sha256 (any image suffix) or by the URL's file name.
    """
    p = Path(path)
    if not p.exists() and _is_hub_id(str(path)):
        frame = _hub_frame(str(path), split)
    elif p.suffix in (".json", ".jsonl"):
        import pandas as pd

        frame = pd.DataFrame(_read_json_rows(p))
    else:
        frame = _read_parquets(p, split)
    _require_columns(frame, ("count", "label"), source=str(path), layout="PixMo-Count")
    if "image" not in frame.columns and "image_url" not in frame.columns:
        raise DatasetFormatError(f"{path}: expected an 'image' or an 'image_url' column (PixMo-Count), found "
                                 f"{list(frame.columns)}")
    if "image" not in frame.columns and image_dir is None:
        image_dir = (p.parent if p.is_file() else p) / "images"
        if not image_dir.is_dir():
            raise ValueError(f"{path} lists image URLs; pass image_dir, the folder holding the downloaded images "
                             f"(named by sha256 or by the URL's file name; default {image_dir}, not found)")
    keep = subset_indices(len(frame), limit, seed)
    records = []
    for i in keep:
        row = frame.iloc[int(i)]
        where = f"{path}: row {i}"
        if "image" in frame.columns and row["image"] is not None:
            image = _image_value(row["image"], image_dir, where=where)
        else:
            image = _cached_image(row, Path(image_dir), where, verify_sha256)
        points = _points(row.get("points"), where)
        count = int(row["count"])
        if len(points) and len(points) != count:
            raise DatasetFormatError(f"{where}: count is {count} but {len(points)} points are given")
        label = str(row["label"])
        meta = {"source": "pixmo_count", "split": split, "row": int(i)}
        for key in ("image_url", "image_sha256"):
            if key in frame.columns:
                meta[key] = _plain(row[key])
        records.append(_record(image, "counting", tasks.question("counting", label=label),
                               {"points": points, "count": count, "label": label}, meta))
    return to_dataset(records)


def _cached_image(row, image_dir: Path, where: str, verify: bool):
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image_dir {image_dir} is not a folder")
    candidates = []
    sha = row.get("image_sha256")
    if isinstance(sha, str) and sha:
        candidates += [image_dir / sha] + [image_dir / (sha + s) for s in IMAGE_SUFFIXES]
    url = row.get("image_url")
    if isinstance(url, str) and url:
        candidates.append(image_dir / url.rstrip("/").split("/")[-1].split("?")[0])
    for c in candidates:
        if c.is_file():
            if verify and isinstance(sha, str) and sha:
                import hashlib

                digest = hashlib.sha256(c.read_bytes()).hexdigest()
                if digest != sha:
                    raise DatasetFormatError(f"{where}: {c} has sha256 {digest}, expected {sha}")
            return _image_value(str(c), None, where=where)
    raise FileNotFoundError(f"{where}: image not found in {image_dir}; looked for "
                            f"{[c.name for c in candidates][:3]}... (download {url!r} there first)")


def _points(value, where: str) -> list[list[float]]:
    """PixMo points as stored: {"x": [...], "y": [...]} (parquet), [{"x", "y"}, ...] or [[x, y], ...]."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, dict):
        xs, ys = list(value.get("x", [])), list(value.get("y", []))
        if len(xs) != len(ys):
            raise DatasetFormatError(f"{where}: points have {len(xs)} x and {len(ys)} y values")
        return [[float(x), float(y)] for x, y in zip(xs, ys)]
    out = []
    for pt in list(value):
        if isinstance(pt, dict):
            out.append([float(pt["x"]), float(pt["y"])])
        else:
            arr = np.asarray(pt, dtype=float)
            if arr.shape != (2,):
                raise DatasetFormatError(f"{where}: expected points as (x, y) pairs, got {pt!r}")
            out.append(arr.tolist())
    return out


# --- PageOCR --------------------------------------------------------------------------------------------------

def load_pageocr(path, *, image_dir=None, limit=None, seed=0):
    """Page-OCR records ``{"text": str}``: Fox-style JSON/JSONL (``image`` + ``conversations`` whose last
    answer is the text, or a ``text``/``answer`` field), or parquet with ``image`` and ``text`` columns."""
    p = Path(path)
    if p.suffix in (".json", ".jsonl"):
        items = _read_json_rows(p)
    else:
        frame = _read_parquets(p, None)
        _require_columns(frame, ("image",), source=str(path), layout="PageOCR parquet")
        items = frame.to_dict("records")
    keep = subset_indices(len(items), limit, seed)
    root = Path(image_dir) if image_dir else (p.parent if p.is_file() else p)
    records = []
    for i in keep:
        item, where = items[i], f"{path}: item {i}"
        image = _image_value(_first_key(item, ("image", "image_path", "file_name"), where), root, where=where)
        text = _ocr_text(item, where)
        records.append(_record(image, "ocr", tasks.question("ocr"), {"text": text},
                               {"source": "pageocr", "row": int(i)}))
    return to_dataset(records)


def _ocr_text(item: dict, where: str) -> str:
    for key in ("text", "answer", "solution", "gt"):
        if isinstance(item.get(key), str):
            return item[key]
    conv = item.get("conversations")
    if isinstance(conv, (list, np.ndarray)) and len(conv):
        answers = [t.get("value") for t in conv if isinstance(t, dict) and t.get("from") in ("gpt", "assistant")]
        if answers and isinstance(answers[-1], str):
            return answers[-1]
    raise DatasetFormatError(f"{where}: expected the page text in 'text' (or 'answer') or as the last 'gpt' turn "
                             f"of 'conversations', found keys {sorted(item)}")


# --- COCO 2017 ------------------------------------------------------------------------------------------------

def load_coco(path, *, image_dir=None, limit=None, seed=0, prompt: str = "paper", keep_empty: bool = True):
    """COCO detection records, one per image: ``{"boxes": [[x1, y1, x2, y2], ...], "labels": [name, ...]}``.

    ``path`` is an ``instances_*.json``; ``image_dir`` the image folder (default: ``val2017``/``train2017``
    beside the annotations' folder). Crowd annotations are left out of the solution (they are no objects to
    find) but kept in meta (``crowd_boxes``, ``crowd_labels``, ``crowd_areas``) with every box's COCO ``areas``
    and ``image_id``, so evaluation can score exactly as COCOeval does. The question lists all categories
    (``prompt`` = "paper" or "pr1_eval", the two wordings in ``workbench.tasks.TEMPLATES``). Images without
    annotations are kept (COCO's AP counts them) unless ``keep_empty=False``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no COCO annotation file at {p}; expected an instances_*.json")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{p} is not valid JSON: {err}") from err
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise DatasetFormatError(f"{p}: expected COCO instances keys images/annotations/categories, "
                                 f"missing {missing}")
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        for key in ("image_id", "category_id", "bbox"):
            if key not in ann:
                raise DatasetFormatError(f"{p}: annotation {ann.get('id')} lacks {key!r}")
        if ann["category_id"] not in names:
            raise DatasetFormatError(f"{p}: annotation {ann.get('id')} has category_id {ann['category_id']}, "
                                     f"which is not among the categories")
        by_image.setdefault(ann["image_id"], []).append(ann)
    images = sorted(data["images"], key=lambda im: im["id"])
    if not keep_empty:
        images = [im for im in images if any(not a.get("iscrowd") for a in by_image.get(im["id"], []))]
    if image_dir is None:
        split = p.stem.split("_")[-1]
        image_dir = p.parent.parent / split
    root = Path(image_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"COCO image folder {root} not found; pass image_dir")
    classes = [names[c] for c in sorted(names)]
    question = tasks.question("detection", variant=prompt, classes=classes)
    records = []
    for i in subset_indices(len(images), limit, seed):
        im = images[i]
        image = _image_value(im["file_name"], root, where=f"{p}: image {im['id']}")
        sol = {"boxes": [], "labels": []}
        meta = {"source": "coco", "image_id": im["id"], "file_name": im["file_name"], "areas": [],
                "crowd_boxes": [], "crowd_labels": [], "crowd_areas": []}
        for ann in by_image.get(im["id"], []):
            box = B.convert(ann["bbox"], "xywh", "xyxy")[0].tolist()
            area = float(ann.get("area", ann["bbox"][2] * ann["bbox"][3]))
            if ann.get("iscrowd"):
                meta["crowd_boxes"].append(box)
                meta["crowd_labels"].append(names[ann["category_id"]])
                meta["crowd_areas"].append(area)
            else:
                sol["boxes"].append(box)
                sol["labels"].append(names[ann["category_id"]])
                meta["areas"].append(area)
        records.append(_record(image, "detection", question, sol, meta))
    return to_dataset(records)


# --- shared helpers -------------------------------------------------------------------------------------------

def _record(image, task, question, solution, meta) -> dict:
    return {"image": image, "task": task, "question": question, "solution": solution, "meta": meta}


def _image_value(value, root, *, where: str):
    """An image cell (encoded bytes, {"bytes", "path"}, a path, a PIL image) -> what datasets.Image stores,
    after checking that it exists and decodes (header only)."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
        else:
            raise DatasetFormatError(f"{where}: image cell has neither bytes nor a path")
    if isinstance(value, (bytes, bytearray)):
        try:
            Image.open(io.BytesIO(value)).verify()
        except Exception as err:
            raise DatasetFormatError(f"{where}: image bytes do not decode as an image ({err})") from err
        return {"bytes": bytes(value), "path": None}
    if isinstance(value, (str, os.PathLike)):
        f = Path(value)
        if not f.is_absolute() and root is not None:
            f = Path(root) / f
        if not f.is_file():
            raise FileNotFoundError(f"{where}: image file {f} not found")
        try:
            with Image.open(f):  # reads the header only: cheap for 100k COCO images
                pass
        except Exception as err:
            raise DatasetFormatError(f"{where}: {f} is not a readable image ({err})") from err
        return str(f)
    raise DatasetFormatError(f"{where}: expected an image (bytes, path or PIL image), got {type(value).__name__}")


def _image_size(value) -> tuple[int, int]:
    if isinstance(value, Image.Image):
        return value.size
    src = io.BytesIO(value["bytes"]) if isinstance(value, dict) else value
    with Image.open(src) as im:
        return im.size


def _read_parquets(p: Path, split: str | None):
    import pandas as pd

    if p.is_file():
        files = [p]
    elif p.is_dir():
        pattern = f"{split}-*.parquet" if split else "*.parquet"
        files = sorted(p.rglob(pattern)) or (sorted(p.rglob(f"{split}.parquet")) if split else [])
        if not files:
            found = sorted(f.name for f in p.rglob("*.parquet"))[:10]
            raise FileNotFoundError(f"no parquet files for split {split!r} under {p} (expected {pattern}); "
                                    f"found {found or 'none'}")
    else:
        raise FileNotFoundError(f"{p} does not exist; expected a parquet file or a folder of them")
    try:
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    except Exception as err:
        raise DatasetFormatError(f"could not read parquet {files[0]}: {err}") from err


def _read_json_rows(p: Path) -> list[dict]:
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist")
    text = p.read_text()
    try:
        if p.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{p} is not valid JSON: {err}") from err
    if isinstance(rows, dict):  # {"data": [...]} / {"annotations": [...]} wrappers
        lists = [v for v in rows.values() if isinstance(v, list)]
        rows = lists[0] if len(lists) == 1 else rows
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DatasetFormatError(f"{p}: expected a list of objects, got {type(rows).__name__}")
    return rows


def _require_columns(frame, columns, *, source: str, layout: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetFormatError(f"{source}: not the {layout} layout: missing columns {missing}, found "
                                 f"{list(frame.columns)}")


def _first_key(item: dict, keys, where: str):
    for k in keys:
        if item.get(k) is not None:
            return item[k]
    raise DatasetFormatError(f"{where}: expected one of the keys {list(keys)}, found {sorted(item)}")


def _box4(value, where: str, name: str) -> list[float]:
    if isinstance(value, str):  # e.g. "[12, 40, 96, 120]"
        import re

        value = re.findall(r"[-+]?\d*\.?\d+", value)
    try:
        arr = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != (4,):
        raise DatasetFormatError(f"{where}: expected {name} as [x1, y1, x2, y2], got {value!r}")
    return arr.tolist()


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _is_hub_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.startswith((".", "~"))


def _hub_frame(repo: str, split: str | None):
    """A hub dataset as a pandas frame (images as {"bytes", "path"}). Needs the network."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise FileNotFoundError(f"{repo!r} is not a local path, and the hub is offline (HF_HUB_OFFLINE=1); "
                                f"download the dataset and pass its local path")
    import datasets

    try:
        ds = datasets.load_dataset(repo, split=split)
    except Exception as err:
        raise FileNotFoundError(f"{repo!r} is not a local path and could not be loaded from the hub: {err}") from err
    return ds.to_pandas()
