"""Random-weight vision-language models of real architectures, built fully offline.

No model hub is reachable here, yet the loading code must be proven on the very path real
weights take. So this module writes, with ``save_pretrained``, a directory that
``AutoProcessor.from_pretrained(dir)`` + ``AutoModelForImageTextToText.from_pretrained(dir)``
load exactly like a downloaded checkpoint:

* a byte-level BPE tokenizer trained in-process on generated English text (any text encodes),
  carrying the special tokens the architecture's processor looks up by name;
* the architecture's real processor and image-processor classes, configured small for "tiny";
* a chat template of the same shape as the real model's;
* a hand-written config of the real model class and random weights.

``size="tiny"`` gives ~1 MB models that build in well under a second (after imports) for tests.
``size="full"`` gives the published dimensions (SmolVLM-256M-Instruct, Qwen2.5-VL-3B-Instruct,
gemma-3-4b-it; llava-1.5-7b as a config only) with random bf16 weights, for benchmarks: speed
and memory do not depend on weight values. The tokenizer stays small but the embedding matrix
has the real vocab size, so ids past ``len(tokenizer)`` exist and decode to nothing, and the
image/special token ids in the config are the small tokenizer's, not the real checkpoint's.

    python -m tools.random_models idefics3 .cache/tiny-smolvlm [--size tiny|full] [--seed 0]

API: ``build(arch, out_dir, size=, seed=) -> Path`` (idempotent, marker ``random_model.json``),
``build_parts(arch, size=, seed=) -> (processor, config, generation_config)`` without weights,
``build_config(arch, size=)`` (e.g. to count a full shape on the ``meta`` device).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ARCHITECTURES = ("idefics3", "qwen2_5_vl", "llava", "gemma3")
SIZES = ("tiny", "full")

# Bump when the output of build() changes, so stale cached builds are rebuilt.
FORMAT_VERSION = 2
MARKER = "random_model.json"
TINY_INIT_STD = 0.2  # see _make_input_sensitive

# Tiny tokenizers: a trained BPE of this many entries (special tokens excluded).
_TINY_BPE_VOCAB = 1024
# An honest text context for the tiny models (rope works at any length, but the config says 2048).
_TINY_CONTEXT = 2048
# Tiny widths are multiples of 64 on purpose: bitsandbytes' CPU 4-bit kernel repacks weights in
# blocks and fails on layers with in_features % 64 or out_features % 32 (e.g. a 32-wide tower).
_TINY_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=_TINY_CONTEXT,
)
_TINY_VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)


# ---------------------------------------------------------------------------------------------
# Tokenizer: a corpus of varied English, then a byte-level BPE trained on it.
# ---------------------------------------------------------------------------------------------

_WORDS = [
    "the",
    "a",
    "an",
    "this",
    "that",
    "these",
    "those",
    "my",
    "your",
    "our",
    "their",
    "his",
    "her",
    "its",
    "some",
    "every",
    "no",
    "one",
    "two",
    "three",
    "four",
    "cat",
    "dog",
    "bird",
    "horse",
    "cow",
    "sheep",
    "fish",
    "mouse",
    "lion",
    "tiger",
    "bear",
    "rabbit",
    "duck",
    "goose",
    "owl",
    "fox",
    "wolf",
    "deer",
    "man",
    "woman",
    "child",
    "boy",
    "girl",
    "person",
    "people",
    "friend",
    "teacher",
    "doctor",
    "driver",
    "farmer",
    "artist",
    "student",
    "house",
    "home",
    "room",
    "kitchen",
    "table",
    "chair",
    "bed",
    "door",
    "window",
    "wall",
    "floor",
    "roof",
    "garden",
    "yard",
    "street",
    "road",
    "city",
    "town",
    "village",
    "bridge",
    "tower",
    "park",
    "river",
    "lake",
    "sea",
    "ocean",
    "beach",
    "island",
    "mountain",
    "hill",
    "valley",
    "forest",
    "tree",
    "flower",
    "grass",
    "leaf",
    "rock",
    "stone",
    "sand",
    "snow",
    "rain",
    "cloud",
    "sky",
    "sun",
    "moon",
    "star",
    "light",
    "shadow",
    "car",
    "bus",
    "train",
    "plane",
    "boat",
    "bicycle",
    "truck",
    "ship",
    "wheel",
    "engine",
    "machine",
    "computer",
    "phone",
    "screen",
    "camera",
    "picture",
    "image",
    "photo",
    "photograph",
    "painting",
    "drawing",
    "chart",
    "graph",
    "diagram",
    "map",
    "sign",
    "label",
    "text",
    "word",
    "book",
    "page",
    "letter",
    "number",
    "table",
    "menu",
    "receipt",
    "document",
    "paper",
    "note",
    "card",
    "ticket",
    "bottle",
    "cup",
    "glass",
    "plate",
    "bowl",
    "spoon",
    "fork",
    "knife",
    "bread",
    "apple",
    "orange",
    "banana",
    "cake",
    "coffee",
    "tea",
    "water",
    "milk",
    "soup",
    "pizza",
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
    "gray",
    "grey",
    "golden",
    "silver",
    "dark",
    "bright",
    "big",
    "small",
    "large",
    "tiny",
    "huge",
    "long",
    "short",
    "tall",
    "wide",
    "narrow",
    "round",
    "square",
    "flat",
    "sharp",
    "soft",
    "hard",
    "smooth",
    "old",
    "new",
    "young",
    "happy",
    "sad",
    "angry",
    "calm",
    "busy",
    "quiet",
    "loud",
    "clean",
    "dirty",
    "empty",
    "full",
    "hot",
    "cold",
    "warm",
    "cool",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "has",
    "have",
    "had",
    "do",
    "does",
    "did",
    "can",
    "could",
    "will",
    "would",
    "should",
    "may",
    "might",
    "see",
    "sees",
    "saw",
    "look",
    "looks",
    "show",
    "shows",
    "describe",
    "describes",
    "explain",
    "tell",
    "read",
    "write",
    "count",
    "find",
    "run",
    "runs",
    "running",
    "walk",
    "walks",
    "walking",
    "sit",
    "sits",
    "sitting",
    "stand",
    "stands",
    "standing",
    "eat",
    "eats",
    "eating",
    "hold",
    "holds",
    "holding",
    "play",
    "plays",
    "playing",
    "fly",
    "flies",
    "flying",
    "swim",
    "swims",
    "swimming",
    "open",
    "close",
    "wear",
    "on",
    "in",
    "at",
    "under",
    "over",
    "above",
    "below",
    "behind",
    "beside",
    "between",
    "near",
    "inside",
    "outside",
    "through",
    "across",
    "and",
    "or",
    "but",
    "so",
    "because",
    "while",
    "when",
    "where",
    "what",
    "which",
    "who",
    "whom",
    "whose",
    "why",
    "how",
    "if",
    "then",
    "than",
    "left",
    "right",
    "top",
    "bottom",
    "front",
    "back",
    "middle",
    "center",
    "corner",
    "edge",
    "side",
    "part",
    "whole",
    "half",
    "piece",
    "morning",
    "evening",
    "night",
    "day",
    "week",
    "month",
    "year",
    "today",
    "yesterday",
    "tomorrow",
    "summer",
    "winter",
    "spring",
    "very",
    "quite",
    "really",
    "almost",
    "about",
    "around",
    "only",
    "also",
    "just",
    "still",
    "even",
    "more",
    "most",
    "less",
    "least",
]

_NAMES = [
    "Alice",
    "Bob",
    "Carol",
    "David",
    "Emma",
    "Frank",
    "Grace",
    "Henry",
    "Paris",
    "London",
    "Tokyo",
    "Berlin",
    "Madrid",
    "Rome",
]

_TEMPLATES = (
    "{Cap} {w} {w} {w} {w}.",
    "What is in this {w}?",
    "Describe the {w} in the {w}.",
    "How many {w} {w} are there? There are {n}.",
    "{Name} has {n} {w} and {n} {w}, {w} {w}.",
    "The {w} {w} is {w} the {w} {w}!",
    '"{Cap} {w}," said {Name}. "{Cap} {w} {w}?"',
    "In {year}, {Name} {w} {w} {w} ({pct}% of the {w}).",
    "{Cap} {w}: {w}; {w} - {w} / {w} & {w}.",
    "Price: ${n}.{cents} (was ${n}), total = {n} * {n} + {n}",
    "Q: {Cap} {w} {w} {w}? A: {Cap} {w} {w}.",
    "- {Cap} {w} {w}\n- {Cap} {w} {w}\n- {Cap} {w}",
    "Call {phone} or write to {email} before {n}:{cents}.",
    "See https://example.com/{w}/{n}?q={w}#{w} [{n}] {{ok}} <{w}>",
    "{Cap} {w} {w} {w} {w} {w} {w} {w}, {w} {w} {w} {w}.",
)


def _corpus(seed: int, lines: int = 600) -> list[str]:
    """Varied English with digits and punctuation, enough for ~1k BPE merges."""
    rng = random.Random(seed)

    def fill(template: str) -> str:
        out = template
        for key, make in (
            ("{Cap}", lambda: rng.choice(_WORDS).capitalize()),
            ("{w}", lambda: rng.choice(_WORDS)),
            ("{Name}", lambda: rng.choice(_NAMES)),
            ("{n}", lambda: str(rng.randint(0, 999))),
            ("{cents}", lambda: f"{rng.randint(0, 99):02d}"),
            ("{year}", lambda: str(rng.randint(1900, 2030))),
            ("{pct}", lambda: str(rng.randint(1, 100))),
            ("{phone}", lambda: f"+1-{rng.randint(200, 999)}-{rng.randint(1000, 9999)}"),
            ("{email}", lambda: f"{rng.choice(_NAMES).lower()}@example.org"),
        ):
            while key in out:
                out = out.replace(key, make(), 1)
        return out

    text = [fill(rng.choice(_TEMPLATES)) for _ in range(lines)]
    # Every printable ASCII character appears at least once (byte-level BPE covers the rest).
    text.append("".join(chr(c) for c in range(32, 127)))
    text.append("\t tabs and\n\nnew lines   and  spaces \r\n")
    return text


def _train_bpe(seed: int, leading_specials: list[str], *, qwen_style: bool = False):
    """Train a byte-level BPE; ``leading_specials`` get ids 0.. like in the real vocabularies."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if qwen_style:
        # Qwen2's own pre-tokenizer: its split regex, then byte-level without the GPT-2 regex.
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:  # GPT-2 / SmolLM2 style
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_TINY_BPE_VOCAB + len(leading_specials),
        special_tokens=leading_specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text encodes
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer)
    return tok


def _wrap(tok, *, added_specials: list[str], add_bos: bool = False, **special_tokens):
    """A transformers fast tokenizer over ``tok``, with ``added_specials`` appended as special tokens.

    ``add_bos``: the tokenizer itself prepends the BOS token, as Llama/Gemma tokenizers do.
    """
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    # Appended after the trained vocabulary, as the real checkpoints append theirs.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in added_specials])
    if add_bos:
        bos = special_tokens["bos_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    special_tokens.setdefault("extra_special_tokens", list(added_specials))
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special_tokens)


# ---------------------------------------------------------------------------------------------
# Chat templates: the same shape as each real model's template, extended where the real one
# is narrower (string content, images in any turn, system messages).
# ---------------------------------------------------------------------------------------------

# SmolVLM-Instruct: "<|im_start|>User:<image>text<end_of_utterance>\nAssistant: ...".
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}"
    "{% if message['content'] and message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Qwen2-VL / Qwen2.5-VL-Instruct, verbatim (default system prompt, vision_start/pad/end).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA-1.5 (vicuna_v1): "SYSTEM USER: <image>\ntext ASSISTANT: answer</s>USER: ... ASSISTANT:".
# Images of a turn come first, as in llava-hf's template; the tokenizer adds <s> itself.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}"
    "{% set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set parts = message['content'] %}{% endif %}"
    "{% set text = parts | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') %}"
    "{% if message['role'] == 'system' %}{{ text + ' ' }}"
    "{% else %}"
    "{{ message['role'].upper() + ': ' }}"
    "{% for part in parts | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] == 'assistant' %}{{ text + '</s>' }}{% else %}{{ text + ' ' }}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


# ---------------------------------------------------------------------------------------------
# Per-architecture recipes: (processor, config, generation_config).
# ---------------------------------------------------------------------------------------------


def _idefics3(size: str, seed: int):
    """SmolVLM-256M-Instruct is an Idefics3 model: SigLIP-B/16 @512 + SmolLM2-135M, 64 tokens/tile."""
    from transformers import GenerationConfig, Idefics3Config, Idefics3ImageProcessor, Idefics3Processor

    tok = _train_bpe(seed, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer = _wrap(
        tok,
        # Names the processor looks up; row/col tags for up to 6x6 tiles, as in the real vocab.
        added_specials=["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
        + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    ids = tokenizer.convert_tokens_to_ids
    if size == "tiny":
        # 32 px tiles of 8 px patches, pixel-shuffled 2x2: 4 tokens per tile; images up to 2x2 tiles.
        tile, patch, scale = 32, 8, 2
        vision = dict(_TINY_VISION)
        text = dict(_TINY_TEXT, vocab_size=len(tokenizer))
        longest_edge = 2 * tile
    else:
        # SmolVLM-256M-Instruct config.json.
        tile, patch, scale = 512, 16, 4
        vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
        text = dict(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=8192,
            vocab_size=49280,
        )
        longest_edge = 4 * tile  # the real image processor's size.longest_edge: 2048
    config = Idefics3Config(
        vision_config=dict(model_type="idefics3_vision", image_size=tile, patch_size=patch, **vision),
        text_config=dict(
            model_type="llama",
            rms_norm_eps=1e-5,
            rope_theta=100000.0,
            hidden_act="silu",
            tie_word_embeddings=False,
            pad_token_id=ids("<|im_end|>"),
            bos_token_id=ids("<|im_start|>"),
            eos_token_id=ids("<end_of_utterance>"),
            **text,
        ),
        scale_factor=scale,
        image_token_id=ids("<image>"),
        pad_token_id=ids("<|im_end|>"),
        tie_word_embeddings=False,
    )
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": longest_edge},
        max_image_size={"longest_edge": tile},
        do_image_splitting=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(tile // patch) ** 2 // scale**2,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    generation = GenerationConfig(
        bos_token_id=ids("<|im_start|>"),
        eos_token_id=[ids("<end_of_utterance>")],
        pad_token_id=ids("<|im_end|>"),
    )
    return processor, config, generation


_QWEN_SPECIALS = [  # in the real vocabulary's order (ids 151643.. in Qwen2.5-VL)
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _qwen2_5_vl(size: str, seed: int):
    """Qwen2.5-VL-3B-Instruct: window-attention ViT (14 px patches, 2x2 merge) + Qwen2.5-3B."""
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLProcessor,
        Qwen2Tokenizer,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    # The real tokenizer class, over vocab/merges trained with Qwen's own pre-tokenizer.
    bpe = json.loads(_train_bpe(seed, [], qwen_style=True).to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in bpe["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=bpe["vocab"],
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        additional_special_tokens=_QWEN_SPECIALS[1:],
    )
    ids = tokenizer.convert_tokens_to_ids
    if size == "tiny":
        # Images of 56..112 px: 4..16 tokens each. head_dim 16 -> 8 rotary pairs = mrope 2+3+3.
        vision = dict(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=2,
            out_hidden_size=64,
            fullatt_block_indexes=[1],  # window attention in block 0, full attention in the last
        )
        text = dict(
            _TINY_TEXT,
            vocab_size=len(tokenizer),
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        )
        pixels = dict(min_pixels=56 * 56, max_pixels=112 * 112)
    else:
        # Qwen2.5-VL-3B-Instruct config.json and preprocessor_config.json.
        vision = dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=2048,
            fullatt_block_indexes=[7, 15, 23, 31],
        )
        text = dict(
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            max_position_embeddings=128000,
            vocab_size=151936,
            max_window_layers=70,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        )
        pixels = dict(min_pixels=3136, max_pixels=12845056)
    config = Qwen2_5_VLConfig(
        vision_config=dict(
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            tokens_per_second=2,
            hidden_act="silu",
            **vision,
        ),
        text_config=dict(
            hidden_act="silu",
            rms_norm_eps=1e-6,
            use_sliding_window=False,
            sliding_window=32768,
            bos_token_id=ids("<|endoftext|>"),
            eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
            tie_word_embeddings=True,
            **text,
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,  # the 3B ties lm_head to the embeddings (the 7B does not)
    )
    common = dict(patch_size=14, temporal_patch_size=2, merge_size=2)
    image_processor = Qwen2VLImageProcessor(**pixels, **common)
    video_processor = Qwen2VLVideoProcessor(**pixels, **common)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )
    generation = GenerationConfig(
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=[ids("<|im_end|>"), ids("<|endoftext|>")],
        pad_token_id=ids("<|endoftext|>"),
    )
    return processor, config, generation


def _llava(size: str, seed: int):
    """llava-1.5: CLIP ViT-L/14 @336 + Vicuna-7B, 576 image tokens (CLS dropped)."""
    from transformers import CLIPImageProcessor, GenerationConfig, LlavaConfig, LlavaProcessor

    tok = _train_bpe(seed, ["<unk>", "<s>", "</s>"])
    tokenizer = _wrap(
        tok,
        added_specials=["<image>", "<pad>"],  # ids 32000, 32001 in llava-hf
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        add_bos=True,
    )
    ids = tokenizer.convert_tokens_to_ids
    if size == "tiny":
        # 32 px images of 8 px patches: 16 patch tokens (+ CLS, dropped by the "default" strategy).
        image, patch = 32, 8
        vision = dict(_TINY_VISION)
        text = dict(_TINY_TEXT, num_key_value_heads=4, vocab_size=len(tokenizer))  # Vicuna: no GQA
    else:
        # llava-hf/llava-1.5-7b-hf config.json (for parameter counting; build() refuses it).
        image, patch = 336, 14
        vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)
        text = dict(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
            vocab_size=32064,
        )
    config = LlavaConfig(
        vision_config=dict(
            model_type="clip_vision_model",
            image_size=image,
            patch_size=patch,
            projection_dim=vision["hidden_size"],
            hidden_act="quick_gelu",
            **vision,
        ),
        text_config=dict(
            model_type="llama",
            rms_norm_eps=1e-5,
            hidden_act="silu",
            tie_word_embeddings=False,
            bos_token_id=ids("<s>"),
            eos_token_id=ids("</s>"),
            pad_token_id=ids("<pad>"),
            **text,
        ),
        image_token_index=ids("<image>"),
        image_seq_length=(image // patch) ** 2,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image}, crop_size={"height": image, "width": image}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    generation = GenerationConfig(
        bos_token_id=ids("<s>"), eos_token_id=[ids("</s>")], pad_token_id=ids("<pad>")
    )
    return processor, config, generation


# Gemma 3 (google/gemma-3-4b-it), verbatim: the system text is folded into the first user turn.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}"
    "{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    '{%- set first_user_prefix = "" -%}'
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    '{{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}'
    "{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    '{%- else -%}{{ raise_exception("Invalid content type") }}'
    "{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def _gemma3(size: str, seed: int):
    """gemma-3-4b-it: SigLIP-so400m @896 avg-pooled to 256 tokens per image + Gemma 3 4B."""
    from transformers import Gemma3Config, Gemma3ImageProcessor, Gemma3Processor, GenerationConfig

    tok = _train_bpe(seed, ["<pad>", "<eos>", "<bos>", "<unk>"])
    tokenizer = _wrap(
        tok,
        added_specials=[
            "<start_of_turn>",
            "<end_of_turn>",
            "<start_of_image>",
            "<end_of_image>",
            "<image_soft_token>",
        ],
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        add_bos=True,
        # Named tokens Gemma3Processor reads (tokenizer.boi_token, .image_token, ...).
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    ids = tokenizer.convert_tokens_to_ids
    if size == "tiny":
        # 32 px images of 8 px patches (4x4), average-pooled to 2x2 = 4 tokens per image.
        image, patch, mm_tokens = 32, 8, 4
        vision = dict(_TINY_VISION)
        text = dict(
            _TINY_TEXT,
            vocab_size=len(tokenizer),
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=512,
            layer_types=["sliding_attention", "full_attention"],  # the real 5:1 pattern, shortened
        )
    else:
        # google/gemma-3-4b-it config.json.
        image, patch, mm_tokens = 896, 14, 256
        vision = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16)
        text = dict(
            hidden_size=2560,
            intermediate_size=10240,
            num_hidden_layers=34,
            num_attention_heads=8,
            num_key_value_heads=4,
            head_dim=256,
            query_pre_attn_scalar=256,
            sliding_window=1024,
            max_position_embeddings=131072,
            vocab_size=262208,
            rope_parameters={
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
        )
    config = Gemma3Config(
        vision_config=dict(
            model_type="siglip_vision_model",
            image_size=image,
            patch_size=patch,
            vision_use_head=False,
            **vision,
        ),
        text_config=dict(
            model_type="gemma3_text",
            hidden_activation="gelu_pytorch_tanh",
            rms_norm_eps=1e-6,
            bos_token_id=ids("<bos>"),
            eos_token_id=[ids("<eos>"), ids("<end_of_turn>")],
            pad_token_id=ids("<pad>"),
            **text,
        ),
        mm_tokens_per_image=mm_tokens,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
        tie_word_embeddings=True,
    )
    image_processor = Gemma3ImageProcessor(
        size={"height": image, "width": image},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pan_and_scan=False,
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=mm_tokens,
        chat_template=GEMMA3_CHAT_TEMPLATE,
    )
    generation = GenerationConfig(
        bos_token_id=ids("<bos>"),
        eos_token_id=[ids("<eos>"), ids("<end_of_turn>")],
        pad_token_id=ids("<pad>"),
    )
    return processor, config, generation


_RECIPES = {"idefics3": _idefics3, "qwen2_5_vl": _qwen2_5_vl, "llava": _llava, "gemma3": _gemma3}
# Real checkpoints ship in bf16; the tiny ones stay float32 (CPU tests, bitsandbytes on CPU).
_DTYPE = {"tiny": "float32", "full": "bfloat16"}


def _check(arch: str, size: str) -> None:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")


def build_parts(arch: str, *, size: str = "tiny", seed: int = 0):
    """(processor, config, generation_config) of a model, without any weights: cheap."""
    _check(arch, size)
    processor, config, generation = _RECIPES[arch](size, seed)
    # Truncation/warnings in the tokenizer should know the model's real context.
    processor.tokenizer.model_max_length = config.get_text_config().max_position_embeddings
    return processor, config, generation


def build_config(arch: str, *, size: str = "tiny", seed: int = 0):
    """The model config alone, e.g. to instantiate a full shape on the ``meta`` device."""
    return build_parts(arch, size=size, seed=seed)[1]


# ---------------------------------------------------------------------------------------------
# Building and caching
# ---------------------------------------------------------------------------------------------


def _marker_for(arch: str, size: str, seed: int) -> dict[str, Any]:
    import transformers

    return {
        "arch": arch,
        "size": size,
        "seed": seed,
        "format_version": FORMAT_VERSION,
        "transformers": transformers.__version__,
    }


def _read_marker(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _make_input_sensitive(model) -> None:
    """Widen the random init of a tiny model's matrices.

    With the usual std of 0.02, two layers of width 64 average the prompt into near-uniform
    attention: greedy output barely depends on the words, so tests could not tell what
    reached the model. A wider init makes replies depend on every word and image, as a real
    model's do.
    """
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                param.normal_(0.0, TINY_INIT_STD)


def build(arch: str, out_dir: str | Path, *, size: str = "tiny", seed: int = 0) -> Path:
    """Build a random-weight model of ``arch`` into ``out_dir`` and return its path.

    Idempotent: a directory already holding a build of the same arch/size/seed is returned as
    is. The model is written to a temporary sibling and renamed into place, so ``out_dir``
    either holds a complete build or does not exist (a crash leaves no half model behind).
    """
    _check(arch, size)
    if arch == "llava" and size == "full":
        raise ValueError(
            "llava full size (llava-1.5-7b: ~7.1B parameters, ~14 GB in bf16) is too big to build for "
            "CPU benchmarks; use build_config('llava', size='full') to inspect its shape"
        )
    out_dir = Path(out_dir)
    wanted = _marker_for(arch, size, seed)
    if out_dir.exists():
        if _read_marker(out_dir) == wanted:
            return out_dir
        if any(out_dir.iterdir()) and _read_marker(out_dir) is None:
            # Not ours: never delete somebody's directory.
            raise FileExistsError(f"{out_dir} exists and does not hold a random model build")

    import torch
    from transformers import AutoModelForImageTextToText

    processor, config, generation = build_parts(arch, size=size, seed=seed)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=getattr(torch, _DTYPE[size]))
    if size == "tiny" and arch != "gemma3":  # Gemma scales embeddings by sqrt(width): sensitive already
        _make_input_sensitive(model)
    model.generation_config = generation
    model.eval()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the final directory should look like any other
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(wanted, indent=2) + "\n")  # written last: "complete"
        if out_dir.exists():
            shutil.rmtree(out_dir)  # an older build of ours (other arch/size/seed) or empty
        try:
            tmp.rename(out_dir)
        except OSError:
            if _read_marker(out_dir) != wanted:
                raise
            shutil.rmtree(tmp)  # a concurrent build of the same model got there first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.random_models",
        description="Build a random-weight vision-language model of a real architecture, offline.",
    )
    parser.add_argument("arch", choices=ARCHITECTURES)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        path = build(args.arch, args.out_dir, size=args.size, seed=args.seed)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    print(f"{path} ({args.arch}, {args.size}, {_dir_size(path) / 2**20:.1f} MiB, {seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
