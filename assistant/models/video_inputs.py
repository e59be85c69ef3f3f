"""What a video-capable processor needs to read our clips: whether it reads video at all, and
the frames' metadata (we sampled them already)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from assistant.conversation import Message


def takes_video(processor) -> bool:
    """Whether a processor reads video itself: a video processor, a video placeholder token, and
    a chat template that places clips (the model's own capability, not a list of names)."""
    if getattr(processor, "video_processor", None) is None or not getattr(processor, "video_token", None):
        return False
    template = getattr(processor, "chat_template", None) or ""
    if isinstance(template, dict):
        template = " ".join(str(t) for t in template.values())
    return "video" in str(template)


def video_options(messages: Sequence[Message]) -> dict[str, Any]:
    """Processor options for the clips of a prompt: their frames were sampled already, and the
    processor is told when each one was taken."""
    clips = [clip for m in messages for clip in m.videos]
    if not clips:
        return {}
    return {"processor_kwargs": {"video_metadata": video_metadata(clips), "do_sample_frames": False}}


def video_metadata(clips: Sequence[Any]) -> list:
    """transformers' VideoMetadata for clips we sampled: frame count, rate, length, frame times."""
    from transformers.video_utils import VideoMetadata

    return [
        VideoMetadata(
            total_num_frames=len(clip.frames),
            fps=clip.sampled_fps,
            duration=clip.duration_s,
            frames_indices=list(range(len(clip.frames))),
            height=clip.frames[0].size[1],
            width=clip.frames[0].size[0],
        )
        for clip in clips
    ]
