"""The CPU decode attention: the same numbers as transformers' SDPA function, for one query and
grouped key/value heads; the same greedy replies from tiny real models; SDPA itself for the rest."""

from __future__ import annotations

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from assistant.models.cpu_attention import decode_attention


class Layer(torch.nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("heads, kv_heads", [(9, 3), (4, 4), (8, 1)])
def test_one_query_matches_sdpa(dtype, tolerance, heads, kv_heads):
    torch.manual_seed(0)
    q = torch.randn(1, heads, 1, 64, dtype=dtype)
    k, v = (torch.randn(1, kv_heads, 700, 64, dtype=dtype) for _ in range(2))
    layer = Layer(heads // kv_heads)
    ours, _ = decode_attention(layer, q, k, v, None, scaling=0.125)
    theirs, _ = sdpa_attention_forward(layer, q, k, v, None, scaling=0.125)
    assert ours.shape == theirs.shape == (1, 1, heads, 64)
    assert (ours.float() - theirs.float()).abs().max() < tolerance


def test_anything_but_a_plain_decode_step_is_sdpa_itself():
    torch.manual_seed(1)
    layer = Layer(3)
    prompt = torch.randn(1, 9, 5, 64)  # the prompt: 5 queries
    k, v = (torch.randn(1, 3, 5, 64) for _ in range(2))
    assert torch.equal(
        decode_attention(layer, prompt, k, v, None)[0], sdpa_attention_forward(layer, prompt, k, v, None)[0]
    )
    mask = torch.zeros(1, 1, 1, 5)  # a mask (padding, a sliding window): SDPA's own path
    one = prompt[:, :, :1]
    assert torch.equal(
        decode_attention(layer, one, k, v, mask)[0], sdpa_attention_forward(layer, one, k, v, mask)[0]
    )


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["idefics3", "qwen2_5_vl", "llava", "gemma3"])
def test_tiny_models_reply_as_with_sdpa(arch, tmp_path_factory):
    """Loaded on CPU, a model decodes with this attention, and its greedy reply to a photo is
    the reply the same weights give with plain SDPA."""
    import numpy as np
    from PIL import Image

    from assistant.conversation import ImageAttachment, Message
    from assistant.models import cpu_attention
    from assistant.models.base import ChatRequest
    from assistant.models.local import LocalChatModel
    from assistant.options import GenerationParams
    from tools.random_models import build

    path = str(build(arch, tmp_path_factory.getbasetemp() / f"tiny-{arch}"))
    model = LocalChatModel.load(path, image_max_side=128, dtype="float32", prefix_cache_bytes=0)
    assert model.model.config._attn_implementation == cpu_attention.NAME
    photo = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    request = ChatRequest(
        [Message("user", "What is this?", (ImageAttachment(photo),))],
        GenerationParams(max_new_tokens=12, min_new_tokens=12, temperature=0),
    )

    def reply() -> str:
        return "".join(i for i in model.stream(request) if isinstance(i, str))

    ours = reply()
    model.worker.submit(model.model.set_attn_implementation, "sdpa").result()
    assert reply() == ours, arch


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["idefics3", "llava", "gemma3"])
def test_patch_convs_run_channels_last_with_the_same_numbers(arch, tmp_path_factory):
    """The engine loads vision towers' patch convs channels-last on CPU (their output is then
    laid out contiguously for all the tower's layers); the first-step logits are the ones a
    channels-first conv gives."""
    import numpy as np
    from PIL import Image

    from assistant.conversation import ImageAttachment, Message
    from assistant.models.base import ChatRequest
    from assistant.models.local import LocalChatModel
    from assistant.options import GenerationParams
    from tools.random_models import build

    path = str(build(arch, tmp_path_factory.getbasetemp() / f"tiny-{arch}"))
    model = LocalChatModel.load(path, image_max_side=128, dtype="float32", prefix_cache_bytes=0)
    convs = [m for m in model.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs), arch
    photo = Image.fromarray(np.random.default_rng(4).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    request = ChatRequest(
        [Message("user", "What is this?", (ImageAttachment(photo),))],
        GenerationParams(max_new_tokens=1, temperature=0),
    )
    model.record_first_logits = True
    list(model.stream(request))
    engine = model.first_logits

    def channels_first():
        for conv in convs:
            conv.to(memory_format=torch.contiguous_format)
            conv.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))

    model.worker.submit(channels_first).result()
    list(model.stream(request))
    assert torch.allclose(engine, model.first_logits, atol=1e-5), arch
