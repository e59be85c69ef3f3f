"""Where each image and clip sits in a prompt's tokens, for the prefix cache: which token spans
and which rows of the pixel tensors belong to which picture, the inputs left to run after a
reused prefix, and cutting a cache back to a length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assistant.models.prefix_cache import ImageSpan, image_digest

if TYPE_CHECKING:
    from assistant.models.local import LocalChatModel


def cut_back(kv: Any, length: int) -> None:
    """Crop every layer of a cache to ``length`` tokens. Not ``DynamicCache.crop``: that drops the
    same count from every layer, and after a forward stopped midway only the layers before the
    stop hold the new tokens."""
    for layer in kv.layers:
        extra = layer.get_seq_length() - length
        if extra > 0:
            layer.crop(-extra)


def cache_bytes(kv) -> int:
    """Bytes held by a DynamicCache's keys and values."""
    total = 0
    for layer in getattr(kv, "layers", ()):
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if tensor is not None and hasattr(tensor, "nbytes"):
                total += int(tensor.nbytes)
    return total


# Model inputs we know how to split per image; a processor returning anything else gets reuse of
# the text before its first image only (always correct).
TOKEN_INPUTS = {"input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids"}


VIDEO_INPUTS = {"pixel_values_videos", "video_grid_thw", "second_per_grid_ts"}


PIXEL_INPUTS = {"pixel_values", "pixel_attention_mask", "image_grid_thw", "image_sizes"}


@dataclass
class ImageLayout:
    """Each image's span of feature tokens in a prompt, and how many rows (Qwen patches) or
    tiles (Idefics3) of the pixel tensors belong to it."""

    spans: list[ImageSpan]  # every image's and clip's span, in prompt order (what the cache checks)
    units: list[int]
    first_image_token: int | None = None
    known: bool = True
    image_spans: list[ImageSpan] | None = None  # the images' own spans, where clips are in ``spans`` too
    video_spans: list[ImageSpan] = field(default_factory=list)
    video_units: list[int] = field(default_factory=list)  # Qwen: patch rows of each clip

    def usable(self, cached: int) -> int:
        """Cached tokens that may be reused: when the layout is unknown, none past the first image."""
        if not self.known and self.first_image_token is not None:
            return min(cached, self.first_image_token)
        return cached

    def inputs_after(self, inputs, cached: int) -> dict:
        """The model inputs to continue from ``cached`` tokens: pixels of the later images only."""
        out = self._videos_after(dict(inputs), cached)
        images = self.spans if self.image_spans is None else self.image_spans
        done = sum(1 for span in images if span.end <= cached) if self.known else 0
        if done == 0:
            return out
        if done == len(images):
            for key in PIXEL_INPUTS:
                out.pop(key, None)
            return out
        before = sum(self.units[:done])
        pixels = out["pixel_values"]
        if "image_grid_thw" in out:  # Qwen: patch rows of all images stacked
            out["pixel_values"], out["image_grid_thw"] = pixels[before:], out["image_grid_thw"][done:]
        elif pixels.dim() == 5:  # Idefics3 / SmolVLM: (batch, tiles, channels, height, width)
            out["pixel_values"] = pixels[:, before:]
            if "pixel_attention_mask" in out:
                out["pixel_attention_mask"] = out["pixel_attention_mask"][:, before:]
        else:  # LLaVA, Gemma 3: one row per image
            out["pixel_values"] = pixels[before:]
            if "image_sizes" in out:
                out["image_sizes"] = out["image_sizes"][done:]
        return out

    def _videos_after(self, out: dict, cached: int) -> dict:
        """Only the clips after ``cached`` tokens keep their patch rows (Qwen's video inputs)."""
        done = sum(1 for span in self.video_spans if span.end <= cached) if self.known else 0
        if done == 0:
            return out
        if done == len(self.video_spans):
            for key in VIDEO_INPUTS:
                out.pop(key, None)
            return out
        before = sum(self.video_units[:done])
        out["pixel_values_videos"] = out["pixel_values_videos"][before:]
        out["video_grid_thw"] = out["video_grid_thw"][done:]
        if "second_per_grid_ts" in out:
            out["second_per_grid_ts"] = out["second_per_grid_ts"][done:]
        return out


def _runs(positions: list[int]) -> list[tuple[int, int]]:
    runs: list[list[int]] = []
    for p in positions:
        if runs and runs[-1][1] == p:
            runs[-1][1] = p + 1
        else:
            runs.append([p, p + 1])
    return [(a, b) for a, b in runs]


def video_spans(config, ids: list[int], inputs) -> tuple[list[ImageSpan], list[int]] | None:
    """Each clip's span of video tokens and its patch rows, named by a hash of those pixels
    (Qwen-style inputs: one run of video tokens per clip, ``video_grid_thw`` per clip); None
    when the prompt does not look like that."""
    import hashlib

    token_id = getattr(config, "video_token_id", None)
    grid = inputs.get("video_grid_thw")
    pixels = inputs.get("pixel_values_videos")
    if token_id is None or grid is None or pixels is None:
        return None
    runs = _runs([i for i, t in enumerate(ids) if t == token_id])
    units = [int(n) for n in grid.prod(-1).tolist()]
    if len(runs) != len(units) or sum(units) != pixels.shape[0]:
        return None
    spans: list[ImageSpan] = []
    row = 0
    for (start, end), n in zip(runs, units, strict=True):
        h = hashlib.blake2b(digest_size=16)
        h.update(str(grid[len(spans)].tolist()).encode())
        h.update(pixels[row : row + n].float().cpu().numpy().tobytes())
        spans.append(ImageSpan(start, end, "video:" + h.hexdigest()))
        row += n
    return spans, units


def image_layout(chat: LocalChatModel, ids: list[int], inputs, images: Sequence[Any]) -> ImageLayout:
    config = chat.model.config
    if VIDEO_INPUTS & set(inputs.keys()):
        clips = video_spans(config, ids, inputs)
        plain = {k: v for k, v in inputs.items() if k not in VIDEO_INPUTS}
        pictures = image_layout(chat, ids, plain, images) if clips is not None else None
        if clips is None or pictures is None or not pictures.known:
            # Unknown: everything from the first clip or image on is computed again (two clips
            # with the same frame count have the same token ids).
            marks = {
                getattr(config, n, None) for n in ("video_token_id", "image_token_id", "image_token_index")
            }
            marks.discard(None)
            first = next((i for i, t in enumerate(ids) if t in marks), 0)
            return ImageLayout([ImageSpan(first, len(ids), f"video:{id(inputs)}")], [], first, known=False)
        spans = sorted([*pictures.spans, *clips[0]], key=lambda span: span.start)
        return ImageLayout(spans, pictures.units, spans[0].start, True, pictures.spans, clips[0], clips[1])
    if not images:
        return ImageLayout([], [])
    token_id = getattr(config, "image_token_id", None)
    if token_id is None:
        token_id = getattr(config, "image_token_index", None)
    positions = [i for i, t in enumerate(ids) if t == token_id] if token_id is not None else []
    unknown = ImageLayout(
        [ImageSpan(positions[0] if positions else 0, len(ids), f"unknown:{id(inputs)}")],
        [],
        positions[0] if positions else 0,
        known=False,
    )
    if not positions or set(inputs.keys()) - TOKEN_INPUTS - PIXEL_INPUTS:
        return unknown
    runs = _runs(positions)
    groups: list[list[tuple[int, int]]]
    if len(runs) == len(images):
        groups = [[run] for run in runs]
    else:
        # Idefics3 / SmolVLM: an image is its tiles' runs, then the global view after <global-img>.
        global_id = getattr(chat.processor, "global_image_token_id", None)
        groups, current = [], []
        for run in runs:
            current.append(run)
            if global_id is not None and run[0] > 0 and ids[run[0] - 1] == global_id:
                groups.append(current)
                current = []
        if current or len(groups) != len(images):
            return unknown
    pixels = inputs.get("pixel_values")
    if "image_grid_thw" in inputs:
        units = [int(n) for n in inputs["image_grid_thw"].prod(-1).tolist()]
    elif pixels is not None and pixels.dim() == 5:
        units = [len(g) for g in groups]
    elif pixels is not None and pixels.shape[0] == len(images):
        units = [1] * len(images)
    else:
        return unknown
    spans = [ImageSpan(g[0][0], g[-1][1], image_digest(im)) for g, im in zip(groups, images, strict=True)]
    return ImageLayout(spans, units, spans[0].start)


def positions_for_reuse(model, inputs) -> dict:
    """Position ids of the whole prompt, for models whose positions depend on the images (Qwen's
    3D RoPE). Without them generate continues from ``rope_deltas`` left by whatever ran last —
    another conversation's images — and a new image in the suffix fails outright."""
    from transformers.generation.utils import GenerationMixin

    own = type(model)._prepare_position_ids_for_generation
    if own is GenerationMixin._prepare_position_ids_for_generation:
        return {}  # plain positions: generate derives them from the attention mask
    return {"position_ids": model._prepare_position_ids_for_generation(inputs["input_ids"], dict(inputs))}
