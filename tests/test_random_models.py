"""Tiny random VLMs of real architectures: built offline, loaded through the real Auto* path."""

from __future__ import annotations

import time

import pytest
import torch
from PIL import Image

from tools import random_models
from tools.random_models import ARCHITECTURES, build, build_config, build_parts, main

pytestmark = pytest.mark.slow

EXPECTED_CLASSES = {
    "idefics3": ("Idefics3Processor", "Idefics3ForConditionalGeneration"),
    "qwen2_5_vl": ("Qwen2_5_VLProcessor", "Qwen2_5_VLForConditionalGeneration"),
    "llava": ("LlavaProcessor", "LlavaForConditionalGeneration"),
    "gemma3": ("Gemma3Processor", "Gemma3ForConditionalGeneration"),
}
GENERATION_PROMPT_SUFFIX = {
    "idefics3": "<end_of_utterance>\nAssistant:",
    "qwen2_5_vl": "<|im_end|>\n<|im_start|>assistant\n",
    "llava": "ASSISTANT:",
    "gemma3": "<end_of_turn>\n<start_of_turn>model\n",
}


@pytest.fixture(scope="module", autouse=True)
def _offline():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield


@pytest.fixture(scope="session")
def model_root(tmp_path_factory):
    return tmp_path_factory.mktemp("random_models")


@pytest.fixture(scope="session")
def built(model_root):
    """arch -> (path, first build seconds); each tiny model is built once per session."""
    cache: dict[str, tuple] = {}

    def get(arch: str):
        if arch not in cache:
            started = time.perf_counter()
            path = build(arch, model_root / arch)
            cache[arch] = (path, time.perf_counter() - started)
        return cache[arch]

    return get


def _conversation():
    red = Image.new("RGB", (80, 50), (200, 30, 30))  # landscape: Idefics3 splits it into tiles
    blue = Image.new("RGB", (30, 70), (30, 30, 200))  # portrait
    return [
        {"role": "system", "content": [{"type": "text", "text": "You are a terse assistant."}]},
        {
            "role": "user",
            "content": [{"type": "image", "image": red}, {"type": "text", "text": "What color is it?"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "It is red."}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "And this one?"}, {"type": "image", "image": blue}],
        },
    ]


def _expected_image_tokens(arch, model, processor, inputs) -> int:
    """What the vision side of each architecture will produce for these pixel inputs."""
    if arch == "idefics3":
        # One image_seq_len block per real (non-padding) tile.
        tiles = inputs["pixel_attention_mask"].flatten(2).any(-1).sum().item()
        return tiles * processor.image_seq_len
    if arch == "qwen2_5_vl":
        merge = model.config.vision_config.spatial_merge_size
        return int(inputs["image_grid_thw"].prod(-1).sum().item()) // merge**2
    n_images = inputs["pixel_values"].shape[0]
    if arch == "gemma3":  # patch features average-pooled to a fixed count per image
        return n_images * model.config.mm_tokens_per_image
    # LLaVA: one token per patch, the CLS token dropped.
    vision = model.config.vision_config
    return n_images * (vision.image_size // vision.patch_size) ** 2


def _image_token(processor) -> str:
    """The placeholder repeated per image feature (Gemma 3's processor.image_token is the BOI tag)."""
    return getattr(processor.tokenizer, "image_token", None) or processor.image_token


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tiny_model_loads_and_chats_with_two_images(arch, built):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path, seconds = built(arch)
    assert seconds < 30, f"tiny {arch} took {seconds:.1f} s to build"
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    assert (type(processor).__name__, type(model).__name__) == EXPECTED_CLASSES[arch]
    tokenizer = processor.tokenizer
    assert model.config.get_text_config().vocab_size == len(tokenizer)
    assert tokenizer.convert_ids_to_tokens(model.config.image_token_id) == _image_token(processor)
    assert tokenizer.eos_token_id in model.generation_config.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id

    messages = _conversation()
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    for text in ("You are a terse assistant.", "What color is it?", "It is red.", "And this one?"):
        assert text in prompt
    assert prompt.endswith(GENERATION_PROMPT_SUFFIX[arch])

    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    image_tokens = (inputs["input_ids"] == model.config.image_token_id).sum().item()
    assert image_tokens == _expected_image_tokens(arch, model, processor, inputs) > 0

    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    assert 1 <= len(new) <= 5
    assert isinstance(processor.decode(new, skip_special_tokens=True), str)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_chat_template_variants(arch):
    """String content, no system message, several images in one turn, no generation prompt."""
    processor = build_parts(arch)[0]
    image = {"type": "image"}
    messages = [
        {"role": "user", "content": [image, image, {"type": "text", "text": "Compare them."}]},
        {"role": "assistant", "content": "The first is larger."},
        {"role": "user", "content": "Why?"},
    ]
    prompt = processor.apply_chat_template(messages, tokenize=False)
    assert prompt.count(processor.image_token) == 2
    for text in ("Compare them.", "The first is larger.", "Why?"):
        assert text in prompt
    assert not prompt.endswith(GENERATION_PROMPT_SUFFIX[arch])
    # Any text, including non-English and emoji, round-trips through the trained byte-level BPE.
    text = "Ünïcödé ✓ 漢字 😀 {x: [1, 2.5e-3]} \t<tag>"
    ids = processor.tokenizer(text, add_special_tokens=False).input_ids
    assert processor.tokenizer.decode(ids) == text


def test_build_is_idempotent(built, model_root):
    path, _ = built("idefics3")
    weights = path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    started = time.perf_counter()
    assert build("idefics3", path) == path
    assert time.perf_counter() - started < 1.0
    assert weights.stat().st_mtime_ns == before
    # The CLI goes through the same cache.
    assert main(["idefics3", str(path)]) == 0
    assert weights.stat().st_mtime_ns == before


def test_rebuilds_on_other_seed_and_refuses_foreign_dirs(tmp_path):
    out = tmp_path / "m"
    build("llava", out, seed=0)
    build("llava", out, seed=1)
    assert random_models._read_marker(out)["seed"] == 1
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build("llava", foreign)
    assert (foreign / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary build dir left behind"


@pytest.mark.parametrize("bits", [4, 8])
def test_bitsandbytes_on_cpu(bits, built):
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    path, _ = built("idefics3")
    if bits == 4:
        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
        layer = "Linear4bit"
    else:
        quant = BitsAndBytesConfig(load_in_8bit=True)
        layer = "Linear8bitLt"
    processor = AutoProcessor.from_pretrained(path)
    messages = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (40, 40))}]}]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, quantization_config=quant, device_map="cpu")
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    except Exception as exc:
        pytest.skip(f"bitsandbytes {bits}-bit on CPU failed: {type(exc).__name__}: {exc}")
    assert any(type(m).__name__ == layer for m in model.modules())
    assert out.shape[1] > inputs["input_ids"].shape[1]


@pytest.mark.parametrize(
    "arch, params, vocab",
    [
        ("idefics3", 256.5e6, 49280),  # SmolVLM-256M-Instruct
        ("qwen2_5_vl", 3.755e9, 151936),  # Qwen2.5-VL-3B-Instruct
        ("llava", 7.063e9, 32064),  # llava-1.5-7b (shape only: build() refuses it)
        ("gemma3", 4.300e9, 262208),  # gemma-3-4b-it
    ],
)
def test_full_shapes_on_meta_device(arch, params, vocab):
    from transformers import AutoModelForImageTextToText

    config = build_config(arch, size="full")
    with torch.device("meta"):  # no memory, no init: just the shapes
        model = AutoModelForImageTextToText.from_config(config)
    count = sum(p.numel() for p in model.parameters())
    assert count == pytest.approx(params, rel=0.01)
    assert model.get_input_embeddings().weight.shape[0] == vocab
    # The tokenizer is small, but the image token ids the model looks for are the tokenizer's.
    processor = build_parts(arch, size="full")[0]
    assert processor.tokenizer.convert_ids_to_tokens(config.image_token_id) == _image_token(processor)


def test_llava_full_build_refused(tmp_path):
    with pytest.raises(ValueError, match="too big"):
        build("llava", tmp_path / "llava-full", size="full")
    assert not (tmp_path / "llava-full").exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown architecture"):
        build("gpt2", tmp_path / "x")
    with pytest.raises(ValueError, match="unknown size"):
        build("llava", tmp_path / "x", size="huge")
    with pytest.raises(SystemExit):
        main(["gpt2", str(tmp_path / "x")])
