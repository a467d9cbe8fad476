"""The rollout debugger: 8 rollouts per image from a live model, drawn against the ground truth, with every reward
and advantage; rescoring under another preset without sampling again; one GRPO step and its effect.

    python app.py                                   # the shipped tiny Qwen2-VL, on this machine's device
    python app.py --model Qwen/Qwen2-VL-2B-Instruct # any Qwen2-VL / Qwen2.5-VL / Qwen3-VL id or local path

Layout and wiring only; what each button does lives in ``workbench.app_logic`` (and, under it, ``workbench.grpo``,
``workbench.rewards`` and ``workbench.viz``). Every event has an ``api_name`` so scripts and tests can drive it with
``gradio_client``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import traceback

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from workbench import app_inputs as inputs  # noqa: E402
from workbench import app_logic as logic  # noqa: E402
from workbench.rewards import PRESETS  # noqa: E402

SAMPLING_DEFAULTS = {"num_generations": 8, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 64, "seed": 0}


def _user_error(err: Exception) -> gr.Error:
    """Input problems read as they are; anything else is shown with its type, and logged with its traceback."""
    if isinstance(err, (inputs.InputError, gr.Error)):
        return err if isinstance(err, gr.Error) else gr.Error(str(err), title="Input problem")
    traceback.print_exc()
    return gr.Error(f"{type(err).__name__}: {err}", title="Failed")


def build_demo(bench: logic.Workbench) -> gr.Blocks:
    """The Gradio Blocks app around one loaded :class:`workbench.app_logic.Workbench`."""
    default_lr = 1e-4 if bench.is_tiny else 1e-6  # tiny: visible in one step, not destructive

    # -- handlers --------------------------------------------------------------------------------------------
    def on_task(task):
        choices = inputs.list_examples(task)
        return gr.update(choices=choices, value=choices[0] if choices else None)

    def on_source(source):
        return (gr.update(visible=source == "example"), gr.update(visible=source == "ShapesWorld scene"),
                gr.update(visible=source == "upload"))

    def on_load(task, source, example, scene_seed, upload):
        if source == "upload" and not upload:  # switched to upload, nothing dropped yet: nothing to complain about
            return None, gr.update(), gr.update(), "Drop an image on the upload box, then edit its ground truth."
        try:
            record, notes = inputs.source_record(task, source, example, scene_seed, upload, min_side=bench.min_side)
        except Exception as err:  # noqa: BLE001 - every failure becomes a message; the app stays up
            raise _user_error(err) from None
        w, h = record["image"].size
        note = f"{source}: {w}×{h} px" + ("; " + "; ".join(notes) if notes else "")
        if source == "upload":
            note += " — edit the ground truth JSON below (original pixels) to match the image"
        preview = logic.viz.draw(record["image"], task, record["solution"], caption="ground truth")
        return preview, inputs.dump_solution(record["solution"]), record["question"], note

    def on_prompt(task, gt_json, source, example, scene_seed, upload):
        try:
            record, _ = inputs.source_record(task, source, example, scene_seed, upload, min_side=bench.min_side)
            solution = inputs.parse_ground_truth(task, gt_json, record["image"].size)
        except Exception as err:  # noqa: BLE001
            raise _user_error(err) from None
        return inputs.default_question(task, solution)

    def on_generate(task, source, example, scene_seed, upload, gt_json, prompt, num_generations, temperature,
                    top_p, max_new_tokens, seed, preset, w_format, w_answer, format_mode, scale,
                    progress=gr.Progress()):
        timings: dict = {}
        try:
            progress(0.0, desc="reading the input")
            record, notes = inputs.build_record(task, source, example, scene_seed, upload, gt_json, prompt,
                                               min_side=bench.min_side)
            settings = logic.reward_settings(preset, w_format, w_answer, format_mode, scale)
            g = int(num_generations)
            if not 1 <= g <= 64:
                raise inputs.InputError(f"the number of rollouts must be between 1 and 64, got {g}")
            progress(0.1, desc=f"sampling {g} rollouts")
            with logic.timed(timings, "sample"):
                rollouts = bench.sample(record, num_generations=g, temperature=float(temperature),
                                        top_p=float(top_p), max_new_tokens=int(max_new_tokens),
                                        seed=None if seed is None or int(seed) < 0 else int(seed))
            progress(0.7, desc="scoring")
            with logic.timed(timings, "score"):
                table, advantages = logic.score_group(rollouts, settings)
            group = logic.Group(record, rollouts, table, advantages, settings, notes, timings)
            progress(0.8, desc="drawing")
            outputs = _render(group, timings)
        except Exception as err:  # noqa: BLE001 - generation errors are shown, not swallowed
            raise _user_error(err) from None
        return (*outputs, "", logic.empty_frame("diff"), group, bench.info_markdown())

    def on_rescore(group, preset, w_format, w_answer, format_mode, scale):
        if group is None:
            return (gr.update(),) * 4 + ("Nothing to rescore yet: generate rollouts first.", gr.update(), group)
        try:
            settings = logic.reward_settings(preset, w_format, w_answer, format_mode, scale)
            timings: dict = {}
            with logic.timed(timings, "rescore"):
                table, advantages = logic.score_group(group.rollouts, settings)
            new = logic.Group(group.record, group.rollouts, table, advantages, settings, group.notes, timings)
            outputs = _render(new, timings)
            diff_md, diff = logic.rescore_diff(group, new)
        except Exception as err:  # noqa: BLE001
            raise _user_error(err) from None
        return (*outputs, diff_md, diff, new)

    def on_step(group, lr, beta, epsilon, loss_type, progress=gr.Progress()):
        if group is None:
            raise gr.Error("Generate rollouts first: the GRPO step trains on the group shown.", title="No rollouts")
        try:
            progress(0.1, desc="GRPO step: log-probs, reference, loss, backward, optimizer")
            report = bench.step(group, lr=float(lr), beta=float(beta), epsilon=float(epsilon), loss_type=loss_type)
            head, frame, fig = logic.step_report(report)
        except Exception as err:  # noqa: BLE001
            raise _user_error(err) from None
        return head, frame, fig, bench.info_markdown()

    def on_export(group):
        if group is None:
            raise gr.Error("Generate rollouts first: there is nothing to export yet.", title="No rollouts")
        fd, path = tempfile.mkstemp(prefix=f"rollouts-{group.record['task']}-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(logic.export_group(group), f, indent=1, allow_nan=True)
        return path

    def on_reset():
        delta = bench.reset()
        return f"Weights restored to the initial checkpoint (‖θ − θ₀‖ = {delta:.3g}).", bench.info_markdown()

    def on_info():
        return bench.info()

    def on_plot(group):
        return None if group is None else logic.group_plot(group)

    def _render(group, timings):
        with logic.timed(timings, "draw"):
            items = logic.gallery(group)
        return items, logic.reward_frame(group), logic.warnings_markdown(group), logic.summary_markdown(group)

    # -- layout ----------------------------------------------------------------------------------------------
    first_examples = inputs.list_examples("grounding")
    # Every Generate writes G pictures to Gradio's cache: drop files older than an hour, checking every 30 minutes.
    with gr.Blocks(title="Perception-R1 Workbench — rollout debugger", delete_cache=(1800, 3600)) as demo:
        gr.Markdown("# Perception-R1 Workbench · rollout debugger\nSample G answers for one image, see each drawn "
                    "against the ground truth (green) with its prediction (red) and matches (yellow), every reward "
                    "part and advantage; rescore under another preset; apply one GRPO step and see what it did.")
        model_md = gr.Markdown(bench.info_markdown(), elem_id="model-info")
        group_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=340):
                with gr.Group():
                    task = gr.Dropdown(list(inputs.TASK_NAMES), value="grounding", label="Task")
                    source = gr.Radio(list(inputs.SOURCES), value="example", label="Image")
                    example = gr.Dropdown(first_examples, value=first_examples[0] if first_examples else None,
                                          label="Bundled example", allow_custom_value=True)
                    scene_seed = gr.Number(0, precision=0, label="ShapesWorld seed", minimum=0, visible=False)
                    upload = gr.File(label="Upload an image", file_types=["image"], type="filepath", visible=False,
                                     height=120)
                preview = gr.Image(label="Input with ground truth", type="pil", interactive=False, height=220,
                                   elem_id="preview")
                input_note = gr.Markdown()
                gt_json = gr.Code(label="Ground truth (JSON, original pixels)", language="json", interactive=True,
                                  lines=3)
                prompt = gr.Textbox(label="Prompt (from the task template; editable)", lines=2)
                prompt_btn = gr.Button("Prompt from the template", size="sm")
                generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                with gr.Accordion("Sampling", open=True):
                    d = SAMPLING_DEFAULTS
                    num_generations = gr.Slider(1, 16, value=d["num_generations"], step=1, label="Rollouts G")
                    temperature = gr.Slider(0.0, 2.0, value=d["temperature"], step=0.05,
                                            label="Temperature (0 = greedy)")
                    top_p = gr.Slider(0.05, 1.0, value=d["top_p"], step=0.05, label="Top-p")
                    max_new_tokens = gr.Slider(4, 512, value=d["max_new_tokens"], step=4, label="Max new tokens")
                    seed = gr.Number(d["seed"], precision=0, label="Sampling seed (−1 = random)")
                with gr.Accordion("Reward", open=True):
                    preset = gr.Radio(list(PRESETS), value="paper", label="Preset")
                    with gr.Row():
                        w_format = gr.Number(1.0, label="Format weight")
                        w_answer = gr.Number(1.0, label="Answer weight")
                    format_mode = gr.Radio(list(logic.FORMAT_MODES), value="additive", label="Format reward")
                    scale = gr.Radio(list(logic.ADVANTAGE_SCALES), value="group",
                                     label="Advantage: divide by the std of (none = Dr. GRPO)")
                    rescore_btn = gr.Button("Rescore the same completions")
            with gr.Column(scale=3):
                summary = gr.Markdown(elem_id="summary")
                warnings_md = gr.Markdown(elem_id="warnings")
                gallery = gr.Gallery(label="Rollouts (ground truth green, prediction red)", columns=4, height="auto",
                                     format="png", object_fit="contain", elem_id="rollout-gallery")
                table = gr.Dataframe(label="Rewards per rollout", wrap=True, interactive=False, max_height=420,
                                     column_widths=logic.REWARD_COLUMN_WIDTHS, elem_id="reward-table")
                plot = gr.Plot(label="Rewards and advantages across the group")
                with gr.Row():
                    export_btn = gr.Button("Export this group (JSON: texts, parts, predictions, matches)",
                                           size="sm")
                    export_file = gr.File(label="Exported group", height=80)
                with gr.Accordion("What changed when rescoring", open=True):
                    diff_md = gr.Markdown()
                    diff_table = gr.Dataframe(logic.empty_frame("diff"), interactive=False, wrap=True,
                                              elem_id="rescore-diff")
                with gr.Accordion("One GRPO step on this group", open=True):
                    with gr.Row():
                        lr = gr.Number(default_lr, label="Learning rate (AdamW)")
                        beta = gr.Number(0.04, label="β (KL to the initial policy)")
                        epsilon = gr.Number(0.2, label="ε (clip)")
                        loss_type = gr.Dropdown(list(logic.LOSS_TYPES), value="grpo", label="Loss")
                    with gr.Row():
                        step_btn = gr.Button("Apply one GRPO step", variant="primary", elem_id="step-btn")
                        resample_btn = gr.Button("Resample with the updated policy")
                        reset_btn = gr.Button("Reset weights", variant="stop", elem_id="reset-btn")
                    step_md = gr.Markdown()
                    step_plot = gr.Plot(label="Δ log-probability of each completion vs its advantage")
                    step_table = gr.Dataframe(logic.empty_frame("step"), interactive=False, elem_id="step-table")

        # -- wiring ------------------------------------------------------------------------------------------
        source_inputs = [task, source, example, scene_seed, upload]
        load_outputs = [preview, gt_json, prompt, input_note]
        task.change(on_task, task, example, api_name="examples").then(
            on_load, source_inputs, load_outputs, api_name=False)
        source.change(on_source, source, [example, scene_seed, upload], api_name=False).then(
            on_load, source_inputs, load_outputs, api_name=False)
        for trigger in (example.change, scene_seed.input, upload.upload):
            trigger(on_load, source_inputs, load_outputs, api_name=False)
        load_event = gr.Button("Load", visible=False)  # the API entry for loading an input
        load_event.click(on_load, source_inputs, load_outputs, api_name="load_input")
        prompt_btn.click(on_prompt, [task, gt_json, source, example, scene_seed, upload], prompt,
                         api_name="prompt")
        demo.load(on_load, source_inputs, load_outputs, api_name=False)

        generate_inputs = [*source_inputs, gt_json, prompt, num_generations, temperature, top_p, max_new_tokens,
                           seed, preset, w_format, w_answer, format_mode, scale]
        shown = [gallery, table, warnings_md, summary]  # the plot follows in its own event (below)
        generate_outputs = [*shown, diff_md, diff_table, group_state, model_md]
        for button, name in ((generate_btn, "generate"), (resample_btn, "resample")):
            button.click(on_generate, generate_inputs, generate_outputs, api_name=name,
                         concurrency_id="model").success(on_plot, group_state, plot, api_name=f"{name}_plot")
        rescore_inputs = [group_state, preset, w_format, w_answer, format_mode, scale]
        rescore_outputs = [*shown, diff_md, diff_table, group_state]
        rescore_btn.click(on_rescore, rescore_inputs, rescore_outputs, api_name="rescore").success(
            on_plot, group_state, plot, api_name="group_plot")
        for control in (preset, format_mode, scale):
            control.change(on_rescore, rescore_inputs, rescore_outputs, api_name=False).success(
                on_plot, group_state, plot, api_name=False)
        for control in (w_format, w_answer):
            control.submit(on_rescore, rescore_inputs, rescore_outputs, api_name=False).success(
                on_plot, group_state, plot, api_name=False)
        step_btn.click(on_step, [group_state, lr, beta, epsilon, loss_type], [step_md, step_table, step_plot, model_md],
                       api_name="grpo_step", concurrency_id="model")
        reset_btn.click(on_reset, None, [step_md, model_md], api_name="reset", concurrency_id="model")
        export_btn.click(on_export, group_state, export_file, api_name="export")
        info_btn = gr.Button("info", visible=False)
        info_btn.click(on_info, None, gr.JSON(visible=False), api_name="model_info")
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="hub id or local path of a Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint "
                             "(default: the shipped tiny model in assets/)")
    parser.add_argument("--lora", default=None,
                        help="path of a saved LoRA adapter, or 'new' for a fresh adapter (the GRPO step then "
                             "trains only the adapter)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:1, ...")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes the app)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860, or the next free one)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    return parser.parse_args(argv)


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False, **kwargs):
    """Queue and launch ``demo`` with the app's limits (uploads up to 50 MB)."""
    demo.queue(default_concurrency_limit=1)
    return demo.launch(server_name=host, server_port=port, share=share, max_file_size="50mb", show_error=True,
                       **kwargs)


def free_port(host: str = "127.0.0.1") -> int:
    """A local port nothing listens on right now (for servers started by tests and benchmarks)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve(model: str | None = None, *, device: str = "auto", host: str = "127.0.0.1"):
    """(demo, url, workbench): load ``model``, build the app and serve it on a free port without blocking."""
    bench = logic.Workbench.load(model, device=device)
    demo = build_demo(bench)
    _, url, _ = launch(demo, host=host, port=free_port(host), prevent_thread_lock=True, quiet=True)
    return demo, url, bench


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f"loading {args.model or 'the shipped tiny model'} ...", flush=True)
    bench = logic.Workbench.load(args.model, lora=args.lora, device=args.device)
    print(bench.info_markdown().replace("**", ""), flush=True)
    launch(build_demo(bench), host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
