"""Work done ahead of need gives way to a waiting turn: the model stops between two layers."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager


class GaveWay(Exception):
    """Raised between two layers when a read-ahead's ``give_way`` says so."""


@contextmanager
def stops_between_layers(model, give_way: Callable[[], bool] | None):
    """While inside, every layer of ``model`` (each entry of its ``nn.ModuleList``s: the vision
    tower's and the language model's) first asks ``give_way`` and raises :class:`GaveWay` when
    it says True. On the inference thread only: no other work sees the hooks."""
    if give_way is None:
        yield
        return
    from torch import nn

    def check(module, args):
        if give_way():
            raise GaveWay

    layers = [layer for module in model.modules() if isinstance(module, nn.ModuleList) for layer in module]
    handles = [layer.register_forward_pre_hook(check) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
