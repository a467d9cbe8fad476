"""load_policy, the image-only processor and the shipped tiny checkpoint."""

import json

import pytest
import torch

from workbench import models, tasks
from workbench.data import synthetic


@pytest.fixture(scope="module")
def policy():
    return models.load_policy()


def test_default_policy_is_the_tiny_qwen2_vl(policy, monkeypatch):
    from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    assert isinstance(policy.model, Qwen2VLForConditionalGeneration)
    assert isinstance(policy.processor, Qwen2VLProcessor)
    assert policy.convention == "qwen2_vl" and policy.name == "tiny-qwen2-vl"
    assert policy.device.type in ("cpu", "cuda")
    n = sum(p.numel() for p in policy.model.parameters())
    assert 1e6 < n < 1e7
    size = sum(f.stat().st_size for f in models.TINY_MODEL.glob("*.safetensors"))
    assert size < 40e6
    assert not list(models.TINY_MODEL.glob("*.bin"))


def test_offline_auto_classes_chat_template_and_sampling(monkeypatch):
    """The shipped checkpoint through transformers' Auto classes, offline, with 8 sampled answers."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModelForImageTextToText

    path = str(models.TINY_MODEL)
    assert AutoConfig.from_pretrained(path).model_type == "qwen2_vl"
    model = AutoModelForImageTextToText.from_pretrained(path, use_safetensors=True)
    processor = models.load_processor(path)
    record = synthetic.generate("grounding", 1, seed=11)[0]
    inputs = processor.apply_chat_template(tasks.messages(record), add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    text = processor.apply_chat_template(tasks.messages(record), add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                           "<|vision_start|><|image_pad|><|vision_end|>Output the bounding box")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    torch.manual_seed(0)
    out = model.generate(**inputs, do_sample=True, temperature=1.0, num_return_sequences=8, max_new_tokens=40)
    assert out.shape[0] == 8
    answers = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=False)
    assert any("<|box_start|>" in a for a in answers)


def test_save_load_gives_identical_greedy_outputs(policy, tmp_path):
    from workbench._pretrain_build import generation_inputs

    records = synthetic.generate("detection", 3, seed=12)
    inputs = generation_inputs(policy.processor, records)
    first = policy.model.generate(**inputs, do_sample=False, max_new_tokens=30)
    policy.model.save_pretrained(tmp_path)
    policy.processor.save_pretrained(tmp_path)
    again = models.load_policy(tmp_path)
    second = again.model.generate(**generation_inputs(again.processor, records), do_sample=False, max_new_tokens=30)
    assert torch.equal(first, second)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a local checkpoint directory"):
        models.load_policy(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="without config.json"):
        models.load_policy(str(tmp_path))


def test_non_vlm_config_is_a_clear_error(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=1).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'gpt2' model.*expected config.model_type in"):
        models.load_policy(str(tmp_path))


def test_lora_from_dict_trains_only_adapters():
    pol = models.load_policy(lora={"r": 4})
    trainable = [n for n, p in pol.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        models.load_policy(lora="/nonexistent/adapter")


def test_processor_helper_reads_the_image_only_processor():
    proc = models.load_processor(models.TINY_MODEL)
    assert proc.image_token_id == proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    cfg = json.loads((models.TINY_MODEL / "config.json").read_text())
    assert cfg["image_token_id"] == proc.image_token_id
    out = proc(text=["<|vision_start|><|image_pad|><|vision_end|>hi"], images=[synthetic.generate("ocr", 1)[0]["image"]],
               return_tensors="pt")
    assert int((out["input_ids"] == proc.image_token_id).sum()) == int(out["image_grid_thw"].prod() // 4)
