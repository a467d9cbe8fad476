"""Pictures: rollouts drawn against the ground truth (supervision annotators) and GRPO plots (matplotlib).

Colours are fixed so every picture in the app and the notebooks reads the same way: ground truth green,
prediction red, matched pairs linked in yellow with their IoU (boxes) or distance (points) written on the link.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from PIL import Image

with warnings.catch_warnings():  # supervision warns when it falls back from opencv to NumPy
    warnings.simplefilter("ignore")
    import supervision as sv

from workbench import boxes as bx

GT_COLOR = sv.Color.from_hex("#00c853")
PRED_COLOR = sv.Color.from_hex("#ff1744")
LINK_COLOR = sv.Color.from_hex("#ffd600")
TEXT_COLOR = sv.Color.WHITE
BANNER_COLOR = sv.Color.from_hex("#263238")


def draw(image: Image.Image, task: str, solution: dict, prediction=None, matches: Sequence = (), *,
         caption: str | None = None, size: int = 336) -> Image.Image:
    """Draw the ground truth and (optionally) one parsed prediction on ``image``.

    image:      the original image (any mode; drawn in RGB).
    solution:   canonical solution in original pixels (DESIGN.md): box / boxes+labels / points / text.
    prediction: a ``workbench.parsing.Prediction`` (boxes [N, 4], labels, points [K, 2] in original pixels, text).
    matches:    ``Match(pred, gt, iou, distance)`` pairs from the reward breakdown; linked on the picture.
    caption:    text for a banner under the image (e.g. reward and advantage).
    size:       the longer side is scaled to this many pixels so small images stay readable.
    """
    rgb = image.convert("RGB")
    scale = size / max(rgb.size)
    canvas = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.NEAREST)
    scene = np.ascontiguousarray(np.asarray(canvas)[:, :, ::-1])  # supervision draws on BGR arrays
    gt_boxes, gt_labels, gt_points = _solution_geometry(task, solution)
    pred_boxes, pred_labels, pred_points = _prediction_geometry(task, prediction)
    scene = _annotate_boxes(scene, gt_boxes * scale, gt_labels, GT_COLOR, sv.Position.BOTTOM_LEFT)
    scene = _annotate_points(scene, gt_points * scale, GT_COLOR, radius=6)
    scene = _annotate_boxes(scene, pred_boxes * scale, pred_labels, PRED_COLOR, sv.Position.TOP_LEFT)
    scene = _annotate_points(scene, pred_points * scale, PRED_COLOR, radius=4)
    scene = _annotate_links(scene, task, matches, (pred_boxes, pred_points), (gt_boxes, gt_points), scale)
    lines = []
    if task == "ocr":
        lines += [f"GT:   {solution.get('text', '')!r}"]
        if prediction is not None:
            lines += [f"pred: {prediction.text!r}"]
    if caption:
        lines.append(caption)
    out = Image.fromarray(np.ascontiguousarray(scene[:, :, ::-1]))
    return _with_banner(out, lines) if lines else out


def _solution_geometry(task: str, solution: dict):
    """Ground truth -> (boxes [N, 4], labels, points [K, 2]) in original pixels."""
    boxes = np.zeros((0, 4))
    labels: list = []
    points = np.zeros((0, 2))
    if task == "grounding" and solution.get("box") is not None:
        boxes = bx.as_boxes(solution["box"])
        labels = [None]
    elif task == "detection":
        boxes = bx.as_boxes(solution.get("boxes", []))
        labels = list(solution.get("labels", [None] * len(boxes)))
    elif task == "counting":
        points = bx.as_points(solution.get("points", []))
    return boxes, labels, points


def _prediction_geometry(task: str, prediction):
    """Parsed prediction -> (boxes, labels, points); counting shows box centres as the points it is scored on."""
    if prediction is None:
        return np.zeros((0, 4)), [], np.zeros((0, 2))
    boxes = bx.as_boxes(prediction.boxes)
    points = bx.as_points(prediction.points)
    labels = list(prediction.labels) if len(prediction.labels) == len(boxes) else [None] * len(boxes)
    if task == "counting" and len(boxes):
        points = np.concatenate([bx.centers(boxes), points])  # the counting reward's order: centres, then points
    if task == "ocr":
        return np.zeros((0, 4)), [], np.zeros((0, 2))
    return boxes, labels, points


def _annotate_boxes(scene: np.ndarray, boxes: np.ndarray, labels: list, color: sv.Color,
                    label_position: sv.Position) -> np.ndarray:
    boxes = bx.sort_corners(boxes) if len(boxes) else boxes
    keep = np.isfinite(boxes).all(axis=1) if len(boxes) else np.zeros(0, bool)
    if not keep.any():
        return scene
    detections = sv.Detections(xyxy=boxes[keep].astype(np.float32), class_id=np.zeros(int(keep.sum()), int))
    scene = sv.BoxAnnotator(color=color, thickness=2).annotate(scene, detections)
    names = [lab for lab, k in zip(labels, keep) if k]
    if any(names):
        scene = sv.LabelAnnotator(color=color, text_color=sv.Color.BLACK, text_scale=0.4, text_padding=2,
                                  text_position=label_position).annotate(
            scene, detections, labels=[str(n or "") for n in names])
    return scene


def _annotate_points(scene: np.ndarray, points: np.ndarray, color: sv.Color, radius: int) -> np.ndarray:
    points = points[np.isfinite(points).all(axis=1)] if len(points) else points
    if not len(points):
        return scene
    key_points = sv.KeyPoints(xy=points[None].astype(np.float32))
    return sv.VertexAnnotator(color=color, radius=radius).annotate(scene, key_points)


def _annotate_links(scene, task, matches, pred_geometry, gt_geometry, scale: float) -> np.ndarray:
    """A line from each matched prediction to its ground truth, labelled with IoU or distance."""
    pred_boxes, pred_points = pred_geometry
    gt_boxes, gt_points = gt_geometry
    if task == "counting":
        pred_anchor, gt_anchor = pred_points, gt_points
    else:
        pred_anchor, gt_anchor = bx.centers(pred_boxes), bx.centers(gt_boxes)
    for match in matches or ():
        if match.pred >= len(pred_anchor) or match.gt >= len(gt_anchor):
            continue
        start, end = pred_anchor[match.pred] * scale, gt_anchor[match.gt] * scale
        if not (np.isfinite(start).all() and np.isfinite(end).all()):
            continue
        a, b = sv.Point(*map(float, start)), sv.Point(*map(float, end))
        scene = sv.draw_line(scene, a, b, color=LINK_COLOR, thickness=2)
        value = f"{match.iou:.2f}" if match.iou is not None else (
            f"d={match.distance:.0f}" if match.distance is not None else "")
        if value:
            mid = sv.Point((a.x + b.x) / 2, (a.y + b.y) / 2)
            scene = sv.draw_text(scene, value, mid, text_color=sv.Color.BLACK, text_scale=0.4,
                                 background_color=LINK_COLOR, text_padding=2)
    return scene


def _with_banner(image: Image.Image, lines: list[str]) -> Image.Image:
    """Append a dark banner with one text line per entry under the picture."""
    line_height = 16
    banner = np.zeros((line_height * len(lines) + 6, image.width, 3), np.uint8)
    banner[:] = BANNER_COLOR.as_bgr()
    for i, line in enumerate(lines):
        banner = sv.draw_text(banner, line[:80], sv.Point(6 + 3.6 * min(len(line), 80), 11 + i * line_height),
                              text_color=TEXT_COLOR, text_scale=0.4, text_thickness=1)
    banner_rgb = Image.fromarray(np.ascontiguousarray(banner[:, :, ::-1]))
    out = Image.new("RGB", (image.width, image.height + banner_rgb.height))
    out.paste(image, (0, 0))
    out.paste(banner_rgb, (0, image.height))
    return out


# --------------------------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------------------------


def plot_group(totals: Sequence[float], advantages: Sequence[float], *, title: str = "", ax=None):
    """Rewards and advantages of one group of G rollouts; the group mean and ±1 std band are marked.

    totals, advantages: [G]. Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    r = np.asarray(totals, dtype=float)
    a = np.asarray(advantages, dtype=float)
    fig, axes = (ax.figure, (ax, ax.twinx())) if ax is not None else _two_axes(plt)
    x = np.arange(len(r))
    left, right = axes
    left.bar(x - 0.2, r, width=0.4, color="#1e88e5", label="reward")
    finite = r[np.isfinite(r)]
    if len(finite):
        # sample std (ddof=1), the one group_advantages divides by, so the band and the advantages agree
        mean, std = finite.mean(), (finite.std(ddof=1) if len(finite) > 1 else 0.0)
        left.axhline(mean, color="#1e88e5", ls="--", lw=1, label=f"mean {mean:.3f}")
        left.axhspan(mean - std, mean + std, color="#1e88e5", alpha=0.12, label=f"±std {std:.3f}")
    right.bar(x + 0.2, a, width=0.4, color="#e53935", label="advantage")
    right.axhline(0, color="#e53935", lw=0.8)
    left.set_xlabel("rollout")
    left.set_ylabel("reward", color="#1e88e5")
    right.set_ylabel("advantage", color="#e53935")
    left.set_xticks(x)
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles=handles, loc="upper left", fontsize=7, ncols=2)
    left.set_title(title or "rewards and advantages across the group")
    fig.tight_layout()
    return fig


def _two_axes(plt):
    fig, left = plt.subplots(figsize=(7, 3.2))
    return fig, (left, left.twinx())


def grid(images: Sequence[Image.Image], titles: Sequence[str] | None = None, *, width: float = 3.6):
    """Pictures side by side in one row (e.g. the G drawn rollouts of a group). Returns the Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(width * len(images), width * 1.25), squeeze=False)
    for ax, image, title in zip(axes[0], images, titles or [None] * len(images)):
        ax.imshow(image)
        ax.set_title(title or "", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_history(history: Sequence[dict], keys: Sequence[str] = ("reward_mean",), *, step_key: str = "step",
                 ax=None):
    """Training curves: one line per key in ``keys`` over ``step_key`` from a list of logged dicts."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.2))
    for key in keys:
        xs = [h[step_key] for h in history if key in h]
        ys = [h[key] for h in history if key in h]
        ax.plot(xs, ys, marker=".", label=key)
    ax.set_xlabel(step_key)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.figure.tight_layout()
    return ax.figure


def plot_cost_matrix(matrix, matching=None, *, row_label: str = "prediction", col_label: str = "ground truth",
                     title: str = "", ax=None):
    """Heat map of a cost (or IoU) matrix [N, M]; matched cells (``matching.pairs``) are outlined."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    m = np.asarray(matrix, dtype=float)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1 + 0.6 * max(m.shape[1], 2), 1 + 0.5 * max(m.shape[0], 2)))
    im = ax.imshow(m, cmap="viridis")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w", fontsize=7)
    for i, j in getattr(matching, "pairs", []) or []:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="#ff1744", lw=2))
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.046)
    ax.figure.tight_layout()
    return ax.figure
