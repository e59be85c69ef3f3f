"""Typed errors raised inside the engine.

Every boundary (CLI, web page, HTTP API) translates these into its own shape once: the CLI
prints ``error: …`` and exits 2, the page shows a toast, the API answers a 4xx/5xx JSON error.
The message of each error is written for the person who caused it.
"""


class AssistantError(Exception):
    """Base class: a problem a user can understand and act on."""

    http_status = 400
    code = "invalid_request"


class MediaError(AssistantError):
    """An image or audio file that cannot be used (wrong type, corrupt, too large…)."""

    code = "invalid_media"


class InvalidParams(AssistantError):
    """Generation parameters or a request that break a documented rule.

    ``param`` names the generation option at fault (the engine's name, e.g. ``max_new_tokens``)
    and ``rule`` says what is wrong with it, so each boundary can name it in its own words.
    """

    code = "invalid_params"

    def __init__(self, message: str, *, param: str | None = None, rule: str | None = None):
        super().__init__(message)
        self.param, self.rule = param, rule

    @classmethod
    def for_param(cls, param: str, rule: str) -> "InvalidParams":
        return cls(f"{param} {rule}", param=param, rule=rule)


class ModelUnavailable(AssistantError):
    """The chat or speech model cannot be loaded or reached."""

    http_status = 503
    code = "model_unavailable"


class GenerationFailed(AssistantError):
    """The model failed while generating (out of memory, backend error…)."""

    http_status = 500
    code = "generation_failed"
