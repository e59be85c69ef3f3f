"""Everything a user attaches, validated and normalised before it reaches a model.

Every problem with an upload becomes a :class:`MediaError` whose message names the file and
says what is wrong; nothing else escapes. Images come back as RGB ``PIL.Image`` no larger
than ``max_side``; audio comes back as mono float32 samples at ``sampling_rate``.

The modules, by job:

- :mod:`~assistant.media.source`: reading a path, bytes or file within a size cap; what a file
  is by its content (routing, serving); how limits are said
- :mod:`~assistant.media.images`: photos (:func:`load_image`)
- :mod:`~assistant.media.decode`: PyAV's stream cap and the one packet-decode loop
- :mod:`~assistant.media.audio`: recordings (:func:`load_audio`)
- :mod:`~assistant.media.video`: clips (``load_clip``, ``Clip``), imported on demand
- :mod:`~assistant.media.documents`: PDFs and text (``load_document``), imported on demand;
  PDFs are read by :mod:`~assistant.media.pdf_worker` processes

No torch here: the UI and API import this package and must stay light.
"""

from __future__ import annotations

from assistant.errors import MediaError
from assistant.media.audio import load_audio
from assistant.media.images import DECODES, DecodeBudget, load_image
from assistant.media.source import (
    TOO_LARGE,
    content_type,
    format_megapixels,
    format_seconds,
    format_size,
    kind_of,
    suffix_for,
)

__all__ = [
    "DECODES",
    "TOO_LARGE",
    "DecodeBudget",
    "MediaError",
    "content_type",
    "format_megapixels",
    "format_seconds",
    "format_size",
    "kind_of",
    "load_audio",
    "load_image",
    "suffix_for",
]
