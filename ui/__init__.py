"""The web page: ``build_ui(assistant, settings, store) -> gr.Blocks``. No model logic here."""

from ui.page import build_ui

__all__ = ["build_ui"]
