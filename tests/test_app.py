"""The rollout debugger (app.py) driven through gradio_client against a live server on a free local port."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from PIL import Image  # noqa: E402

import app  # noqa: E402  (top-level app.py; pytest puts the repository root on sys.path)
from workbench import grpo  # noqa: E402
from workbench.rewards import score as reward_score  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assets" / "examples"
TASKS = ("grounding", "counting", "ocr", "detection")
G = 8
SAMPLING = dict(num_generations=G, temperature=1.0, top_p=1.0, max_new_tokens=48, seed=0)
REWARD = dict(preset="paper", w_format=1.0, w_answer=1.0, format_mode="additive", scale="group")


def start_app(model: str | None = None):
    """(demo, url, workbench): the app on a free local port, in this process."""
    return app.serve(model)


@pytest.fixture(scope="module")
def server():
    demo, url, bench = start_app(os.environ.get("WORKBENCH_APP_TEST_MODEL"))
    yield url, bench
    demo.close()


@pytest.fixture()
def client(server):
    """A fresh browser-like session (its own rollouts state) for each test."""
    return Client(server[0], verbose=False)


def load_input(client, task, source="example", example=None, seed=0, upload=None):
    example = example or f"{task}-0"
    preview, gt_json, prompt, note = client.predict(task, source, example, seed, upload, api_name="/load_input")
    return gt_json, prompt, note


def generate(client, task, gt_json, prompt, source="example", example=None, seed=0, upload=None, **overrides):
    s = {**SAMPLING, **REWARD, **overrides}
    return client.predict(task, source, example or f"{task}-0", seed, upload, gt_json, prompt,
                          s["num_generations"], s["temperature"], s["top_p"], s["max_new_tokens"], s["seed"],
                          s["preset"], s["w_format"], s["w_answer"], s["format_mode"], s["scale"],
                          api_name="/generate")


def rows(table: dict) -> list[dict]:
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def assert_table_matches_rewards(table, task, solution, image_size, convention, **score_kwargs):
    """Every row's parts/total equal workbench.rewards.score on the row's text; advantages equal
    grpo.group_advantages of those totals."""
    totals = []
    for row in rows(table):
        b = reward_score(task, row["completion"], solution, image_size=image_size, convention=convention,
                         **score_kwargs)
        totals.append(b.total)
        assert row["total"] == pytest.approx(b.total, abs=1e-4), row
        for name, value in b.parts.items():
            assert row[name] == pytest.approx(value, abs=1e-4), (name, row)
    adv, _ = grpo.group_advantages(totals, len(totals))
    assert [r["advantage"] for r in rows(table)] == pytest.approx(adv.tolist(), abs=1e-3)


def test_model_convention_and_device_shown(client, server):
    info = client.predict(api_name="/model_info")
    bench = server[1]
    assert info["model"] == bench.policy.name
    assert info["convention"] == bench.policy.convention == "qwen2_vl"
    assert info["device"] == str(bench.policy.device)
    assert info["grpo_steps"] == 0


@pytest.mark.parametrize("task", TASKS)
def test_each_task_gives_G_drawn_rollouts_and_the_reward_table(client, server, task):
    gt_json, prompt, _ = load_input(client, task)
    solution = json.loads(gt_json)
    assert prompt == json.loads((EXAMPLES / f"{task}-0.json").read_text())["question"]
    gallery, table, warnings, summary, *_ = generate(client, task, gt_json, prompt)
    assert len(gallery) == G
    for item in gallery:
        with Image.open(item["image"]) as im:
            assert im.width >= 300  # drawn at 336 px with a caption banner
        assert "R = " in item["caption"] and "A = " in item["caption"]
    assert len(table["data"]) == G
    assert {"completion", "parsed", "format", "answer", "total", "advantage"} <= set(table["headers"])
    if task in ("counting", "detection"):
        assert all(r["matches"].startswith("TP ") for r in rows(table))
    with Image.open(EXAMPLES / f"{task}-0.png") as im:
        size = im.size
    assert_table_matches_rewards(table, task, solution, size, server[1].policy.convention, preset="paper")
    plot = client.predict(api_name="/group_plot")  # the group's plot, drawn after the rollouts are shown
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image")
    exported = json.loads(Path(client.predict(api_name="/export")).read_text())
    assert [r["completion"] for r in exported["rollouts"]] == [r["completion"] for r in rows(table)]
    assert [r["total"] for r in exported["rollouts"]] == pytest.approx([r["total"] for r in rows(table)], abs=1e-4)
    assert exported["solution"] == solution and exported["image_size"] == list(size)
    assert warnings  # either the ✅ line or the reasons the group has no signal
    assert f"{G} rollouts" in summary


def test_scene_source_and_edited_ground_truth(client, server):
    gt_json, prompt, note = load_input(client, "grounding", source="ShapesWorld scene", seed=7)
    assert "ShapesWorld scene" in note
    edited = json.dumps({"box": [10, 10, 60, 60], "phrase": "red square"})
    gallery, table, *_ = generate(client, "grounding", edited, prompt, source="ShapesWorld scene", seed=7,
                                  num_generations=4)
    assert len(gallery) == 4 and len(table["data"]) == 4
    assert_table_matches_rewards(table, "grounding", json.loads(edited), (112, 112), "qwen2_vl")


def test_rescoring_switches_preset_without_sampling_again(client, server, monkeypatch):
    calls = []
    real_rollout = grpo.rollout
    monkeypatch.setattr(grpo, "rollout", lambda *a, **k: calls.append(1) or real_rollout(*a, **k))
    gt_json, prompt, _ = load_input(client, "counting")
    _, table, *_ = generate(client, "counting", gt_json, prompt)
    assert len(calls) == 1
    texts = [r["completion"] for r in rows(table)]
    solution, size = json.loads(gt_json), (112, 112)

    gallery, table2, warnings, summary, diff_md, diff = client.predict(
        "pr1_released", 1.0, 1.0, "additive", "group", api_name="/rescore")
    assert len(calls) == 1, "rescoring must not sample again"
    assert [r["completion"] for r in rows(table2)] == texts
    assert len(gallery) == G
    assert_table_matches_rewards(table2, "counting", solution, size, "qwen2_vl", preset="pr1_released")
    assert "paper → pr1_released" in diff_md and "without sampling" in diff_md
    assert [r["total after"] for r in rows(diff)] == pytest.approx([r["total"] for r in rows(table2)], abs=1e-4)
    assert [r["total before"] for r in rows(diff)] == pytest.approx([r["total"] for r in rows(table)], abs=1e-4)

    # format as a gate and other weights: still the same completions, still the library's numbers
    _, table3, *_, diff_md3, _ = client.predict("paper", 0.5, 2.0, "gate", "group", api_name="/rescore")
    assert len(calls) == 1
    assert_table_matches_rewards(table3, "counting", solution, size, "qwen2_vl", preset="paper",
                                 weights={"format": 0.5, "answer": 2.0}, format_mode="gate")
    assert "format_mode additive → gate" in diff_md3


def _group_with_signal(client):
    """Generate on ShapesWorld scenes until a group has reward variance (so the step has a gradient)."""
    for seed in range(8):
        for task in ("grounding", "ocr"):
            gt_json, prompt, _ = load_input(client, task, source="ShapesWorld scene", seed=seed)
            out = generate(client, task, gt_json, prompt, source="ShapesWorld scene", seed=seed, temperature=1.5)
            totals = [r["total"] for r in rows(out[1])]
            if np.ptp(totals) > 1e-6:
                return out
    pytest.fail("no ShapesWorld scene gave a group with reward variance in 8 seeds")


def test_grpo_step_changes_the_weights_and_reset_restores_them(client, server):
    bench = server[1]
    client.predict(api_name="/reset")
    _group_with_signal(client)
    initial = {n: t.clone() for n, t in bench.initial.items()}
    head, step_table, step_plot, model_md = client.predict(1e-4, 0.04, 0.2, "grpo", api_name="/grpo_step")
    assert "One GRPO step applied" in head
    changed = [n for n, p in bench.policy.model.named_parameters() if not torch.equal(p.detach().cpu(), initial[n])]
    assert changed, "one GRPO step must change the weights"
    info = client.predict(api_name="/model_info")
    assert info["grpo_steps"] == 1 and info["weight_delta"] > 0
    assert "after 1 GRPO step" in model_md
    step_rows = rows(step_table)
    assert len(step_rows) == G
    assert any(abs(r["Δ log π"]) > 0 for r in step_rows)
    for r in step_rows:
        assert r["Δ log π"] == pytest.approx(r["log π after"] - r["log π before"], abs=2e-3)

    message, model_md = client.predict(api_name="/reset")
    assert "restored" in message
    for n, p in bench.policy.model.named_parameters():
        assert torch.equal(p.detach().cpu(), initial[n]), n
    info = client.predict(api_name="/model_info")
    assert info["grpo_steps"] == 0 and info["weight_delta"] == 0.0


def test_grpo_step_before_any_rollouts_says_so(client):
    with pytest.raises(AppError, match="Generate rollouts first"):
        client.predict(1e-3, 0.04, 0.2, "grpo", api_name="/grpo_step")


def _image_file(path: Path, mode: str, size) -> str:
    colour = {"RGBA": (200, 30, 30, 128), "L": 128, "LA": (128, 200), "P": 3, "I;16": 3000}.get(mode, (20, 20, 20))
    Image.new(mode, size, colour).save(path)
    return str(path)


def _corrupt(d: Path) -> Path:
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return d / "corrupt.png"


def _truncated(d: Path) -> Path:
    Image.new("RGB", (200, 200), (1, 2, 3)).save(d / "full.png")
    (d / "cut.png").write_bytes((d / "full.png").read_bytes()[:60])
    return d / "cut.png"


BAD_UPLOADS = {
    "corrupt": (_corrupt, "could not read corrupt.png as an image"),
    "truncated": (_truncated, "could not read cut.png as an image"),
    "huge": (lambda d: _image_file(d / "huge.png", "L", (6000, 5000)), "30.0 megapixels"),
    "one_pixel": (lambda d: _image_file(d / "dot.png", "RGB", (1, 1)), "is 1×1 px"),
    "too_thin": (lambda d: _image_file(d / "thin.png", "RGB", (8000, 30)), "aspect ratio"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_uploads_give_a_message_and_the_app_stays_up(client, tmp_path, case):
    make, message = BAD_UPLOADS[case]
    path = make(tmp_path)
    with pytest.raises(AppError, match=message):
        client.predict("grounding", "upload", None, 0, handle_file(str(path)), api_name="/load_input")
    with pytest.raises(AppError, match=message):
        generate(client, "grounding", '{"box": [1, 1, 20, 20]}', "", source="upload", upload=handle_file(str(path)))
    gt_json, prompt, _ = load_input(client, "grounding")  # the next request still works
    gallery, *_ = generate(client, "grounding", gt_json, prompt, num_generations=2)
    assert len(gallery) == 2


BAD_GROUND_TRUTH = [
    ("grounding", '{"box": [10, 20, 30', "not valid JSON"),
    ("grounding", '{"box": [12, 40, 7]}', 'expected "box" to be a box'),
    ("grounding", '{"box": [50, 50, 10, 10]}', "empty or inverted"),
    ("grounding", '{"box": [0, 0, 500, 80]}', "outside the 112×112 image"),
    ("counting", '{"points": "three"}', '"points" must be a list'),
    ("detection", '{"boxes": [[1, 1, 20, 20]], "labels": ["a", "b"]}', "1 boxes but 2 labels"),
    ("detection", '[1, 2, 3]', "must be a JSON object"),
    ("ocr", "   ", "ground truth is empty"),
]


@pytest.mark.parametrize("task,gt,message", BAD_GROUND_TRUTH)
def test_wrong_ground_truth_json_gives_a_message(client, task, gt, message):
    _, prompt, _ = load_input(client, task)
    with pytest.raises(AppError, match=message):
        generate(client, task, gt, prompt)


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P", "I;16"])
def test_rgba_and_greyscale_uploads_are_converted(client, tmp_path, mode):
    path = _image_file(tmp_path / "odd.png", mode, (96, 64))
    gt_json, prompt, note = load_input(client, "grounding", source="upload", upload=handle_file(path))
    assert f"converted {mode} to RGB" in note and "96×64" in note
    assert json.loads(gt_json)["box"] == [24, 16, 72, 48]  # the placeholder, to be edited
    gallery, table, *_ = generate(client, "grounding", gt_json, prompt, source="upload", upload=handle_file(path),
                                  num_generations=2)
    assert len(gallery) == 2
    assert_table_matches_rewards(table, "grounding", json.loads(gt_json), (96, 64), "qwen2_vl")


def test_command_line_options():
    args = app.parse_args([])
    assert (args.model, args.lora, args.device, args.host, args.port, args.share) == (
        None, None, "auto", "127.0.0.1", None, False)
    args = app.parse_args(["--model", "Qwen/Qwen2-VL-2B-Instruct", "--lora", "new", "--device", "cuda",
                           "--host", "0.0.0.0", "--port", "7999", "--share"])
    assert (args.model, args.lora, args.device, args.host, args.port, args.share) == (
        "Qwen/Qwen2-VL-2B-Instruct", "new", "cuda", "0.0.0.0", 7999, True)


def test_python_app_py_serves_the_app(tmp_path):
    """`python app.py --port P` loads the shipped model and serves the API until stopped."""
    import subprocess
    import sys
    import time

    port = app.free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "MPLBACKEND": "Agg"}
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, info = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                info = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(api_name="/model_info")
                break
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(1.0)
        assert info is not None, (tmp_path / "app.log").read_text()[-2000:]
        assert info["model"] == "tiny-qwen2-vl" and info["convention"] == "qwen2_vl"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_lora_policy_trains_only_the_adapter_and_resets():
    """--lora new: the step moves only the adapter weights (reference = adapters disabled); reset restores them."""
    bench = app.logic.Workbench.load(lora="new")
    assert bench.initial and all("lora_" in name for name in bench.initial)
    record, _ = app.inputs.source_record("grounding", "ShapesWorld scene", None, 1, None)
    settings = app.logic.reward_settings("paper", 1.0, 1.0, "additive", "group")
    rollouts = bench.sample(record, num_generations=8, temperature=1.5, top_p=1.0, max_new_tokens=48, seed=1)
    table, advantages = app.logic.score_group(rollouts, settings)
    group = app.logic.Group(record, rollouts, table, advantages, settings)
    frozen = {n: p.detach().clone() for n, p in bench.policy.model.named_parameters() if not p.requires_grad}
    report = bench.step(group, lr=1e-3, beta=0.04, epsilon=0.2, loss_type="grpo")
    assert not report["skipped"]
    if advantages.abs().max() > 0:
        assert bench.weight_delta() > 0
    for n, p in bench.policy.model.named_parameters():
        if n in frozen:
            assert torch.equal(p.detach(), frozen[n]), n
    assert bench.reset() == 0.0


def _real_checkpoint() -> str | None:
    """A real Qwen-VL checkpoint available offline: $WORKBENCH_REAL_MODEL, or Qwen2-VL-2B in the HF cache."""
    path = os.environ.get("WORKBENCH_REAL_MODEL")
    if path:
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache("Qwen/Qwen2-VL-2B-Instruct", "config.json")
        return "Qwen/Qwen2-VL-2B-Instruct" if isinstance(found, str) else None
    except Exception:  # noqa: BLE001
        return None


@pytest.mark.gpu
@pytest.mark.slow
def test_real_checkpoint_on_gpu_through_the_same_code():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = _real_checkpoint()
    if model is None:
        pytest.skip("no real checkpoint offline: set WORKBENCH_REAL_MODEL or cache Qwen/Qwen2-VL-2B-Instruct")
    demo, url, bench = start_app(model)
    try:
        assert bench.policy.device.type == "cuda"
        c = Client(url, verbose=False)
        gt_json, prompt, _ = load_input(c, "grounding")
        gallery, table, *_ = generate(c, "grounding", gt_json, prompt, max_new_tokens=64)
        assert len(gallery) == G
        assert_table_matches_rewards(table, "grounding", json.loads(gt_json), (112, 112), bench.policy.convention)
        c.predict(1e-6, 0.04, 0.2, "grpo", api_name="/grpo_step")
        c.predict(api_name="/reset")
        assert c.predict(api_name="/model_info")["weight_delta"] == 0.0
    finally:
        demo.close()
