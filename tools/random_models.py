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

Each architecture is one ``Recipe`` in ``RECIPES`` (dimensions, special tokens, template, class
names); one generic builder turns any recipe into those files.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
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


# Corpus vocabulary, as text: a list literal would be one word per line. The order matters (the
# seeded generator picks by index), repeats included.
_WORDS = """
    the a an this that these those my your our their his her its some every no one two three four cat
    dog bird horse cow sheep fish mouse lion tiger bear rabbit duck goose owl fox wolf deer man woman
    child boy girl person people friend teacher doctor driver farmer artist student house home room
    kitchen table chair bed door window wall floor roof garden yard street road city town village bridge
    tower park river lake sea ocean beach island mountain hill valley forest tree flower grass leaf rock
    stone sand snow rain cloud sky sun moon star light shadow car bus train plane boat bicycle truck
    ship wheel engine machine computer phone screen camera picture image photo photograph painting
    drawing chart graph diagram map sign label text word book page letter number table menu receipt
    document paper note card ticket bottle cup glass plate bowl spoon fork knife bread apple orange
    banana cake coffee tea water milk soup pizza red orange yellow green blue purple pink brown black
    white gray grey golden silver dark bright big small large tiny huge long short tall wide narrow
    round square flat sharp soft hard smooth old new young happy sad angry calm busy quiet loud clean
    dirty empty full hot cold warm cool is are was were be been being has have had do does did can could
    will would should may might see sees saw look looks show shows describe describes explain tell read
    write count find run runs running walk walks walking sit sits sitting stand stands standing eat eats
    eating hold holds holding play plays playing fly flies flying swim swims swimming open close wear on
    in at under over above below behind beside between near inside outside through across and or but so
    because while when where what which who whom whose why how if then than left right top bottom front
    back middle center corner edge side part whole half piece morning evening night day week month year
    today yesterday tomorrow summer winter spring very quite really almost about around only also just
    still even more most less least
""".split()  # noqa: SIM905
_NAMES = """
    Alice Bob Carol David Emma Frank Grace Henry Paris London Tokyo Berlin Madrid Rome
""".split()  # noqa: SIM905

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


@dataclass(frozen=True)
class Tokens:
    """A tokenizer's special tokens, by name, laid out as in the real vocabulary."""

    bos: str | None
    eos: str
    pad: str
    unk: str | None
    leading: tuple[str, ...] = ()  # ids 0.., before the trained vocabulary
    added: tuple[str, ...] = ()  # appended after it, as the real checkpoints append theirs
    add_bos: bool = False  # the tokenizer itself prepends BOS, as Llama/Gemma tokenizers do
    named: dict[str, str] | None = None  # named tokens the processor reads (tokenizer.image_token, ...)
    qwen: bool = False  # Qwen2's pre-tokenizer and its own tokenizer class


def _tokenizer(spec: Tokens, seed: int):
    """The trained BPE as the architecture's transformers tokenizer, its special tokens in place."""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer

    tok = _train_bpe(seed, list(spec.leading), qwen_style=spec.qwen)
    roles: dict[str, Any] = dict(
        bos_token=spec.bos, eos_token=spec.eos, pad_token=spec.pad, unk_token=spec.unk
    )
    if spec.qwen:  # the real tokenizer class, over the trained vocab and merges
        bpe = json.loads(tok.to_str())["model"]
        merges: list[Any] = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in bpe["merges"]]
        return Qwen2Tokenizer(
            vocab=bpe["vocab"],
            merges=merges,
            errors="replace",
            additional_special_tokens=list(spec.added),
            **roles,
        )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec.added])
    if spec.add_bos:
        bos = spec.bos
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    named = spec.named or list(spec.added)
    return PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=named, **roles)


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


# ---------------------------------------------------------------------------------------------
# Recipes: one per architecture, read by the generic build_parts() below.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """What differs between architectures. Class names are transformers', imported on use.

    ``tiny``/``full`` hold the dimensions (full: the published config.json); the builder hands
    one to ``config``/``image``/``processor`` as attributes (``s.text`` etc.), the tiny text
    config getting the trained vocabulary's size. In the kwargs those return, and in
    ``generation``, ``*_token_id``/``*_token_index`` values are token names, looked up in the
    tokenizer just built.
    """

    config_class: str
    processor_class: str
    image_processor_class: str
    tokens: Tokens
    template: str
    tiny: dict[str, Any]
    full: dict[str, Any]
    config: Callable[[Any], dict[str, Any]]  # -> config kwargs
    image: Callable[[Any], dict[str, Any]]  # -> image (and video) processor kwargs
    generation: dict[str, Any]
    processor: Callable[[Any], dict[str, Any]] = lambda s: {}  # -> extra processor kwargs
    video_processor_class: str | None = None
    widen_init: bool = True  # see _make_input_sensitive
    too_big: str = ""  # why build() refuses the full size (its config can still be had)


_HALF = [0.5, 0.5, 0.5]  # image mean/std of the SigLIP towers
# Qwen2.5-VL's special tokens in the real vocabulary's order (ids 151643..).
_QWEN_SPECIALS = tuple(
    """
    <|endoftext|> <|im_start|> <|im_end|> <|object_ref_start|> <|object_ref_end|> <|box_start|> <|box_end|>
    <|quad_start|> <|quad_end|> <|vision_start|> <|vision_end|> <|vision_pad|> <|image_pad|> <|video_pad|>
    """.split()  # noqa: SIM905
)

# Laid out by hand: a table reads better with related dimensions on one line.
# fmt: off
RECIPES = {
    # SmolVLM-256M-Instruct is an Idefics3 model: SigLIP-B/16 @512 + SmolLM2-135M, 64 tokens/tile.
    "idefics3": Recipe(
        config_class="Idefics3Config", processor_class="Idefics3Processor",
        image_processor_class="Idefics3ImageProcessor",
        tokens=Tokens(
            bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>", unk="<|endoftext|>",
            leading=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
            # Names the processor looks up; row/col tags for up to 6x6 tiles, as in the real vocab.
            added=("<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>")
            + tuple(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
        ),
        template=IDEFICS3_CHAT_TEMPLATE,
        # 32 px tiles of 8 px patches, pixel-shuffled 2x2: 4 tokens per tile; images up to 2x2 tiles.
        tiny=dict(tile=32, patch=8, scale=2, longest_edge=64, vision=_TINY_VISION, text=_TINY_TEXT),
        # config.json; longest_edge is the real image processor's (4 tiles).
        full=dict(
            tile=512, patch=16, scale=4, longest_edge=2048,
            vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                        num_attention_heads=12),
            text=dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, max_position_embeddings=8192, vocab_size=49280),
        ),
        config=lambda s: dict(
            vision_config=dict(model_type="idefics3_vision", image_size=s.tile, patch_size=s.patch,
                               **s.vision),
            text_config=dict(
                model_type="llama", rms_norm_eps=1e-5, rope_theta=100000.0, hidden_act="silu",
                tie_word_embeddings=False, pad_token_id="<|im_end|>", bos_token_id="<|im_start|>",
                eos_token_id="<end_of_utterance>", **s.text,
            ),
            scale_factor=s.scale, image_token_id="<image>", pad_token_id="<|im_end|>",
            tie_word_embeddings=False,
        ),
        image=lambda s: dict(
            size={"longest_edge": s.longest_edge}, max_image_size={"longest_edge": s.tile},
            do_image_splitting=True, image_mean=_HALF, image_std=_HALF,
        ),
        processor=lambda s: dict(image_seq_len=(s.tile // s.patch) ** 2 // s.scale**2),
        generation=dict(bos_token_id="<|im_start|>", eos_token_id=["<end_of_utterance>"],
                        pad_token_id="<|im_end|>"),
    ),
    # Qwen2.5-VL-3B-Instruct: window-attention ViT (14 px patches, 2x2 merge) + Qwen2.5-3B.
    "qwen2_5_vl": Recipe(
        config_class="Qwen2_5_VLConfig", processor_class="Qwen2_5_VLProcessor",
        image_processor_class="Qwen2VLImageProcessor", video_processor_class="Qwen2VLVideoProcessor",
        tokens=Tokens(bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk=None,
                      added=_QWEN_SPECIALS[1:], qwen=True),
        template=QWEN2_5_VL_CHAT_TEMPLATE,
        # Images of 56..112 px: 4..16 tokens each. head_dim 16 -> 8 rotary pairs = mrope 2+3+3.
        # Window attention in vision block 0, full attention in the last.
        tiny=dict(
            vision=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=64,
                        fullatt_block_indexes=[1]),
            text=dict(_TINY_TEXT, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                                   "mrope_section": [2, 3, 3]}),
            pixels=dict(min_pixels=56 * 56, max_pixels=112 * 112),
        ),
        # config.json and preprocessor_config.json.
        full=dict(
            vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                        out_hidden_size=2048, fullatt_block_indexes=[7, 15, 23, 31]),
            text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                      num_key_value_heads=2, max_position_embeddings=128000, vocab_size=151936,
                      max_window_layers=70, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                                             "mrope_section": [16, 24, 24]}),
            pixels=dict(min_pixels=3136, max_pixels=12845056),
        ),
        config=lambda s: dict(
            vision_config=dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                               tokens_per_second=2, hidden_act="silu", **s.vision),
            text_config=dict(
                hidden_act="silu", rms_norm_eps=1e-6, use_sliding_window=False, sliding_window=32768,
                bos_token_id="<|endoftext|>", eos_token_id="<|im_end|>", pad_token_id="<|endoftext|>",
                tie_word_embeddings=True, **s.text,
            ),
            image_token_id="<|image_pad|>", video_token_id="<|video_pad|>",
            vision_start_token_id="<|vision_start|>", vision_end_token_id="<|vision_end|>",
            tie_word_embeddings=True,  # the 3B ties lm_head to the embeddings (the 7B does not)
        ),
        image=lambda s: dict(**s.pixels, patch_size=14, temporal_patch_size=2, merge_size=2),
        generation=dict(bos_token_id="<|endoftext|>", eos_token_id=["<|im_end|>", "<|endoftext|>"],
                        pad_token_id="<|endoftext|>"),
    ),
    # llava-1.5: CLIP ViT-L/14 @336 + Vicuna-7B, 576 image tokens (CLS dropped).
    "llava": Recipe(
        config_class="LlavaConfig", processor_class="LlavaProcessor",
        image_processor_class="CLIPImageProcessor",
        tokens=Tokens(
            bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", leading=("<unk>", "<s>", "</s>"),
            added=("<image>", "<pad>"),  # ids 32000, 32001 in llava-hf
            add_bos=True,
        ),
        template=LLAVA_CHAT_TEMPLATE,
        # 32 px images of 8 px patches: 16 patch tokens (+ CLS, dropped by the "default" strategy).
        tiny=dict(image=32, patch=8, vision=_TINY_VISION,
                  text=dict(_TINY_TEXT, num_key_value_heads=4)),  # Vicuna: no GQA
        # llava-hf/llava-1.5-7b-hf config.json (for parameter counting; build() refuses it).
        full=dict(
            image=336, patch=14,
            vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                        num_attention_heads=16),
            text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, max_position_embeddings=4096, vocab_size=32064),
        ),
        config=lambda s: dict(
            vision_config=dict(model_type="clip_vision_model", image_size=s.image, patch_size=s.patch,
                               projection_dim=s.vision["hidden_size"], hidden_act="quick_gelu", **s.vision),
            text_config=dict(
                model_type="llama", rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=False,
                bos_token_id="<s>", eos_token_id="</s>", pad_token_id="<pad>", **s.text,
            ),
            image_token_index="<image>", image_seq_length=(s.image // s.patch) ** 2,
            projector_hidden_act="gelu", vision_feature_select_strategy="default", vision_feature_layer=-2,
        ),
        image=lambda s: dict(size={"shortest_edge": s.image},
                             crop_size={"height": s.image, "width": s.image}),
        processor=lambda s: dict(
            patch_size=s.patch, vision_feature_select_strategy="default",
            num_additional_image_tokens=1,  # CLIP's CLS token
        ),
        generation=dict(bos_token_id="<s>", eos_token_id=["</s>"], pad_token_id="<pad>"),
        too_big="llava-1.5-7b: ~7.1B parameters, ~14 GB in bf16",
    ),
    # gemma-3-4b-it: SigLIP-so400m @896 avg-pooled to 256 tokens per image + Gemma 3 4B.
    "gemma3": Recipe(
        config_class="Gemma3Config", processor_class="Gemma3Processor",
        image_processor_class="Gemma3ImageProcessor",
        tokens=Tokens(
            bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", leading=("<pad>", "<eos>", "<bos>", "<unk>"),
            added=("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                   "<image_soft_token>"),
            add_bos=True,
            # Gemma3Processor reads tokenizer.boi_token, .image_token, ...
            named={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                   "image_token": "<image_soft_token>"},
        ),
        template=GEMMA3_CHAT_TEMPLATE,
        # 32 px images of 8 px patches (4x4), average-pooled to 2x2 = 4 tokens per image; the real
        # 5:1 sliding/full attention pattern, shortened.
        tiny=dict(
            image=32, patch=8, mm_tokens=4, vision=_TINY_VISION,
            text=dict(_TINY_TEXT, head_dim=16, query_pre_attn_scalar=16, sliding_window=512,
                      layer_types=["sliding_attention", "full_attention"]),
        ),
        # google/gemma-3-4b-it config.json.
        full=dict(
            image=896, patch=14, mm_tokens=256,
            vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                        num_attention_heads=16),
            text=dict(
                hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
                num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, sliding_window=1024,
                max_position_embeddings=131072, vocab_size=262208,
                rope_parameters={
                    "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                },
            ),
        ),
        config=lambda s: dict(
            vision_config=dict(model_type="siglip_vision_model", image_size=s.image, patch_size=s.patch,
                               vision_use_head=False, **s.vision),
            text_config=dict(
                model_type="gemma3_text", hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                bos_token_id="<bos>", eos_token_id=["<eos>", "<end_of_turn>"], pad_token_id="<pad>",
                **s.text,
            ),
            mm_tokens_per_image=s.mm_tokens, boi_token_index="<start_of_image>",
            eoi_token_index="<end_of_image>", image_token_index="<image_soft_token>",
            tie_word_embeddings=True,
        ),
        image=lambda s: dict(size={"height": s.image, "width": s.image}, image_mean=_HALF, image_std=_HALF,
                             do_pan_and_scan=False),
        processor=lambda s: dict(image_seq_length=s.mm_tokens),
        generation=dict(bos_token_id="<bos>", eos_token_id=["<eos>", "<end_of_turn>"], pad_token_id="<pad>"),
        widen_init=False,  # Gemma scales embeddings by sqrt(width): input-sensitive already
    ),
}
# fmt: on
# Real checkpoints ship in bf16; the tiny ones stay float32 (CPU tests, bitsandbytes on CPU).
_DTYPE = {"tiny": "float32", "full": "bfloat16"}


def _check(arch: str, size: str) -> None:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")


def _token_ids(kwargs: dict[str, Any], ids: Callable) -> dict[str, Any]:
    """Recipes name their special tokens; the ids are those of the tokenizer just trained."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, dict):
            value = _token_ids(value, ids)
        elif key.endswith(("_token_id", "_token_index")):
            value = ids(value)  # a name or a list of names
        out[key] = value
    return out


def build_parts(arch: str, *, size: str = "tiny", seed: int = 0):
    """(processor, config, generation_config) of a model, without any weights: cheap."""
    _check(arch, size)
    import transformers

    recipe = RECIPES[arch]
    tokenizer = _tokenizer(recipe.tokens, seed)
    ids = tokenizer.convert_tokens_to_ids
    s = SimpleNamespace(**getattr(recipe, size))  # the tiny or full dimensions
    s.text = {"vocab_size": len(tokenizer), **s.text}  # the full sizes keep the real vocab size
    config = getattr(transformers, recipe.config_class)(**_token_ids(recipe.config(s), ids))
    parts = {"image_processor": getattr(transformers, recipe.image_processor_class)(**recipe.image(s))}
    if recipe.video_processor_class:
        parts["video_processor"] = getattr(transformers, recipe.video_processor_class)(**recipe.image(s))
    processor = getattr(transformers, recipe.processor_class)(
        tokenizer=tokenizer, chat_template=recipe.template, **parts, **recipe.processor(s)
    )
    # Truncation/warnings in the tokenizer should know the model's real context.
    processor.tokenizer.model_max_length = config.get_text_config().max_position_embeddings
    generation = transformers.GenerationConfig(**_token_ids(recipe.generation, ids))
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
    recipe = RECIPES[arch]
    if size == "full" and recipe.too_big:
        raise ValueError(
            f"{arch} full size ({recipe.too_big}) is too big to build for "
            f"CPU benchmarks; use build_config({arch!r}, size='full') to inspect its shape"
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
    if size == "tiny" and recipe.widen_init:
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
