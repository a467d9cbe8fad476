"""Writes the course notebooks (01-04) from the cell sources below.

    python notebooks/build_notebooks.py            # (re)write every notebook, without outputs
    python notebooks/build_notebooks.py --check    # exit 1 if a committed notebook differs from this file

The notebooks are committed without outputs; edit the cells here, rebuild, and open them in JupyterLab
(`make lab`). Every computation in them is a ``workbench`` call; the cells add only presentation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PAPER = "[Perception-R1](https://arxiv.org/abs/2504.07954) (Yu et al., 2025)"

# The first code cell of every notebook: the one variable that chooses the model.
MODEL_CELL = '''
# The one choice: which policy. None = the tiny Qwen-VL shipped in assets/ (CPU, seconds).
# Any Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint id or path works unchanged on a GPU machine,
# e.g. "Qwen/Qwen2-VL-2B-Instruct" (the paper's grounding/counting/OCR model) or
# "Qwen/Qwen2.5-VL-3B-Instruct" (its detection model).
MODEL = None
'''


# Pictures side by side; appended to the setup cell of the notebooks that draw.
SHOW = '''

def show(images, titles=None, width=3.6):
    viz.grid(images, titles, width=width)
    plt.show()
'''


def md(text: str):
    return new_markdown_cell(dedent(text).strip("\n"))


def code(text: str):
    return new_code_cell(dedent(text).strip("\n"))


def setup(text: str):
    """The imports cell, followed by the shared ``show`` function (pictures side by side)."""
    return new_code_cell(dedent(text).strip("\n") + "\n" + SHOW.rstrip("\n"))


# ======================================================================================================================
# 01 - rewards and matching
# ======================================================================================================================


def nb01() -> list:
    return [
        md(f"""
        # 01 · Rewards and matching

        **What this notebook teaches.** In GRPO the reward is the only thing that says what "better" means.
        {PAPER} uses no learned reward model: every answer is scored by a rule (§4.1, *rule-based reward
        modeling*), and answers with many objects are scored after a one-to-one **bipartite matching** of predicted
        and true objects (§4.2, *multi-subject reward matching*). Here you compute each of those rewards with
        `workbench.rewards.score`, the same call the trainer, the TRL bridge and the app make, and look at them:

        1. how a model writes coordinates, and in which frame (Qwen2-VL 0–1000 vs Qwen2.5-VL resized pixels);
        2. the format reward;
        3. IoU for visual grounding;
        4. counting as point matching;
        5. OCR edit distance;
        6. detection with Hungarian matching, and why greedy matching gives a weaker signal;
        7. the `paper` preset next to `pr1_released` (what the released PR1 code computes).

        No weights are loaded: the model only decides the coordinate convention of the example answers.
        Everything runs in seconds on a CPU.
        """),
        code(MODEL_CELL),
        setup("""
        import Levenshtein
        import matplotlib.pyplot as plt
        import numpy as np
        import pandas as pd
        from PIL import Image
        from transformers import AutoConfig

        from workbench import boxes, conventions, matching, models, tasks, viz
        from workbench.data import synthetic
        from workbench.rewards import Match, reward_range, score

        # The model's family decides how it writes coordinates (read from its config; no weights loaded).
        config = AutoConfig.from_pretrained(models.TINY_MODEL if MODEL is None else MODEL)
        CONVENTION = conventions.for_model_type(config.model_type)
        conv = conventions.get(CONVENTION)
        print(f"model: {MODEL or 'tiny (assets)'} -> model_type {config.model_type!r}, convention {CONVENTION!r}")

        """),
        # ---------------------------------------------------------------------------------------------------------
        md("""
        ## 1 · Output formats and coordinate frames

        Ground truth is stored in **pixels of the original image**. Each model family writes coordinates in its own
        frame, and a reward that reads them in the wrong frame is silently wrong:

        | family | writes | frame |
        |---|---|---|
        | Qwen2-VL | `<\\|object_ref_start\\|>phrase<\\|object_ref_end\\|><\\|box_start\\|>(x1,y1),(x2,y2)<\\|box_end\\|>` | integers 0–1000 of the image, whatever its size |
        | Qwen2.5-VL | JSON `[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]` | pixels of the image *after* the processor's `smart_resize` (sides rounded to multiples of 28, area within `min_pixels`…`max_pixels`) |
        | Qwen3-VL | the same JSON | integers 0–1000 again |

        The paper trains Qwen2-VL-2B for grounding, counting and OCR, and Qwen2.5-VL-3B for detection (§4.3).
        `workbench.conventions` is the only place that converts between these frames; rewards and metrics work in
        original pixels. A 150 × 150 ShapesWorld image makes the point: 150 is not a multiple of 28, so Qwen2.5-VL
        sees it resized to 140 × 140 and writes its box in that frame.
        """),
        code("""
        record = synthetic.generate("grounding", 1, seed=0, image_size=150)[0]
        size = record["image"].size
        print(record["question"], "| ground truth (pixels):", record["solution"]["box"])
        pd.DataFrame(
            [{"convention": name, "frame (w, h)": conventions.get(name).frame_size(size),
              "how it answers": tasks.sft_target(record, name)} for name in conventions.NAMES]
        ).style.format(escape="html").set_properties(subset=["how it answers"],
                                                     **{"white-space": "pre-wrap", "text-align": "left"})
        """),
        md("""
        The same box, drawn from each answer read in its own frame (first two pictures: they land on the ground
        truth), and from answers read in the **wrong** frame (last two). The red box is what the reward sees;
        green is the ground truth; the yellow link carries the IoU.
        """),
        code("""
        written = {name: tasks.sft_target(record, name) for name in ("qwen2_vl", "qwen2_5_vl")}
        readings = [  # (written by, read as)
            ("qwen2_vl", "qwen2_vl"),
            ("qwen2_5_vl", "qwen2_5_vl"),
            ("qwen2_5_vl", "pixels"),     # resized pixels mistaken for original pixels: a few pixels off
            ("qwen2_vl", "qwen2_5_vl"),   # 0-1000 mistaken for pixels: far outside the image
        ]
        pictures, titles, frame_ious = [], [], {}
        for writer, reader in readings:
            b = score("grounding", written[writer], record["solution"], image_size=size, convention=reader)
            frame_ious[writer, reader] = b.parts["iou"]
            pictures.append(viz.draw(record["image"], "grounding", record["solution"], b.prediction, b.matches,
                                     caption=f"IoU {b.parts['iou']:.2f}"))
            titles.append(f"written by {writer}\\nread as {reader}")
        show(pictures, titles)
        """),
        md("""
        For a COCO-sized photo the frames differ more, and Qwen2.5-VL's frame also depends on the processor's
        `max_pixels` (a setting of the training run, which is why `conventions.get("qwen2_5_vl", max_pixels=...)`
        takes it):
        """),
        code("""
        photo = (640, 427)
        pd.DataFrame([
            {"convention": "qwen2_vl", "frame (w, h)": conventions.get("qwen2_vl").frame_size(photo)},
            {"convention": "qwen2_5_vl (default max_pixels)", "frame (w, h)": conventions.get("qwen2_5_vl").frame_size(photo)},
            {"convention": "qwen2_5_vl (max_pixels = 256*28*28)",
             "frame (w, h)": conventions.get("qwen2_5_vl", max_pixels=256 * 28 * 28).frame_size(photo)},
            {"convention": "pixels", "frame (w, h)": conventions.get("pixels").frame_size(photo)},
        ])
        """),
        code("""
        # Check: the 0-1000 numbers Qwen2-VL writes are x / width * 1000 (rounded), and each answer read in its own
        # frame lands on the ground truth (up to that rounding), while the wrong frames do not.
        box_px = np.asarray(record["solution"]["box"], float)
        by_hand = np.rint(box_px / np.tile(size, 2) * 1000)
        assert np.array_equal(np.rint(conventions.get("qwen2_vl").from_pixels(box_px, size)), by_hand)
        assert f"({by_hand[0]:.0f},{by_hand[1]:.0f}),({by_hand[2]:.0f},{by_hand[3]:.0f})" in written["qwen2_vl"]
        assert frame_ious["qwen2_vl", "qwen2_vl"] > 0.95 and frame_ious["qwen2_5_vl", "qwen2_5_vl"] > 0.95
        assert frame_ious["qwen2_5_vl", "pixels"] < 0.9 and frame_ious["qwen2_vl", "qwen2_5_vl"] == 0.0
        """),
        # ---------------------------------------------------------------------------------------------------------
        md("""
        ## 2 · The format reward

        §4.1: the reward is a **format** part plus an **answer** part. The format part is $+1$ when the completion has
        the task's output structure and $-1$ when it does not; the answer part measures correctness (sections 3–6).
        By default they add up, $r = r_\\text{format} + r_\\text{answer}$; `format_mode="gate"` instead counts the
        answer only when the format is right.

        Where the released code differs (`pr1_released`): its grounding format check is a regular expression whose
        `|` characters are not escaped, so it is an alternation that matches almost any text starting with `<` —
        effectively a constant $1$; counting has a real gate (phrase, adjacent box blocks, then `<|im_end|>` — or the end of a text whose end token was dropped) and no
        separate format term; OCR has none; detection gives $0.25\\times$ the share of well-formed JSON items.
        """),
        code("""
        gt_box = record["solution"]["box"]
        phrase = record["solution"]["phrase"]
        x1, y1, x2, y2 = np.rint(conventions.get("qwen2_vl").from_pixels(gt_box, size)).astype(int)
        completions = {
            "the model's own format": conv.write_box(gt_box, size, phrase),
            "Qwen2-VL special tokens": f"<|object_ref_start|>{phrase}<|object_ref_end|><|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>",
            "plain list": f"[{x1}, {y1}, {x2}, {y2}]",
            "thinking wrapper": f"<think>It is on the left.</think><answer>[{x1}, {y1}, {x2}, {y2}]</answer>",
            "prose, no box": "The purple square is on the left.",
            "starts with '<', no box": "<p>no idea</p>",
            "empty": "",
        }
        rows = []
        for name, text in completions.items():
            paper = score("grounding", text, record["solution"], image_size=size, convention=CONVENTION)
            gate = score("grounding", text, record["solution"], image_size=size, convention=CONVENTION,
                         format_mode="gate")
            released = score("grounding", text, record["solution"], image_size=size, convention="qwen2_vl",
                             preset="pr1_released")
            rows.append({"completion": name, "paper format": paper.parts["format"], "paper total": paper.total,
                         "paper total (gate)": gate.total, "pr1_released format": released.parts["format"],
                         "what the parser noted": "; ".join(paper.malformed)})
        format_table = pd.DataFrame(rows).set_index("completion")
        format_table.style.format(precision=2).format_index(escape="html").background_gradient(
            subset=["paper total", "paper total (gate)"], cmap="RdYlGn", vmin=-1, vmax=2)
        """),
        code("""
        # Check: +1 / -1 for the paper, and the released pattern's quirk (a '<' at the start is enough).
        assert format_table.loc["the model's own format", "paper format"] == 1.0
        assert format_table.loc["prose, no box", "paper format"] == -1.0
        assert format_table.loc["starts with '<', no box", "pr1_released format"] == 1.0
        """),
        # ---------------------------------------------------------------------------------------------------------
        md("""
        ## 3 · IoU for visual grounding

        §4.1: a grounding answer is one box $\\hat b$ for the referring phrase, rewarded by its overlap with the
        true box $b$:

        $$r_\\text{answer} = \\mathrm{IoU}(\\hat b, b) = \\frac{|\\hat b \\cap b|}{|\\hat b \\cup b|} \\in [0, 1].$$

        The reward is continuous: a box that is a little better gets a little more reward, so among 8 sampled
        answers there is almost always an ordering for GRPO to learn from. `pr1_released` squares the IoU (in the
        0–1000 frame), which flattens the reward for poor boxes and sharpens it near a perfect one.
        """),
        code("""
        w = box_px[2] - box_px[0]
        shifts = np.linspace(0, 1.2, 25)  # horizontal shift, as a fraction of the box width
        curve = []
        for s in shifts:
            text = conventions.get("qwen2_vl").write_box(box_px + [s * w, 0, s * w, 0], size, phrase)
            paper = score("grounding", text, record["solution"], image_size=size, convention="qwen2_vl")
            released = score("grounding", text, record["solution"], image_size=size, convention="qwen2_vl",
                             preset="pr1_released")
            curve.append({"shift": s, "paper: IoU": paper.parts["answer"],
                          "pr1_released: IoU²": released.parts["answer"]})
        curve = pd.DataFrame(curve).set_index("shift")
        ax = curve.plot(figsize=(6, 3), marker=".", title="grounding answer reward vs how far the box is shifted")
        ax.set_xlabel("shift (fraction of the box width)")
        ax.set_ylabel("answer reward")
        plt.show()

        examples = [0.1, 0.35, 0.8]
        pictures = []
        for s in examples:
            text = conv.write_box(box_px + [s * w, 0, s * w, 0], size, phrase)
            b = score("grounding", text, record["solution"], image_size=size, convention=CONVENTION)
            pictures.append(viz.draw(record["image"], "grounding", record["solution"], b.prediction, b.matches,
                                     caption=f"IoU {b.parts['iou']:.3f}  total {b.total:.3f}"))
        show(pictures, [f"shifted by {s:.0%} of the width" for s in examples])
        """),
        md("The IoU of the middle picture, by hand from the parsed box (original pixels):"),
        code("""
        b = score("grounding", conv.write_box(box_px + [0.35 * w, 0, 0.35 * w, 0], size, phrase), record["solution"],
                  image_size=size, convention=CONVENTION)
        (px1, py1, px2, py2), (gx1, gy1, gx2, gy2) = b.prediction.boxes[0], box_px
        inter = max(0, min(px2, gx2) - max(px1, gx1)) * max(0, min(py2, gy2) - max(py1, gy1))
        union = (px2 - px1) * (py2 - py1) + (gx2 - gx1) * (gy2 - gy1) - inter
        print(f"intersection {inter:.1f} px², union {union:.1f} px², IoU {inter / union:.4f}; "
              f"reward's IoU {b.parts['iou']:.4f}")
        assert abs(inter / union - b.parts["iou"]) < 1e-9
        assert b.total == b.parts["format"] + b.parts["answer"] == 1.0 + b.parts["iou"]
        """),
        # ---------------------------------------------------------------------------------------------------------
        md("""
        ## 4 · Counting as point matching

        §4.1 turns counting into **point detection**: the model lists one box per instance (the prompt asks for
        "all the bounding boxes of the …"), and the reward uses the box centres as points. A bare number would
        score only the count; points let the reward also check *which* objects were counted. Predicted points are
        matched one-to-one to the true points with the Hungarian algorithm on Euclidean distance (§4.2), measured
        in 0–1000 units so every image size weighs the same. With $N$ predicted and $M$ true points and
        $\\bar d$ the mean matched distance:

        $$r_\\text{answer} = \\frac{\\min(N, M)}{\\max(N, M)}\\left(1 - \\frac{\\bar d}{1000\\sqrt 2}\\right).$$

        Order does not matter (the matching finds the pairs), a missed or an extra object costs through the count
        ratio, and sloppy locations cost through the distance term.
        """),
        code("""
        count_record = synthetic.generate("counting", 1, seed=0, image_size=150)[0]
        sol, csize = count_record["solution"], count_record["image"].size
        gt_boxes = np.asarray(sol["boxes"], float)
        rng = np.random.default_rng(0)
        jitter = np.repeat(rng.uniform(-8, 8, size=(len(gt_boxes), 2)), 2, axis=0).reshape(-1, 4)
        predictions = {
            "exact, reversed order": gt_boxes[::-1],
            "one missed": gt_boxes[:-1],
            "one extra": np.vstack([gt_boxes, [[110, 5, 140, 35]]]),
            "each moved ~8 px": gt_boxes + jitter,
        }
        print(count_record["question"], f"-> {len(gt_boxes)} objects")
        columns = ("count_ratio", "mean_distance", "distance_term", "answer")
        rows, breakdowns = [], {}
        for name, pred in predictions.items():
            text = conv.write_boxes(pred, [sol["label"]] * len(pred), csize)
            b = breakdowns[name] = score("counting", text, sol, image_size=csize, convention=CONVENTION)
            rows.append({"prediction": name, "N": len(pred), "M": len(gt_boxes),
                         **{k: b.parts[k] for k in columns}, "total": b.total})
        b = score("counting", str(len(gt_boxes)), sol, image_size=csize, convention=CONVENTION)
        rows.append({"prediction": "the bare number", "N": len(gt_boxes), "M": len(gt_boxes),
                     **{k: b.parts[k] for k in columns}, "total": b.total})
        pd.DataFrame(rows).set_index("prediction").style.format(precision=3)
        """),
        code("""
        show([viz.draw(count_record["image"], "counting", sol, breakdowns[name].prediction, breakdowns[name].matches,
                       caption=f"answer {breakdowns[name].parts['answer']:.3f}")
              for name in predictions], list(predictions))
        """),
        code("""
        # Check: the displayed answer of "each moved ~8 px" from the matched distances, by hand.
        b = breakdowns["each moved ~8 px"]
        d_bar = np.mean([m.distance for m in b.matches])
        by_hand = min(len(gt_boxes), len(gt_boxes)) / max(len(gt_boxes), len(gt_boxes)) * (1 - d_bar / (1000 * np.sqrt(2)))
        print(f"mean matched distance {d_bar:.2f} (0-1000 units) -> answer {by_hand:.4f}")
        assert abs(by_hand - b.parts["answer"]) < 1e-9
        assert breakdowns["one missed"].parts["count_ratio"] == (len(gt_boxes) - 1) / len(gt_boxes)
        """),
        # ---------------------------------------------------------------------------------------------------------
        md("""
        ## 5 · OCR: edit distance

        §4.1 rewards a transcription $\\hat s$ of the text $s$ by its normalised edit distance; both strings have
        whitespace runs collapsed and ends stripped first:

        $$r_\\text{answer} = \\max\\left(0,\\ 1 - \\frac{\\mathrm{Levenshtein}(\\hat s, s)}{\\max(|\\hat s|, |s|)}\\right).$$

        One wrong character in a short word already costs a lot; case counts. PR1 released no OCR reward; its
        authors' earlier code used the same formula with 0 for an empty string (`pr1_released` reproduces that).
        """),
        code("""
        ocr_record = synthetic.generate("ocr", 1, seed=0, image_size=150)[0]
        truth = ocr_record["solution"]["text"]
        guesses = [truth, f"  {truth} ", truth[:-1] + "X", truth.lower(), truth[:2], truth + truth, "", "<think>hmm</think>"]
        rows = []
        for guess in guesses:
            paper = score("ocr", guess, ocr_record["solution"], image_size=ocr_record["image"].size)
            released = score("ocr", guess, ocr_record["solution"], image_size=ocr_record["image"].size,
                             preset="pr1_released")
            rows.append({"transcription": repr(guess), "edit distance": Levenshtein.distance(" ".join(guess.split()), truth),
                         "paper answer": paper.parts["answer"], "paper total": paper.total,
                         "pr1_released total": released.total})
        ocr_table = pd.DataFrame(rows).set_index("transcription")
        display(viz.draw(ocr_record["image"], "ocr", ocr_record["solution"]))
        ocr_table.style.format(precision=3)
        """),
        code("""
        # Check: one substituted character out of len(truth) -> 1 - 1/len(truth).
        assert ocr_table.loc[repr(truth[:-1] + "X"), "paper answer"] == 1 - 1 / len(truth)
        assert ocr_table.loc[repr(f"  {truth} "), "paper answer"] == 1.0  # whitespace is normalised
        """),
        # ---------------------------------------------------------------------------------------------------------
        md("""
        ## 6 · Detection: bipartite matching

        A detection answer is an unordered set of labelled boxes, and rewards are only defined per *pair* of a
        predicted and a true object. §4.2 finds the pairs by optimal bipartite matching,
        $\\hat\\sigma = \\arg\\min_{\\sigma} \\sum_i C(\\hat y_{\\sigma(i)}, y_i)$, solved by the Hungarian algorithm
        (`workbench.matching.hungarian`, i.e. `scipy.optimize.linear_sum_assignment`). The `paper` preset's cost is

        $$C = (1 - \\mathrm{IoU}) + 0.5\\,[\\text{labels differ}],$$

        so localisation dominates and a label mismatch only breaks ties. Matched pairs with IoU ≥ 0.5 are true
        positives ($m$ of them). With $N$ predictions and $M$ true objects:
        $P = m/N$, $R = m/M$, $F_1 = 2PR/(P+R)$; *loc* = mean IoU of the matched pairs; *cls* = share of matched
        pairs with the right label; *penalty* $= 0.5\\,(\\text{false-positive rate} + \\text{false-negative rate})$;

        $$r_\\text{answer} = F_1 + \\text{loc} + \\text{cls} - \\text{penalty} \\in [-1, 3].$$

        Below, a ShapesWorld scene and an answer that lists the objects in a different order, moves each a little,
        gets one label wrong, misses one object and adds one that is not there.
        """),
        code("""
        det_record = synthetic.generate("detection", 4, seed=0, image_size=150)[3]
        dsol, dsize = det_record["solution"], det_record["image"].size
        gt_det = np.asarray(dsol["boxes"], float)
        print(det_record["question"], "| ground truth:", list(zip(dsol["labels"], dsol["boxes"])))
        order = np.arange(len(gt_det))[::-1][:-1]                       # reversed, and the first object missed
        pred_det = gt_det[order] + np.array([4, -3, 4, -3])             # each moved a little
        pred_labels = [dsol["labels"][i] for i in order]
        pred_labels[0] = "circle" if pred_labels[0] != "circle" else "square"  # one wrong label
        pred_det = np.vstack([pred_det, [[5, 5, 30, 30]]])              # one object that is not there
        pred_labels.append("triangle")
        det_text = conv.write_boxes(pred_det, pred_labels, dsize)
        det = score("detection", det_text, dsol, image_size=dsize, convention=CONVENTION)
        pd.DataFrame([det.parts]).style.format(precision=3)
        """),
        code("""
        # The cost matrix the reward builds, from the parsed prediction (rows) and the ground truth (columns).
        iou = boxes.iou_matrix(det.prediction.boxes, gt_det)
        differ = np.array([[p != g for g in dsol["labels"]] for p in det.prediction.labels])
        cost = (1 - iou) + 0.5 * differ
        hung = matching.hungarian(cost, keep=iou >= 0.5)

        fig, axes = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 1.3]})
        axes[0].imshow(viz.draw(det_record["image"], "detection", dsol, det.prediction, det.matches,
                                caption=f"paper total {det.total:.3f}"))
        axes[0].axis("off")
        axes[0].set_title("Hungarian matches (yellow) with their IoU", fontsize=9)
        viz.plot_cost_matrix(cost, hung, title="cost (1 - IoU) + 0.5·[labels differ]; matched pairs outlined",
                             ax=axes[1])
        plt.show()
        """),
        code("""
        # Check: the pairs outlined above are the reward's pairs, and its F1 / answer follow from them by hand.
        assert hung.pairs == [(m.pred, m.gt) for m in det.matches]
        n, m_gt, m = len(det.prediction.boxes), len(gt_det), len(hung)
        f1 = 2 * m / (n + m_gt)
        loc = float(np.mean([iou[r, c] for r, c in hung.pairs]))
        cls = float(np.mean([not differ[r, c] for r, c in hung.pairs]))
        penalty = 0.5 * ((n - m) / n + (m_gt - m) / m_gt)
        print(f"m={m}, F1={f1:.3f}, loc={loc:.3f}, cls={cls:.3f}, penalty={penalty:.3f} "
              f"-> answer {f1 + loc + cls - penalty:.3f}")
        assert abs(f1 - det.parts["f1"]) < 1e-9
        assert abs(f1 + loc + cls - penalty - det.parts["answer"]) < 1e-9
        """),
        md("""
        ### Why bipartite matching, not greedy matching

        A greedy matcher takes the single best pair, removes its row and column, and repeats
        (`workbench.matching.greedy`). On well-separated objects it finds the same pairs. On **crowded** scenes it
        can lock in one good pair and leave the rest badly matched. Two overlapping people, and two answers:

        - **answer X** found both people, each box a little off;
        - **answer Y** found one person exactly and put its second box on empty ground.

        X is the better answer. The Hungarian assignment gives X two true positives ($F_1 = 1$) and Y one
        ($F_1 = 0.5$): the reward ranks them correctly, and GRPO pushes toward X. The greedy matcher first pairs
        X's first box with the person it overlaps most, which leaves X's second box with the other person at IoU
        < 0.5: X drops to one true positive, the same $F_1$ as Y, and the group loses the signal that X is better.
        """),
        code("""
        crowd = Image.new("RGB", (200, 250), (236, 239, 241))
        crowd_gt = {"boxes": [[40, 50, 120, 170], [80, 66, 160, 186]], "labels": ["person", "person"]}
        answers = {
            "X: both found, a little off": np.array([[58, 60, 138, 180], [18, 44, 98, 164]], float),
            "Y: one exact, one on nothing": np.array([[40, 50, 120, 170], [150, 200, 195, 240]], float),
        }
        rows, panels, heat = [], [], {}
        for name, pred in answers.items():
            b = score("detection", conv.write_boxes(pred, ["person", "person"], crowd.size), crowd_gt,
                      image_size=crowd.size, convention=CONVENTION)
            iou = boxes.iou_matrix(b.prediction.boxes, crowd_gt["boxes"])
            for matcher in (matching.hungarian, matching.greedy):
                mt = matcher(1 - iou, keep=iou >= 0.5)
                f1 = 2 * len(mt) / (len(pred) + len(crowd_gt["boxes"]))
                rows.append({"answer": name, "matcher": matcher.__name__, "true positives": len(mt), "F1": f1,
                             "reward's F1": b.parts["f1"]})
                heat[name, matcher.__name__] = (iou, mt)
                links = [Match(r, c, iou=float(iou[r, c])) for r, c in mt.pairs]
                panels.append((viz.draw(crowd, "detection", crowd_gt, b.prediction, links,
                                        caption=f"{matcher.__name__}: {len(mt)} TP, F1 {f1:.2f}"),
                               f"{name[:1]} · {matcher.__name__}"))
        show([p for p, _ in panels], [t for _, t in panels], width=3)
        crowd_table = pd.DataFrame(rows).set_index(["answer", "matcher"])
        crowd_table.style.format(precision=3)
        """),
        code("""
        x = "X: both found, a little off"
        fig, axes = plt.subplots(1, 2, figsize=(8, 3))
        for ax, name in zip(axes, ("hungarian", "greedy")):
            iou, mt = heat[x, name]
            viz.plot_cost_matrix(1 - iou, mt, title=f"answer X, {name}: cost 1 - IoU", ax=ax)
        plt.show()
        """),
        code("""
        # Check: the reward uses the Hungarian assignment (its F1 is the Hungarian row), and greedy loses X's signal.
        y = "Y: one exact, one on nothing"
        for name in (x, y):
            assert crowd_table.loc[(name, "hungarian"), "F1"] == crowd_table.loc[(name, "hungarian"), "reward's F1"]
        assert crowd_table.loc[(x, "hungarian"), "F1"] > crowd_table.loc[(y, "hungarian"), "F1"]
        assert crowd_table.loc[(x, "greedy"), "F1"] == crowd_table.loc[(y, "greedy"), "F1"]
        """),
        # ---------------------------------------------------------------------------------------------------------
        md("""
        ## 7 · `paper` vs `pr1_released`, side by side

        Two presets exist everywhere in the workbench (library, notebooks, app, TRL bridge):
        `paper` is what the paper describes, with its edge cases defined; `pr1_released` is what the released
        code (linkangheng/PR1) computes, quirks included, so released numbers can be reproduced and the
        differences seen:

        | | `paper` | `pr1_released` |
        |---|---|---|
        | format | ±1 from the parser | grounding: mis-escaped pattern, ≈ always 1; counting: a gate needing `<\\|im_end\\|>` (or the end of the text) after the boxes; OCR: none; detection: 0.25 × valid share |
        | grounding | IoU, inverted boxes sorted | IoU² in the 0–1000 frame; inverted box scores 0 |
        | counting | ratio × distance term; 0 true objects and 0 predicted gives 1 | same formula behind the gate; 0 true objects always 0 |
        | OCR | edit similarity; both empty gives 1 | edit similarity (earlier MMR1 code); empty gives 0 |
        | detection | Hungarian on (1 − IoU) + 0.5·[label], TP at IoU ≥ 0.5, $F_1$ + loc + cls − penalty | DETR cost 5·L1 − p(class) − 2·GIoU (raw pixels, so nearly nearest-box), TP at IoU > 0.5, $0.25\\,v + 0.75\\,F_1$ + cls + loc, no penalty |

        The cases use each task's paper model family (Qwen2-VL writing for grounding and counting, Qwen2.5-VL JSON
        for detection), because that is what the released code reads.
        """),
        code("""
        q2 = conventions.get("qwen2_vl")
        gx1, gy1, gx2, gy2 = np.rint(q2.from_pixels(box_px, size)).astype(int)
        half = box_px + [0.33 * w, 0, 0.33 * w, 0]
        count_text = q2.write_boxes(gt_boxes, [sol["label"]] * len(gt_boxes), csize)
        q25 = conventions.get("qwen2_5_vl")
        det_json = q25.write_boxes(gt_det, dsol["labels"], dsize)
        det_json_fp = q25.write_boxes(np.vstack([gt_det, [[5, 5, 30, 30]]]), dsol["labels"] + ["circle"], dsize)
        cases = [  # (case, task, completion, solution, image size, convention)
            ("grounding: exact box", "grounding", q2.write_box(box_px, size, phrase), record["solution"], size, "qwen2_vl"),
            ("grounding: box a third off", "grounding", q2.write_box(half, size, phrase), record["solution"], size, "qwen2_vl"),
            ("grounding: inverted corners", "grounding",
             f"<|object_ref_start|>{phrase}<|object_ref_end|><|box_start|>({gx2},{gy2}),({gx1},{gy1})<|box_end|>",
             record["solution"], size, "qwen2_vl"),
            ("grounding: prose", "grounding", "It is on the left.", record["solution"], size, "qwen2_vl"),
            ("counting: exact, with <|im_end|>", "counting", count_text + "<|im_end|>", sol, csize, "qwen2_vl"),
            ("counting: exact, then prose", "counting", count_text + " That is all.", sol, csize, "qwen2_vl"),
            ("counting: nothing to count, '0'", "counting", "0", {"points": [], "label": "stars"}, csize, "qwen2_vl"),
            ("ocr: exact", "ocr", truth, ocr_record["solution"], (150, 150), "qwen2_vl"),
            ("ocr: empty text, empty answer", "ocr", "", {"text": ""}, (150, 150), "qwen2_vl"),
            ("detection: exact (JSON)", "detection", det_json, dsol, dsize, "qwen2_5_vl"),
            ("detection: exact + one extra", "detection", det_json_fp, dsol, dsize, "qwen2_5_vl"),
        ]
        rows = []
        for case, task, text, solution, isize, convention in cases:
            row = {"case": case}
            for preset in ("paper", "pr1_released"):
                b = score(task, text, solution, image_size=isize, convention=convention, preset=preset)
                row[f"{preset} format"], row[f"{preset} answer"], row[f"{preset} total"] = (
                    b.parts["format"], b.parts["answer"], b.total)
                row[f"{preset} range"] = reward_range(task, preset)
            rows.append(row)
        presets_table = pd.DataFrame(rows).set_index("case")
        (presets_table.style.format(precision=3, subset=[c for c in presets_table if "range" not in c])
         .format_index(escape="html").background_gradient(subset=["paper total", "pr1_released total"],
                                                         cmap="RdYlGn", axis=None))
        """),
        code("""
        ax = presets_table[["paper total", "pr1_released total"]].iloc[::-1].plot.barh(figsize=(7, 5))
        ax.set_xlabel("total reward")
        ax.set_title("the same completions under the two presets")
        plt.show()
        """),
        code("""
        # Check: the displayed differences are the documented ones.
        t = presets_table
        assert abs(t.loc["grounding: box a third off", "pr1_released answer"]
                   - t.loc["grounding: box a third off", "paper answer"] ** 2) < 1e-9  # IoU vs IoU²
        assert t.loc["grounding: inverted corners", "pr1_released answer"] == 0.0 < t.loc["grounding: inverted corners", "paper answer"]
        assert t.loc["counting: exact, then prose", "pr1_released total"] == 0.0  # the released gate
        assert t.loc["ocr: empty text, empty answer", "paper answer"] == 1.0
        assert t.loc["ocr: empty text, empty answer", "pr1_released total"] == 0.0
        fp = "detection: exact + one extra"
        assert t.loc[fp, "paper answer"] < t.loc["detection: exact (JSON)", "paper answer"]  # the missing penalty
        """),
        # ---------------------------------------------------------------------------------------------------------
        md("""
        ## What to try next

        - Set `MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"` (or any local checkpoint): every example answer is rewritten
          in that family's frame, and the rewards do not change — that is what converting in one place buys.
        - Write your own completions into section 2 (a truncated JSON list, a box in 0–1 fractions, a
          `<think>` block without `<answer>`) and read the parser's notes.
        - Move one box of answer X in section 6 until greedy and Hungarian agree again: how crowded must a scene be
          before the matcher matters?
        - Change the weights: `score(..., weights={"format": 0.5, "answer": 1.0})`, and see how the reward range
          (`reward_range`) moves.
        - Next notebook: `02_rollouts_and_advantages` samples 8 answers from the policy, scores them with these
          rewards and turns the scores into group-relative advantages.
        """),
    ]


# ======================================================================================================================
# 02 - rollouts and advantages
# ======================================================================================================================


def nb02() -> list:
    return [
        md(f"""
        # 02 · Rollouts and advantages

        **What this notebook teaches.** GRPO needs no value network: for each image it samples a *group* of $G$
        answers from the current policy, scores every answer with the rule-based reward of notebook 01, and uses
        each answer's reward **relative to its own group** as its advantage. {PAPER} §3 writes it, following
        DeepSeekMath's GRPO, as

        $$A_i = \\frac{{r_i - \\operatorname{{mean}}(r_1, \\dots, r_G)}}{{\\operatorname{{std}}(r_1, \\dots, r_G)}},$$

        with $G = 8$ answers per image sampled at temperature 1.0 (its training setup, §4.3). Here you load the policy, sample 8
        rollouts for a few records, look at them drawn against the ground truth, build the reward table, recompute
        the advantages by hand next to `grpo.group_advantages`, see what temperature does to the spread of
        rewards, and meet the group with zero variance that teaches nothing.
        """),
        code(MODEL_CELL),
        setup("""
        import matplotlib.pyplot as plt
        import numpy as np
        import pandas as pd
        import torch
        from transformers.utils.logging import disable_progress_bar

        from workbench import grpo, models, viz
        from workbench.data import synthetic
        from workbench.train_config import TASK_MAX_TOKENS

        disable_progress_bar()  # transformers' weight-loading bar
        if MODEL is None:  # the tiny model's matrices are too small to gain from threads; on a shared CPU they only wait
            torch.set_num_threads(1)
        policy = models.load_policy(MODEL)
        n_params = sum(p.numel() for p in policy.model.parameters())
        print(f"{policy.name}: {n_params / 1e6:.2f} M parameters on {policy.device}; "
              f"writes coordinates as {policy.convention!r}")
        """),
        md("""
        ## 1 · Sample a group of 8 answers per record

        One ShapesWorld record per task. `grpo.rollout` repeats each prompt $G$ times and samples all $B \\cdot G$
        completions in one batched `generate` call, record-major: row $k$ is sample $k \\bmod G$ of record
        $\\lfloor k / G \\rfloor$. It keeps what the later steps need: token ids and masks, and the log-probability
        of each sampled token under the policy that sampled it ($\\pi_{\\theta_\\text{old}}$, notebook 03).
        """),
        code("""
        G = 8
        records = [synthetic.generate(task, 1, seed=3)[0] for task in ("counting", "grounding", "ocr", "detection")]
        MAX_NEW_TOKENS = max(TASK_MAX_TOKENS.values())
        rollouts = grpo.rollout(policy, records, num_generations=G, temperature=1.0, max_new_tokens=MAX_NEW_TOKENS,
                                seed=0)
        pd.DataFrame({
            "tensor": ["prompt_ids", "completion_ids", "completion_mask", "logprobs"],
            "shape": [tuple(rollouts.prompt_ids.shape), tuple(rollouts.completion_ids.shape),
                      tuple(rollouts.completion_mask.shape), tuple(rollouts.logprobs.shape)],
            "meaning": ["[B·G, P] the prompt (image tokens included), left-padded",
                        "[B·G, C] the sampled answer, right-padded after its end token",
                        "[B·G, C] 1 on answer tokens up to and including the end token",
                        "[B·G, C] log π_old of each sampled token"],
        })
        """),
        md("""
        ## 2 · Score them: the reward table

        `grpo.score` calls `workbench.rewards.score` on every completion, in original-image pixels, and returns a
        `RewardTable`: one row per completion, one column per reward part (parts a task does not have are empty).
        """),
        code("""
        table = grpo.score(rollouts, preset="paper")
        advantages, metrics = grpo.group_advantages(table)
        frame = table.to_pandas()
        frame["advantage"] = advantages.numpy()
        shown = frame[["record", "sample", "task", "text", "format", "answer", "total", "advantage"]]
        (shown.style.format(precision=3, escape="html")
         .background_gradient(subset=["total"], cmap="RdYlGn")
         .background_gradient(subset=["advantage"], cmap="RdBu", vmin=-2, vmax=2)
         .set_properties(subset=["text"], **{"max-width": "420px", "text-align": "left", "font-size": "85%"}))
        """),
        md("The same 32 answers drawn against the ground truth (green), one row per record: "
           "reward $r$ and advantage $A$ under each picture."),
        code("""
        for i, record in enumerate(records):
            pictures, titles = [], []
            for k in range(i * G, (i + 1) * G):
                b = table.breakdowns[k]
                pictures.append(viz.draw(record["image"], record["task"], record["solution"],
                                         b.prediction if b else None, b.matches if b else (),
                                         caption=f"r={table.total[k]:.2f} A={advantages[k]:+.2f}", size=224))
                titles.append(f"{record['task']} · sample {k % G}")
            show(pictures, titles, width=2.2)
        """),
        md("""
        ## 3 · Group mean, std and advantages, by hand

        Each record's 8 rewards are compared only with each other. The library follows TRL's `GRPOTrainer` (and
        is tested against it): the standard deviation is the sample one (Bessel-corrected, like `torch.std`) and
        $\\varepsilon = 10^{-4}$ is added to it, so a group whose rewards are all equal gets
        advantages of exactly 0 instead of a division by zero.
        """),
        code("""
        rewards = frame["total"].to_numpy().reshape(-1, G)                 # [B, G]
        mean = rewards.mean(axis=1, keepdims=True)                          # [B, 1]
        std = rewards.std(axis=1, ddof=1, keepdims=True)                    # [B, 1], sample std
        by_hand = (rewards - mean) / (std + 1e-4)                           # [B, G]
        pd.DataFrame({"task": [r["task"] for r in records], "mean reward": mean[:, 0], "std": std[:, 0],
                      "min": rewards.min(1), "max": rewards.max(1),
                      "advantages (by hand)": [np.round(a, 2).tolist() for a in by_hand]})
        """),
        code("""
        # Check: the hand-computed advantages are the library's.
        assert np.allclose(by_hand.ravel(), advantages.numpy(), atol=1e-3)  # float32 vs float64
        assert np.allclose(by_hand.sum(axis=1), 0, atol=1e-4)  # zero-mean within every group
        """),
        code("""
        fig, axes = plt.subplots(2, 2, figsize=(12, 6))
        for i, ax in enumerate(axes.ravel()):
            viz.plot_group(rewards[i], by_hand[i], title=f"{records[i]['task']}: group of {G}", ax=ax)
        plt.show()
        """),
        md("""
        The division by the std is a choice. Dr. GRPO (Liu et al., 2025) drops it (`scale="none"`): dividing by
        a small std blows up tiny reward differences, so nearly-solved and hopeless images get as much weight as
        informative ones. TRL also offers one std for the whole batch (`scale="batch"`). The paper uses the
        group std.
        """),
        code("""
        pd.DataFrame({scale: grpo.group_advantages(table, scale=scale)[0].numpy()
                      for scale in ("group", "batch", "none")}, index=frame["task"] + " · " + frame["sample"].astype(str)
                     ).T.style.format(precision=2).background_gradient(cmap="RdBu", vmin=-2, vmax=2, axis=None)
        """),
        md("""
        ## 4 · What temperature does to the spread

        The policy samples from $\\mathrm{softmax}(\\text{logits} / T)$. At $T \\to 0$ every sample is the greedy
        answer: the group agrees with itself and there is nothing to compare. Higher $T$ gives more varied answers,
        so rewards spread and advantages carry signal — but too high and answers stop being well-formed. The paper
        samples at $T = 1.0$.
        """),
        code("""
        probe = synthetic.generate("counting", 2, seed=11)
        temperatures = [0.0, 0.5, 1.0, 1.5]
        rows, spread = [], {}
        for T in temperatures:
            ro = grpo.rollout(policy, probe, num_generations=G, temperature=T,
                              max_new_tokens=TASK_MAX_TOKENS["counting"], seed=0)
            tb = grpo.score(ro)
            _, m = grpo.group_advantages(tb)
            grouped = tb.grouped()                                          # [B, G]
            spread[T] = grouped.numpy().ravel()
            rows.append({"temperature": T, "mean reward": m["reward_mean"],
                         "mean within-group std": grouped.std(dim=1).mean().item(),
                         "groups with zero std": m["frac_reward_zero_std"],
                         "distinct answers per group": np.mean([len(set(ro.texts[i * G:(i + 1) * G]))
                                                                for i in range(len(probe))]),
                         "well-formed": np.mean([b is not None and b.format_ok for b in tb.breakdowns])})
        temperature_table = pd.DataFrame(rows).set_index("temperature")
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.boxplot([spread[T] for T in temperatures])
        ax.set_xticks(range(1, len(temperatures) + 1), [str(T) for T in temperatures])
        ax.set_xlabel("temperature")
        ax.set_ylabel("reward")
        ax.set_title(f"rewards of {len(probe)} groups × {G} samples")
        plt.show()
        temperature_table.style.format(precision=3)
        """),
        md("""
        ## 5 · A group with zero variance gives no signal

        If all $G$ rewards are equal — every answer right, every answer wrong, or (as here, at $T = 0$) the same
        answer 8 times — then $r_i - \\operatorname{mean}(r) = 0$ for every $i$: all advantages are 0, the
        policy-gradient term of the loss vanishes for the whole group, and only the KL term acts. (In float32 the
        mean of 8 equal numbers can miss them by one unit in the last place; the $\\varepsilon$ in the denominator
        keeps the resulting advantages around $10^{-3}$ instead of letting them blow up to ±1 — TRL computes the
        same.) Such groups cost
        a full generation and teach nothing; `metrics["frac_reward_zero_std"]` counts them in every training log.
        The paper's observation that RL helps most where *perceptual perplexity* is high (§5) is the same effect
        seen from the data side: images the model always gets right, or never, give no group contrast. DAPO's
        dynamic sampling drops such groups and samples new ones.
        """),
        code("""
        flat = grpo.rollout(policy, probe[:1], num_generations=G, temperature=0.0,
                            max_new_tokens=TASK_MAX_TOKENS["counting"])
        flat_table = grpo.score(flat)
        flat_adv, flat_metrics = grpo.group_advantages(flat_table)
        print(f"{len(set(flat.texts))} distinct answer(s) among {G}: {flat.texts[0]!r}")
        print("rewards:   ", np.round(flat_table.total, 3))
        print("advantages:", flat_adv.numpy())
        """),
        code("""
        # Check: identical answers -> equal rewards -> advantages 0 (up to float32 round-off), while the groups with
        # spread in section 3 had advantages of order 1.
        assert len(set(flat.texts)) == 1 and len(set(flat_table.total)) == 1
        assert flat_adv.abs().max() < 1e-2 < advantages.abs().max()
        """),
        md("""
        ## What to try next

        - Raise $G$ to 16: the group mean and std get less noisy, and fewer groups have zero variance.
        - Score the same rollouts with `preset="pr1_released"` and compare the advantages: a constant format reward
          shifts every reward in a group equally and so cancels out of $A$; IoU² changes the *order* of nothing
          but the *spacing* of everything.
        - Try `format_mode="gate"` in `grpo.score`, or `weights={"format": 0.5}`, and watch which samples change
          sign.
        - Next notebook: `03_one_grpo_step` turns these advantages into a loss, takes one optimiser step, and
          checks that the high-advantage answers became more likely.
        """),
    ]


# ======================================================================================================================
# 03 - one GRPO step
# ======================================================================================================================


def nb03() -> list:
    return [
        md(f"""
        # 03 · One GRPO step

        **What this notebook teaches.** How advantages become a parameter update. {PAPER} §3 optimises the GRPO
        objective (DeepSeekMath's), per token $t$ of answer $o_i$:

        $$\\mathcal{{J}}(\\theta) = \\frac{{1}}{{G}}\\sum_{{i=1}}^{{G}} \\frac{{1}}{{|o_i|}} \\sum_{{t=1}}^{{|o_i|}}
        \\Big[\\min\\big(\\rho_{{i,t}} A_i,\\ \\operatorname{{clip}}(\\rho_{{i,t}}, 1-\\varepsilon, 1+\\varepsilon)\\, A_i\\big)
        - \\beta\\, \\mathbb{{D}}_\\text{{KL}}\\big[\\pi_\\theta \\,\\|\\, \\pi_\\text{{ref}}\\big]\\Big],
        \\qquad \\rho_{{i,t}} = \\frac{{\\pi_\\theta(o_{{i,t}} \\mid q, o_{{i,<t}})}}{{\\pi_{{\\theta_\\text{{old}}}}(o_{{i,t}} \\mid q, o_{{i,<t}})}}$$

        with $\\beta = 0.04$ (the paper's setting, §4.3) and $\\varepsilon = 0.2$ (GRPO's default; the paper does
        not state it). You will compute, for real rollouts: the token
        log-probabilities under the current, old and reference policies; the ratio and its clipping; the k3 KL
        estimate; the loss under each of TRL's loss types; then take one optimiser step and check that the
        answers with high advantage became more likely.
        """),
        code(MODEL_CELL),
        setup("""
        import copy

        import matplotlib.pyplot as plt
        import numpy as np
        import pandas as pd
        import torch
        from transformers.utils.logging import disable_progress_bar

        from workbench import grpo, models, viz
        from workbench.data import synthetic
        from workbench.train_config import TASK_MAX_TOKENS

        disable_progress_bar()  # transformers' weight-loading bar
        if MODEL is None:  # the tiny model's matrices are too small to gain from threads; on a shared CPU they only wait
            torch.set_num_threads(1)
        torch.manual_seed(0)
        policy = models.load_policy(MODEL)
        # π_ref: a frozen copy of the starting policy (a LoRA policy could use its base model instead).
        reference = copy.deepcopy(policy.model).eval().requires_grad_(False)
        # One step must be visible: larger than the paper's 1e-6 (which suits a 2B model over many steps).
        LEARNING_RATE = 1e-4 if MODEL is None else 1e-5
        print(f"{policy.name} on {policy.device}, dtype {policy.model.dtype}")
        """),
        code("""
        G = 8
        records = synthetic.generate("counting", 2, seed=5)
        rollouts = grpo.rollout(policy, records, num_generations=G, temperature=1.0,
                                max_new_tokens=TASK_MAX_TOKENS["counting"], seed=0)
        table = grpo.score(rollouts)
        advantages, _ = grpo.group_advantages(table)
        mask = rollouts.completion_mask                                     # [B·G, C]
        show([viz.draw(r["image"], r["task"], r["solution"], caption=r["question"][:40]) for r in records],
             [f"record {i}" for i in range(len(records))])
        pd.DataFrame({"record": rollouts.record_index, "text": rollouts.texts, "tokens": rollouts.lengths,
                      "reward": table.total, "advantage": advantages.numpy()}).style.format(
            precision=3, escape="html").background_gradient(subset=["advantage"], cmap="RdBu", vmin=-2, vmax=2)
        """),
        md("""
        ## 1 · Token log-probabilities: current, old, reference

        `grpo.token_logprobs` runs one forward pass over `[prompt ; completion]` and reads off
        $\\log \\pi(o_{i,t} \\mid q, o_{i,<t})$ at every completion position: a `[B·G, C]` tensor, 0 on padding.
        Three policies appear in the objective:

        - $\\pi_\\theta$ — the one being trained (with gradient);
        - $\\pi_{\\theta_\\text{old}}$ — the one that sampled the answers; `rollout` recorded its log-probs while
          sampling (`rollouts.logprobs`). With one update per batch (the paper's setting, TRL's
          `num_iterations=1`) it *is* $\\pi_\\theta$ at the moment of the update, so $\\rho = 1$;
        - $\\pi_\\text{ref}$ — the frozen starting policy the KL term holds us near.

        Before any update all three agree.
        """),
        code("""
        with torch.no_grad():
            logp = grpo.token_logprobs(policy, rollouts)                    # [B·G, C] π_θ
            ref_logp = grpo.token_logprobs(policy, rollouts, model=reference)  # [B·G, C] π_ref
        old_logp = rollouts.logprobs                                        # [B·G, C] π_old, from sampling
        k = int(advantages.argmax())
        ids = rollouts.completion_ids[k][mask[k].bool()]
        pd.DataFrame({"token": [policy.tokenizer.decode([t]) for t in ids.tolist()],
                      "log π_θ": logp[k][mask[k].bool()].numpy(), "log π_old": old_logp[k][mask[k].bool()].numpy(),
                      "log π_ref": ref_logp[k][mask[k].bool()].numpy()}
                     ).style.format(precision=4, escape="html").set_caption(f"rollout {k} (highest advantage)")
        """),
        code("""
        # Check: the sampling pass and a fresh forward pass give the same log-probs, and the reference starts equal
        # to the policy (fp32: to round-off; bf16 on a GPU rounds each token's log-prob more coarsely).
        gap = ((logp - old_logp) * mask).abs()
        print(f"|log π_θ - log π_old| over answer tokens: max {gap.max():.2e}, mean {gap.sum() / mask.sum():.2e}")
        if policy.model.dtype == torch.float32:
            assert gap.max() < 1e-3 and torch.allclose(logp, ref_logp, atol=1e-5)
        else:
            assert gap.sum() / mask.sum() < 0.05 and torch.allclose(logp, ref_logp, atol=0.05)
        """),
        md("""
        ## 2 · The ratio and its clipping

        PPO's clipped surrogate (used unchanged by GRPO) lets a token's probability ratio $\\rho$ move only within
        $[1-\\varepsilon, 1+\\varepsilon]$ in the direction the advantage wants: for $A > 0$ the objective stops
        growing once $\\rho > 1 + \\varepsilon$, for $A < 0$ once $\\rho < 1 - \\varepsilon$. Past those points the
        gradient is zero, so one batch cannot push the policy far. Below, the per-token objective
        $\\min(\\rho A, \\operatorname{clip}(\\rho)A)$ computed by `grpo.grpo_loss` on single tokens.
        """),
        code("""
        rhos = torch.linspace(0.4, 1.6, 121)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3))
        for ax, A in zip(axes, (1.0, -1.0)):
            objective = [-grpo.grpo_loss(torch.log(r).view(1, 1), torch.zeros(1, 1), None, torch.tensor([A]),
                                         torch.ones(1, 1), beta=0.0)[0].item() for r in rhos]
            ax.plot(rhos, rhos * A, ls="--", color="grey", label="ρ·A (unclipped)")
            ax.plot(rhos, objective, lw=2, label="min(ρA, clip(ρ)A)")
            ax.axvspan(0.8, 1.2, color="#ffd600", alpha=0.2, label="[1-ε, 1+ε]")
            ax.set_title(f"A = {A:+.0f}")
            ax.set_xlabel("ρ = π_θ / π_old")
            ax.legend(fontsize=8)
        plt.show()
        """),
        md("""
        ## 3 · The KL term: the k3 estimator

        The KL divergence to the reference is estimated per token from the sampled token alone (Schulman's "k3",
        as in DeepSeekMath and TRL), with $x = \\log\\pi_\\text{ref} - \\log\\pi_\\theta$:

        $$\\mathbb{D}_\\text{KL} \\approx e^{x} - x - 1 \\;\\ge\\; 0,$$

        unbiased, always non-negative, and quadratic near 0. The paper uses $\\beta = 0.04$; TRL's default is
        $\\beta = 0$ (no reference model at all).
        """),
        code("""
        xs = torch.linspace(-2, 2, 81)  # x = log π_ref - log π_θ
        k3 = [grpo.grpo_loss(-x.view(1, 1), None, torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1),
                             beta=1.0)[1]["kl"] for x in xs]
        assert np.allclose(k3, (torch.exp(xs) - xs - 1).numpy(), atol=1e-5)  # the formula above, by hand
        plt.figure(figsize=(5, 3))
        plt.plot(xs, k3, label="k3 = eˣ - x - 1")
        plt.plot(xs, xs ** 2 / 2, ls="--", color="grey", label="x²/2")
        plt.xlabel("x = log π_ref − log π_θ")
        plt.legend()
        plt.show()
        """),
        md("""
        ## 4 · The loss, per loss type

        The per-token losses $L_{i,t} = -\\min(\\rho A_i, \\operatorname{clip}(\\rho)A_i) + \\beta\\,\\mathrm{KL}_{i,t}$
        are averaged in one of four ways (TRL's `loss_type`; `grpo` is the paper's formula above):

        | loss type | aggregation | effect |
        |---|---|---|
        | `grpo` | mean over answers of each answer's token mean | every answer weighs the same, whatever its length |
        | `bnpo` | token mean over the batch | long answers weigh more |
        | `dr_grpo` | token sum / (answers × max length) | Dr. GRPO: no length normalisation bias |
        | `dapo` | token sum / tokens in the whole generation batch | DAPO; equals `bnpo` without gradient accumulation |

        Right now $\\rho = 1$ and the KL is 0, so $L_{i,t} = -A_i$. With `grpo` the loss is then
        $-\\operatorname{mean}_i A_i \\approx 0$ (advantages are zero-mean in each group) — yet its **gradient** is
        not zero: $\\nabla \\rho = \\nabla \\log \\pi_\\theta$, so the gradient is $-\\frac{1}{G}\\sum_i \\frac{A_i}{|o_i|}
        \\sum_t \\nabla \\log \\pi_\\theta(o_{i,t})$, the policy gradient. The loss value is not the thing to watch.
        """),
        code("""
        lengths = mask.sum(1).float()                                       # |o_i|
        A = advantages
        by_hand = {"grpo": (-A).mean(), "bnpo": (-A * lengths).sum() / lengths.sum(),
                   "dr_grpo": (-A * lengths).sum() / (len(A) * rollouts.max_new_tokens),
                   "dapo": (-A * lengths).sum() / lengths.sum()}
        rows = []
        for loss_type in grpo.LOSS_TYPES:
            policy.model.zero_grad()
            logp_grad = grpo.token_logprobs(policy, rollouts)               # with gradient
            loss, stats = grpo.grpo_loss(logp_grad, None, ref_logp, advantages, mask, beta=0.04,
                                         loss_type=loss_type, max_completion_length=rollouts.max_new_tokens)
            loss.backward()
            grad_norm = torch.sqrt(sum((p.grad ** 2).sum() for p in policy.model.parameters() if p.grad is not None))
            rows.append({"loss type": loss_type, "loss": loss.item(), "by hand": by_hand[loss_type].item(),
                         "gradient norm": grad_norm.item(), "kl": stats["kl"], "ratio mean": stats["ratio_mean"]})
        policy.model.zero_grad()
        loss_table = pd.DataFrame(rows).set_index("loss type")
        loss_table.style.format(precision=5)
        """),
        code("""
        # Check: each displayed loss is the aggregation written in the table above.
        assert np.allclose(loss_table["loss"], loss_table["by hand"], atol=1e-5)
        assert (loss_table["gradient norm"] > 0).all()
        """),
        md("""
        ## 5 · One optimiser step

        `grpo.grpo_step` strings it together — rollout (here: the rollouts above, passed in), score, advantages,
        reference log-probs, loss, backward, gradient clipping, optimiser step — and returns the metrics a
        training log records. The optimiser is AdamW, as in `GRPOLoop` and TRL.
        """),
        code("""
        optimizer = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=LEARNING_RATE)
        result, step_metrics = grpo.grpo_step(policy, records, optimizer, ref_model=reference, rollouts=rollouts,
                                              beta=0.04, epsilon_low=0.2, loss_type="grpo")
        assert torch.allclose(result.advantages, advantages)  # same rollouts, same rewards, same advantages
        pd.Series({k: v for k, v in step_metrics.items() if isinstance(v, float)}).to_frame("grpo_step metrics").style.format("{:.4g}")
        """),
        md("""
        ## 6 · Did the good answers become more likely?

        Score the same answers again under the updated policy. For each answer,
        $\\Delta\\log\\pi(o_i) = \\sum_t \\log\\pi_{\\theta'}(o_{i,t}) - \\log\\pi_\\theta(o_{i,t})$: positive means the
        answer became more likely. GRPO's promise is that this change follows the sign of the advantage.
        """),
        code("""
        with torch.no_grad():
            new_logp = grpo.token_logprobs(policy, rollouts)                # [B·G, C] π_θ' after the step
        delta = ((new_logp - logp) * mask).sum(1)                           # [B·G] Δ log π(o_i)
        fig, ax = plt.subplots(figsize=(6, 4))
        for i in range(len(records)):
            rows_i = slice(i * G, (i + 1) * G)
            ax.scatter(advantages[rows_i], delta[rows_i], label=f"record {i}", s=40)
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("advantage A_i")
        ax.set_ylabel("Δ log π(o_i) after one step")
        ax.legend()
        plt.show()
        correlation = np.corrcoef(advantages.numpy(), delta.numpy())[0, 1]
        print(f"correlation between advantage and change in log-probability: {correlation:+.3f}")
        """),
        md("""
        Now the three policies differ: against the pre-step policy (which sampled the answers) the ratio is no
        longer 1, some tokens fall outside the clip range, and the KL to the reference is positive. This is what a
        second update on the same rollouts (`num_iterations` μ > 1) would see.
        """),
        code("""
        loss, after = grpo.grpo_loss(new_logp, logp, ref_logp, advantages, mask, beta=0.04, epsilon_low=0.2)
        ratio = torch.exp(new_logp - logp)[mask.bool()]
        plt.figure(figsize=(6, 3))
        plt.hist(ratio.numpy(), bins=50, color="#1e88e5")
        plt.axvspan(0.8, 1.2, color="#ffd600", alpha=0.2, label="[1-ε, 1+ε]")
        plt.xlabel("ρ = π_θ' / π_old per token")
        plt.legend()
        plt.show()
        diff = (ref_logp - new_logp)
        kl_by_hand = ((torch.exp(diff) - diff - 1) * mask).sum() / mask.sum()
        pd.Series(after).to_frame("after one step").style.format("{:.4g}")
        """),
        code("""
        # Check: high-advantage answers became more likely, and the displayed KL is the k3 mean by hand.
        assert correlation > 0
        assert abs(kl_by_hand.item() - after["kl"]) < 1e-6 and after["kl"] > 0
        """),
        md("""
        ## What to try next

        - Repeat the step with `loss_type="bnpo"` or `"dr_grpo"` and compare the scatter plot: which answers move
          more when long answers weigh more?
        - Set `beta=0.0` (TRL's default): the reference model is no longer needed — what changes after one step?
        - Pass `num_iterations=4` to `grpo_step`: the same rollouts are reused for 4 updates and the clipping
          starts to bite; look at `clip_ratio/region_mean` in the metrics.
        - Try a 10× larger learning rate and watch the ratio histogram leave the clip band.
        - Next notebook: `04_train` runs this step in a loop (`GRPOLoop`) and measures what the policy learned.
        """),
    ]


# ======================================================================================================================
# 04 - training
# ======================================================================================================================


def nb04() -> list:
    return [
        md(f"""
        # 04 · Training from a notebook cell

        **What this notebook teaches.** Notebook 03 took one GRPO step by hand; training is that step in a loop.
        `GRPOLoop` (`workbench/trainer.py`) is a small readable loop over the same `workbench.grpo` functions:
        sample records, `grpo_step`, log, checkpoint. Here you launch it on ShapesWorld counting — the task where
        {PAPER} reports its largest gain (PixMo-Count +17.9 points) — and watch the reward curve while it
        trains; measure the held-out counting accuracy before and after; run the same recipe on TRL's
        `GRPOTrainer`, the engine for the paper's multi-GPU runs; and resume from a checkpoint.

        The default run is the real one — the engine's learning benchmark, 10 CPU-minutes of GRPO with the tiny
        model — and shows learning. The test suite sets `WORKBENCH_TEST_RUN=1` for a short run that only checks
        the machinery.
        """),
        code(MODEL_CELL),
        setup("""
        import os
        import shutil
        import subprocess
        import sys
        import time
        import warnings
        from pathlib import Path

        import matplotlib.pyplot as plt
        import numpy as np
        import pandas as pd
        import torch
        from IPython.display import display
        from tqdm.auto import tqdm
        from transformers.utils.logging import disable_progress_bar

        from workbench import grpo, models, trl_bridge, viz
        from workbench.data import synthetic
        from workbench.train_config import EVAL_SEED, TrainConfig
        from workbench.trainer import GRPOLoop

        disable_progress_bar()  # transformers' weight-loading bar
        warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecation notes inside TRL
        TEST_RUN = os.environ.get("WORKBENCH_TEST_RUN") == "1"  # the test suite's short run
        if MODEL is None:  # the tiny model's matrices are too small to gain from threads; on a shared CPU they only wait
            torch.set_num_threads(1)
        TASK = "counting"
        REPO = models.ASSETS.parent
        OUTPUT_DIR = Path(os.environ.get("WORKBENCH_RUNS_DIR", REPO / "runs")) / "notebook-04"
        shutil.rmtree(OUTPUT_DIR, ignore_errors=True)  # a fresh run: no checkpoints of an earlier one
        print(f"{'short test run' if TEST_RUN else 'full run'}; writing to {OUTPUT_DIR}")
        """),
        md("""
        ## 1 · The run's configuration

        `TrainConfig` holds every knob; its defaults are the paper's recipe (G = 8, temperature 1.0, β = 0.04,
        learning rate 1e-6, the `grpo` loss, one epoch; §4.3). `TrainConfig.tiny()` is the recipe measured to
        teach the shipped tiny model within minutes on a CPU: a larger learning rate (a tiny model is not a 2B
        one) and 4 records × 8 answers per step. A real checkpoint gets the paper's learning rate.
        """),
        code("""
        common = dict(output_dir=str(OUTPUT_DIR), progress=False, save_final=False, tensorboard=True)
        if MODEL is None:
            # The engine's learning benchmark (bench/learning.py): the tiny recipe for 10 minutes of GRPO steps.
            cfg = TrainConfig.tiny(TASK, threads=1, max_steps=10_000, max_minutes=10, **common)
        else:
            cfg = TrainConfig(task=TASK, model=MODEL, per_device_batch=4, max_completion_length=256, max_steps=60,
                              checkpoint_every=20, **common)
        if TEST_RUN:  # machinery only: 2 small steps, a checkpoint after each
            cfg = cfg.replace(max_steps=2, max_minutes=None, checkpoint_every=1, per_device_batch=2, num_generations=4,
                              dataset={**cfg.dataset, "limit": 32})
        EVAL_RECORDS = 8 if TEST_RUN else 200  # held-out counting scenes, as in the engine's learning benchmark
        held_out = synthetic.generate(TASK, EVAL_RECORDS, seed=EVAL_SEED)
        pd.Series({k: str(v) for k, v in cfg.to_dict().items()
                   if k in ("model", "task", "num_generations", "temperature", "beta", "learning_rate", "epsilon",
                            "loss_type", "per_device_batch", "max_completion_length", "max_steps", "max_minutes",
                            "checkpoint_every", "preset")}).to_frame("value")
        """),
        md("""
        ## 2 · Before training

        The benchmark metric for counting is exact-match accuracy of the count (PixMo-Count's), on greedy answers to
        held-out scenes the model never trained on; `GRPOLoop.evaluate` also reports the share of well-formed
        answers and the mean reward. A few of the held-out scenes are drawn as the model answers them now.
        """),
        code("""
        loop = GRPOLoop(cfg, eval_records=held_out)
        policy = loop.policy
        showcase = held_out[:4] if TEST_RUN else held_out[:6]
        before = loop.evaluate()
        before_answers = grpo.score(grpo.rollout(policy, showcase, num_generations=1, temperature=0,
                                                 max_new_tokens=cfg.max_completion_length)).breakdowns
        pd.Series(before).drop("step").to_frame("before training")
        """),
        md("""
        ## 3 · Train, watching the reward

        Each `loop.train(max_steps=...)` call runs GRPO steps up to that step; calling it one step at a time lets
        the cell redraw the curves as the run goes (and stop at the config's `max_minutes`). Every step's row (reward mean, KL, loss, clip fractions, share
        of zero-variance groups, …) is also written to `metrics.jsonl` and TensorBoard in the output directory.
        """),
        code("""
        fig, axes = plt.subplots(1, 3, figsize=(13, 3))
        handle = display(fig, display_id=True)
        plt.close(fig)
        bar = tqdm(total=None if cfg.max_minutes else loop.total_steps, initial=loop.step, desc="GRPO steps")
        started = time.perf_counter()
        while loop.step < loop.total_steps and (cfg.max_minutes is None
                                                 or time.perf_counter() - started < 60 * cfg.max_minutes):
            loop.train(max_steps=loop.step + 1)
            row = loop.history[-1]
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.4f}")
            if loop.step % 10 == 0 or loop.step == loop.total_steps:
                for ax, key in zip(axes, ("reward_mean", "kl", "frac_reward_zero_std")):
                    ax.clear()
                    viz.plot_history(loop.history, keys=(key,), ax=ax)
                handle.update(fig)
        bar.close()
        history = loop.history.to_pandas()
        for ax, key in zip(axes, ("reward_mean", "kl", "frac_reward_zero_std")):
            ax.clear()
            viz.plot_history(loop.history, keys=(key,), ax=ax)
        smooth = history.set_index("step")["reward_mean"].rolling(10, min_periods=1).mean()
        axes[0].plot(smooth.index, smooth.values, lw=2.5, label="10-step mean")
        axes[0].legend(fontsize=8)
        handle.update(fig)
        history[["step", "reward_mean", "reward_std", "kl", "loss", "grad_norm", "frac_reward_zero_std",
                 "completion_length", "step_time"]].tail(10)
        """),
        md("""
        ## 4 · After training: the before/after table

        The same held-out scenes, the same greedy decoding. The paper's gain on PixMo-Count is +17.9 points;
        the engine's learning benchmark (`bench/learning.py`) asks the tiny model for +15 points on ShapesWorld
        counting within 10 CPU-minutes.
        """),
        code("""
        after = loop.evaluate()
        results = pd.DataFrame({"before": pd.Series(before), "after": pd.Series(after)}).drop("step")
        results["change"] = results["after"] - results["before"]
        display(results.style.format(precision=3).background_gradient(subset=["change"], cmap="RdYlGn",
                                                                        vmin=-0.2, vmax=0.2))
        # Greedy answers on every held-out scene after training (in evaluate's batches); the first few are drawn
        # next to their "before".
        batch = cfg.eval_batch_size
        after_answers = [b for i in range(0, len(held_out), batch) for b in grpo.score(grpo.rollout(
            policy, held_out[i:i + batch], num_generations=1, temperature=0, max_new_tokens=cfg.max_completion_length
        )).breakdowns]
        for when, answers in (("before", before_answers), ("after", after_answers)):
            show([viz.draw(r["image"], r["task"], r["solution"], b.prediction, b.matches, size=224,
                           caption=f"{when}: {b.prediction.count} (true {len(r['solution']['points'])})")
                  for r, b in zip(showcase, answers)], [f"held-out {i} · {when}" for i in range(len(showcase))],
                 width=2.6)
        """),
        code("""
        # Check: the accuracy in the table is the share of held-out scenes whose greedy answer has the true count.
        counts = [b.prediction.count for b in after_answers]
        by_hand = np.mean([c == len(r["solution"]["points"]) for c, r in zip(counts, held_out)])
        print(f"exact-count accuracy by hand: {by_hand:.3f}; table: {after['eval/counting/accuracy']:.3f}")
        assert abs(by_hand - after["eval/counting/accuracy"]) < 1e-9
        if not TEST_RUN:
            assert results.loc["eval/counting/accuracy", "change"] > 0, "the full run should improve counting"
        """),
        md("""
        ## 5 · The same run on TRL's `GRPOTrainer`

        For the paper's recipes (2B–3B models, several GPUs, DeepSpeed, vLLM generation) the workbench hands the
        same `TrainConfig`, the same records and the same reward functions to TRL's `GRPOTrainer`
        (`workbench/trl_bridge.py`). The two engines agree numerically on the same inputs (tests/test_grpo.py,
        tests/test_trl_bridge.py). A few steps on this machine, from the same starting model:
        """),
        code("""
        trl_cfg = cfg.replace(output_dir=str(OUTPUT_DIR / "trl"), max_steps=1 if TEST_RUN else 5, checkpoint_every=0,
                              report_to="none", log_completions=False)
        trl_history = trl_bridge.train_trl(trl_cfg, train_records=loop.train_records).to_pandas()
        trl_history.dropna(subset=["reward"]).filter(regex="^(step|reward|rewards/|kl|loss|completions/mean_length)")
        """),
        md("""
        On a machine with several GPUs the paper's recipes run under `accelerate` (DDP, or DeepSpeed ZeRO-2/3
        with `configs/accelerate/zero2.yaml` / `zero3.yaml`). The cell prints the command and runs it only where
        at least two GPUs exist; each recipe in `configs/` names its dataset, which must be downloaded first
        (`configs/README.md`).
        """),
        code("""
        n_gpus = torch.cuda.device_count()
        recipe = REPO / "configs" / "counting_qwen2vl2b_pixmo.yaml"
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(REPO / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", str(max(n_gpus, 2)),
                   "-m", "workbench.train", "--engine", "trl", "--config", str(recipe)]
        print("accelerate launch " + " ".join(command[3:]))
        if n_gpus >= 2:
            subprocess.run(command, cwd=REPO, check=True)
        else:
            print(f"{n_gpus} GPU(s) here: not launched.")
        """),
        md("""
        ## 6 · Resuming from a checkpoint

        Every `checkpoint_every` steps the loop writes a checkpoint (trainable weights, optimiser, scheduler, step,
        data position and every RNG state) atomically. `GRPOLoop(cfg, resume=True)` continues from the newest;
        `load_checkpoint` restores any of them. Restored from the *older* checkpoint, the loop replays the next step
        exactly: the same records, the same sampled answers (compared by a digest of their text), the same reward.
        """),
        code("""
        checkpoints = sorted(OUTPUT_DIR.glob("checkpoint-*"))
        print("checkpoints:", [c.name for c in checkpoints])
        resumed = GRPOLoop(cfg, eval_records=held_out)
        resumed.load_checkpoint(checkpoints[0])
        start = resumed.step
        resumed.train(max_steps=start + 1)
        original = history.set_index("step").loc[start + 1]
        replay = resumed.history[-1]
        pd.DataFrame({"original run": original[["rollout_digest", "reward_mean", "loss"]],
                      "resumed run": pd.Series(replay)[["rollout_digest", "reward_mean", "loss"]]})
        """),
        code("""
        # Check: the resumed step reproduces the original one.
        assert replay["step"] == start + 1
        assert replay["rollout_digest"] == original["rollout_digest"]
        assert abs(replay["reward_mean"] - original["reward_mean"]) < 1e-6
        """),
        md("""
        ## What to try next

        - Train another task: `TASK = "grounding"` and watch `eval/grounding/acc@0.5`; or `"detection"`.
        - Set `preset="pr1_released"` in the config and compare the curves (notebook 01 shows where the rewards
          differ).
        - Try `loss_type="dr_grpo"` with `scale_rewards="none"` (Dr. GRPO), or `beta=0.0`, and compare the KL curve.
        - Open the run in TensorBoard: `tensorboard --logdir runs/notebook-04`.
        - With a GPU, set `MODEL = "Qwen/Qwen2-VL-2B-Instruct"`: every cell runs unchanged; with several GPUs use
          the `accelerate` command above and the recipes in `configs/`.
        - From a terminal: `python -m workbench.train --task counting` (`make train`), or
          `python app.py` to inspect a trained checkpoint's rollouts.
        """),
    ]


NOTEBOOKS = {
    "01_rewards_and_matching.ipynb": nb01,
    "02_rollouts_and_advantages.ipynb": nb02,
    "03_one_grpo_step.ipynb": nb03,
    "04_train.ipynb": nb04,
}


def build(name: str):
    """The notebook ``name`` as an ``nbformat`` node, with stable cell ids and no outputs."""
    nb = new_notebook(cells=NOTEBOOKS[name]())
    stem = name.split("_")[0]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"nb{stem}-{i:02d}"
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return nb


def render(name: str) -> str:
    return nbformat.writes(build(name)) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("names", nargs="*", help="notebook file names (default: all)")
    args = parser.parse_args(argv)
    stale = []
    for name in args.names or NOTEBOOKS:
        path = HERE / name
        text = render(name)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print("out of date (run python notebooks/build_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
