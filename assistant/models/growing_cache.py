"""A transformers ``DynamicCache`` whose layers keep their keys/values in a buffer with room to
grow, written in place.

transformers' ``DynamicLayer`` appends each new token with ``torch.cat``: every decoded token
copies the whole cache of every layer. After a photo (a prompt of 1-2k tokens) that copy is most
of the cost of a token on CPU. Here a layer writes the new token into spare room at the end of
its buffer, and grows the buffer by a block of tokens (or doubling) only when it is full, as
llama.cpp's preallocated cache does. ``keys``/``values`` stay what transformers expects: tensors
``[batch, heads, length, head_dim]`` (views of the buffer), so cropping, copying (``deepcopy``)
and everything reading them work as before.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

GROW_TOKENS = 256  # spare room added when a buffer is full (at least; it also doubles)


class GrowingLayer(DynamicLayer):
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None
        self._length = 0

    def _adopt(self) -> None:
        """Take ``keys``/``values`` as the buffer when something replaced them (a crop is fine)."""
        buffer = getattr(self, "_key_buffer", None)
        if buffer is not None and self.keys is not None and self.keys.data_ptr() == buffer.data_ptr():
            self._length = self.keys.shape[-2]
            return
        self._key_buffer, self._value_buffer = self.keys, self.values
        self._length = 0 if self.keys is None or self.keys.numel() == 0 else self.keys.shape[-2]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self._adopt()
        start, new = self._length, key_states.shape[-2]
        end = start + new
        keys, values = self._key_buffer, self._value_buffer
        if keys is None or values is None or keys.numel() == 0 or end > keys.shape[-2]:
            room = max(end + GROW_TOKENS, 2 * (keys.shape[-2] if keys is not None and keys.numel() else 0))
            keys, values = self._grown(keys, key_states, room), self._grown(values, value_states, room)
            self._key_buffer, self._value_buffer = keys, values
        keys[..., start:end, :] = key_states
        values[..., start:end, :] = value_states
        self._length = end
        self.keys, self.values = keys[..., :end, :], values[..., :end, :]
        return self.keys, self.values

    def _grown(self, old: torch.Tensor | None, like: torch.Tensor, room: int) -> torch.Tensor:
        shape = (*like.shape[:-2], room, like.shape[-1])
        buffer = torch.empty(shape, dtype=like.dtype, device=like.device)
        if old is not None and old.numel() and self._length:
            buffer[..., : self._length, :] = old[..., : self._length, :]
        return buffer

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        self._length = 0
        super().reset()

    @property
    def buffer_bytes(self) -> int:
        """Bytes the buffers take (spare room included)."""
        buffers = (getattr(self, "_key_buffer", None), getattr(self, "_value_buffer", None))
        return sum(int(b.nbytes) for b in buffers if b is not None)


class GrowingCache(DynamicCache):
    """A config-less ``DynamicCache`` (every layer keeps all its tokens, so it can be cropped)
    made of :class:`GrowingLayer`."""

    def __init__(self) -> None:
        Cache.__init__(self, layer_class_to_replicate=GrowingLayer)
