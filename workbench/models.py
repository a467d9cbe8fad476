"""Loading a policy: the shipped tiny Qwen2-VL or any Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint.

``load_policy()`` with no name loads the tiny model in ``assets/`` offline; any hub id or local path of a
supported family goes through the same transformers Auto classes, with the coordinate convention read from
``config.model_type``. LoRA adapters come from ``peft`` when asked.

Qwen2-VL's processor insists on a video processor, and every video processor needs torchvision. Where
torchvision is missing (CPU laptops here), :class:`ImageOnlyQwen2VLProcessor` is the same processor without
the video half; :func:`load_processor` is the one place that picks the right class (``AutoProcessor`` on a
directory saved by the image-only class would silently return only the tokenizer).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import Qwen2VLProcessor

from workbench import conventions

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TINY_MODEL = ASSETS / "tiny-qwen2-vl"
SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without a video processor: images and text only, no torchvision needed.

    Same call signature, chat template, ``decode`` and ``image_token_id`` as the stock class, and an instance
    of it, so TRL and transformers treat it as a Qwen2-VL processor.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        # Skip Qwen2VLProcessor.__init__ (it requires the video processor); set up the mixin directly.
        super(Qwen2VLProcessor, self).__init__(image_processor, tokenizer, chat_template=chat_template)


def has_torchvision() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def load_processor(path, **kwargs):
    """The processor of a Qwen-VL checkpoint (``path``: local dir or hub id), with or without torchvision.

    With torchvision, the stock ``AutoProcessor``. Without it, the image-only processor built from the
    checkpoint's image processor, tokenizer and chat template. ``kwargs`` (e.g. ``min_pixels``) go to the
    image processor.
    """
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    path = str(path)
    if has_torchvision():
        try:
            proc = AutoProcessor.from_pretrained(path, **kwargs)
            if hasattr(proc, "image_processor"):
                return proc
        except (ImportError, ValueError, OSError):
            pass
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = AutoImageProcessor.from_pretrained(path, **kwargs)
    chat_template = getattr(tokenizer, "chat_template", None) or _read_chat_template(path)
    processor = ImageOnlyQwen2VLProcessor(image_processor, tokenizer, chat_template=chat_template)
    return processor


def _read_chat_template(path: str) -> str | None:
    for name in ("chat_template.jinja", "chat_template.json"):
        f = Path(path) / name
        if f.is_file():
            text = f.read_text()
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    if not Path(path).exists():  # a hub id: let huggingface_hub find it (offline cache or network)
        from huggingface_hub import hf_hub_download

        for name in ("chat_template.jinja", "chat_template.json"):
            try:
                return _read_chat_template(str(Path(hf_hub_download(path, name)).parent))
            except Exception:  # noqa: BLE001 - a missing optional file
                continue
    return None


@dataclass
class Policy:
    """A loaded vision-language policy.

    ``convention`` is the coordinate convention's name (``conventions.get(policy.convention)``); ``name``
    is what was asked for (``"tiny-qwen2-vl"`` for the shipped default).
    """

    model: Any
    processor: Any
    convention: str
    device: Any
    name: str

    @property
    def tokenizer(self):
        return self.processor.tokenizer


def resolve_device(device="auto"):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_policy(name_or_path=None, *, device="auto", dtype=None, lora=None, trust_remote_code=False) -> Policy:
    """Load a Qwen-VL policy (model + processor + coordinate convention) ready for generation and training.

    - ``name_or_path``: ``None`` for the shipped tiny Qwen2-VL (offline), else a hub id or a local directory
      of a Qwen2-VL, Qwen2.5-VL or Qwen3-VL checkpoint.
    - ``device``: ``"auto"`` (CUDA when available, else CPU), or any torch device.
    - ``dtype``: default bf16 on CUDA, fp32 on CPU.
    - ``lora``: ``None``; a dict of ``peft.LoraConfig`` keyword arguments (a fresh adapter); or the path of
      a saved adapter (loaded trainable).
    Weights load from safetensors only; ``trust_remote_code`` stays off unless asked.
    """
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    path = str(TINY_MODEL) if name_or_path is None else str(name_or_path)
    name = "tiny-qwen2-vl" if name_or_path is None else str(name_or_path)
    _check_exists(path, default=name_or_path is None)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(f"could not read a model config from {path!r}; expected a Qwen2-VL, Qwen2.5-VL or "
                         f"Qwen3-VL checkpoint (a directory or hub id with config.json): {err}") from err
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"{path!r} is a {config.model_type!r} model, not a supported vision-language model; "
                         f"expected config.model_type in {SUPPORTED_MODEL_TYPES}")
    dev = resolve_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code)
    model.to(dev)
    model.eval()
    processor = load_processor(path)
    processor.tokenizer.padding_side = "left"  # generation pads on the left
    if lora is not None:
        model = _apply_lora(model, lora)
    return Policy(model=model, processor=processor, convention=conventions.for_model_type(config.model_type),
                  device=dev, name=name)


def _check_exists(path: str, *, default: bool) -> None:
    if default and not Path(path, "config.json").is_file():
        raise FileNotFoundError(f"the shipped tiny model is missing: expected a checkpoint in {path}; "
                                f"rebuild it with `make tiny-model` (python -m workbench.pretrain)")
    looks_local = path.startswith((".", "/", "~")) or os.sep in path and not _looks_like_hub_id(path)
    if looks_local and not Path(path).exists():
        raise FileNotFoundError(f"no model at {path!r}: expected a local checkpoint directory (config.json, "
                                f"*.safetensors, processor files) or a hub id like 'Qwen/Qwen2-VL-2B-Instruct'")
    if Path(path).is_dir() and not Path(path, "config.json").is_file():
        raise FileNotFoundError(f"{path!r} is a directory without config.json; expected a Qwen-VL checkpoint "
                                f"directory (config.json, *.safetensors, processor files)")


def _looks_like_hub_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not Path(path).exists() and not path.startswith((".", "/"))


def _apply_lora(model, lora):
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(lora, dict):
        cfg = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
               "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
               **lora}
        return get_peft_model(model, LoraConfig(**cfg))
    if isinstance(lora, (str, os.PathLike)):
        if not Path(lora, "adapter_config.json").is_file():
            raise FileNotFoundError(f"no LoRA adapter at {str(lora)!r}: expected a directory with "
                                    f"adapter_config.json (saved by peft)")
        return PeftModel.from_pretrained(model, str(lora), is_trainable=True)
    raise TypeError(f"lora must be None, a dict of peft.LoraConfig arguments or an adapter path; "
                    f"got {type(lora).__name__}")
