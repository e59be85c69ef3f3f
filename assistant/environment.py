"""The quiet environment, named once: no analytics, no telemetry (the app, the CLI), and for
tests and benchmarks also no hub and no progress chatter."""

from __future__ import annotations

import os
from collections.abc import Mapping

QUIET = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
# Tests and benchmarks (and the servers they start): offline on purpose, nothing on the console.
QUIET_OFFLINE = {
    **QUIET,
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


def quiet(variables: Mapping[str, str] = QUIET) -> None:
    """Set these variables where the caller has not chosen otherwise."""
    for name, value in variables.items():
        os.environ.setdefault(name, value)
