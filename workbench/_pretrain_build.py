"""Building blocks of the tiny model: tokenizer, config, processor, and SFT batches.

Used by :mod:`workbench.pretrain`; kept apart so tests and notebooks can build a random tiny model cheaply.
"""

from __future__ import annotations

from workbench import tasks as T
from workbench.data import synthetic

# Qwen2-VL's special tokens, in Qwen2-VL's order; ids follow the learned vocabulary.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
# Qwen2-VL-Instruct's chat template, verbatim.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in "
    "messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string "
    "%}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if "
    "content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = "
    "image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif "
    "%}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content "
    "%}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value "
    "}}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ "
    "content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt "
    "%}<|im_start|>assistant\n{% endif %}"
)
# Qwen2's pre-tokenizer split: every digit is its own pre-token (so coordinates are digit sequences).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")


def tokenizer_corpus() -> list[str]:
    """Text the tokenizer learns merges from: prompts, labels and answer syntax (not the OCR words, so
    words are read in characters and OCR earns partial credit character by character)."""
    lines = [T.SYSTEM_PROMPT, "system", "user", "assistant", "Picture Video"]
    colours, shapes = list(synthetic.COLORS), list(synthetic.SHAPES)
    for c in colours:
        for s in shapes:
            lines.append(T.question("grounding", phrase=f"{c} {s}"))
        lines.append(T.question("counting", label=f"{c} shapes"))
    for s in shapes:
        lines.append(T.question("counting", label=synthetic.PLURALS[s]))
    lines.append(T.question("detection", classes=shapes))
    lines.append(T.question("detection", classes=shapes, variant="pr1_eval"))
    lines.append(T.question("ocr"))
    lines += ["(123,456),(789,1000)", "[0, 0, 1000, 1000]", '{"bbox_2d": [1, 2, 3, 4], "label": "circle"}',
              "```json\n[\n\t{}\n]\n```", "<think> </think> <answer> </answer>", "0 1 2 3 4 5 6 7 8 9"]
    return lines * 20


def build_tokenizer(vocab_size: int = 400):
    """Byte-level BPE (Qwen2's split pattern) trained on :func:`tokenizer_corpus`, with Qwen2-VL's special
    tokens and chat template; eos ``<|im_end|>``, pad ``<|endoftext|>``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:], clean_up_tokenization_spaces=False,
        model_max_length=4096)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def build_config(tokenizer, *, text_hidden=128, text_layers=3, text_heads=2, text_kv_heads=1,
                 intermediate=256, vision_embed=128, vision_depth=4, vision_heads=4, rope_theta=1e6,
                 mrope_section=(8, 12, 12)):
    """A small ``Qwen2VLConfig``: stock architecture, a few million parameters (see PLATFORM-NOTES)."""
    from transformers import Qwen2VLConfig

    head_dim = text_hidden // text_heads
    if sum(mrope_section) * 2 != head_dim:
        raise ValueError(f"mrope_section {list(mrope_section)} must sum to head_dim / 2 = {head_dim // 2}")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer), hidden_size=text_hidden, intermediate_size=intermediate,
        num_hidden_layers=text_layers, num_attention_heads=text_heads, num_key_value_heads=text_kv_heads,
        max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": float(rope_theta),
                         "mrope_section": list(mrope_section)},
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(depth=vision_depth, embed_dim=vision_embed, hidden_size=text_hidden, mlp_ratio=2,
                  num_heads=vision_heads, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    return Qwen2VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=True,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )


def build_processor(tokenizer, image_size: int = 112):
    """The image-only Qwen2-VL processor with a PIL image processor that keeps ``image_size`` images as they
    are (min = max pixels), so one image is (image_size / 28)^2 tokens."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from workbench.models import ImageOnlyQwen2VLProcessor

    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": pixels, "longest_edge": pixels}, patch_size=14, merge_size=2,
        temporal_patch_size=2)
    return ImageOnlyQwen2VLProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE)


def sft_batch(processor, records, convention="qwen2_vl"):
    """Right-padded SFT batch: prompt (chat template + image) then answer + ``<|im_end|>``.

    Returns a dict of tensors: input_ids, attention_mask [B, T]; labels [B, T] (-100 outside the answer);
    pixel_values [B * patches, C * 2 * 14 * 14]; image_grid_thw [B, 3].
    """
    import torch

    tok = processor.tokenizer
    images = [r["image"] for r in records]
    vis = processor.image_processor(images=images, return_tensors="pt")
    merge = processor.image_processor.merge_size ** 2
    seqs, labs = [], []
    for r, thw in zip(records, vis["image_grid_thw"]):
        prompt = processor.apply_chat_template(T.messages(r), tokenize=False, add_generation_prompt=True)
        prompt = prompt.replace("<|image_pad|>", "<|image_pad|>" * int(thw.prod() // merge))
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(T.sft_target(r, convention) + "<|im_end|>", add_special_tokens=False)["input_ids"]
        seqs.append(p_ids + a_ids)
        labs.append([-100] * len(p_ids) + a_ids)
    n = max(map(len, seqs))
    pad = tok.pad_token_id
    input_ids = torch.tensor([s + [pad] * (n - len(s)) for s in seqs])
    labels = torch.tensor([s + [-100] * (n - len(s)) for s in labs])
    attention = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs])
    mm_types = (input_ids == processor.image_token_id).long()  # M-RoPE needs to know which are image tokens
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "mm_token_type_ids": mm_types,
            "pixel_values": vis["pixel_values"], "image_grid_thw": vis["image_grid_thw"]}


def generation_inputs(processor, records):
    """Left-padded prompts (with images) for ``model.generate``."""
    prompts = [processor.apply_chat_template(T.messages(r), tokenize=False, add_generation_prompt=True)
               for r in records]
    processor.tokenizer.padding_side = "left"
    return processor(text=prompts, images=[r["image"] for r in records], padding=True, return_tensors="pt")
