"""Weight-only int8 on CPU: the layer computes what its int8 weights say on both paths (one
token, a prompt), and tiny real models quantized by the engine answer like their float selves."""

from __future__ import annotations

import pytest
import torch

from assistant.models.cpu_int8 import KERNEL_MAX_ROWS, Int8Linear, quantize_language_model


def _linear(k: int, n: int, bias: bool = True) -> torch.nn.Linear:
    torch.manual_seed(k * 7 + n)
    layer = torch.nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        layer.weight.normal_(0, 0.05)
        layer.weight[0, 0] = 0.9  # one outlier: its row's scale must not flatten the others
    return layer


def _reference(q: Int8Linear, x: torch.Tensor) -> torch.Tensor:
    """What the int8 weights mean, computed in float64."""
    weight = q.weight_int8.double() * q.scale.double()[:, None]
    out = x.double() @ weight.T
    return out if q.bias is None else out + q.bias.double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k, n", [(128, 96), (100, 30), (64, 1)])
@pytest.mark.parametrize("rows", [1, KERNEL_MAX_ROWS, KERNEL_MAX_ROWS + 1, 200])
def test_both_paths_compute_the_int8_weights(dtype, k, n, rows):
    layer = _linear(k, n)
    q = Int8Linear(layer, dtype)
    kernel = q.uses_kernel and rows <= KERNEL_MAX_ROWS
    # The kernel reads activations in bf16; a float32 prompt is computed in float32.
    tolerance = 3e-2 if dtype == torch.bfloat16 or kernel else 1e-4
    x = torch.randn(rows, k).to(dtype)
    out = q(x)
    assert out.dtype == dtype and out.shape == (rows, n)
    expected = _reference(q, x)
    scale = expected.abs().max().clamp(min=1)
    assert ((out.double() - expected).abs().max() / scale) < tolerance, (k, rows)


def test_inner_widths_the_kernel_cannot_take_use_the_widened_path():
    """The bf16 kernel crashes or returns NaN for an inner width like 100 or 578."""
    assert not Int8Linear(_linear(100, 32), torch.bfloat16).uses_kernel
    assert not Int8Linear(_linear(578, 32), torch.bfloat16).uses_kernel
    assert Int8Linear(_linear(576, 32), torch.bfloat16).uses_kernel
    assert not Int8Linear(_linear(100, 32), torch.float32).uses_kernel
    assert Int8Linear(_linear(128, 32), torch.float32).uses_kernel  # through bf16 activations
    out = Int8Linear(_linear(578, 32), torch.bfloat16)(torch.randn(1, 578).bfloat16())
    assert torch.isfinite(out).all()


def test_keeps_batch_dimensions_dtype_and_bias():
    layer = _linear(128, 64)
    q = Int8Linear(layer, torch.float32)
    x = torch.randn(2, 3, 128)
    assert q(x).shape == (2, 3, 64)
    assert torch.allclose(q(x)[1, 2], q(x[1, 2:3])[0], atol=1e-5)  # each row as if alone
    no_bias = Int8Linear(_linear(128, 64, bias=False), torch.float32)
    assert no_bias.bias is None and torch.allclose(no_bias(torch.zeros(1, 128)), torch.zeros(1, 64))


def test_nothing_of_the_loaded_layer_is_shared():
    """A view of the checkpoint (its bias in the same dtype) would keep the whole memory map of
    the file resident: a 3B model served from 12.8 GB instead of 5.7 GB."""
    layer = _linear(128, 64)
    q = Int8Linear(layer, torch.float32)
    originals = {layer.weight.untyped_storage().data_ptr(), layer.bias.untyped_storage().data_ptr()}
    assert not originals & {t.untyped_storage().data_ptr() for t in q.buffers()}


def test_quantization_error_is_small_against_the_float_layer():
    layer = _linear(512, 256)
    q = Int8Linear(layer, torch.float32)
    x = torch.randn(4, 512)
    exact, ours = layer(x), q(x)
    relative = (ours - exact).norm() / exact.norm()
    assert relative < 0.01, relative
    assert q.weight_int8.dtype == torch.int8 and q.weight_int8.abs().max() == 127


def test_only_the_language_model_is_swapped():
    model = torch.nn.Module()
    model.vision_tower = torch.nn.Sequential(torch.nn.Linear(64, 64))
    model.language_model = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64)
    )
    model.lm_head = torch.nn.Linear(64, 10)
    swapped = quantize_language_model(model, [r"vision_tower"], torch.float32)
    assert swapped == 3
    assert isinstance(model.vision_tower[0], torch.nn.Linear)
    assert all(
        isinstance(m, Int8Linear) for m in (model.language_model[0], model.language_model[2], model.lm_head)
    )


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["idefics3", "qwen2_5_vl", "llava", "gemma3"])
def test_tiny_models_load_int8_and_answer_like_float(arch, tmp_path_factory):
    """``--quantization int8`` on CPU: the engine swaps the language model's layers (vision tower
    untouched, no bitsandbytes), and the first-step logits stay close to the float model's."""
    import numpy as np
    from PIL import Image

    from assistant.conversation import ImageAttachment, Message
    from assistant.models.base import ChatRequest
    from assistant.models.local import LocalChatModel
    from assistant.options import GenerationParams
    from tools.random_models import build

    path = str(build(arch, tmp_path_factory.getbasetemp() / f"tiny-{arch}"))
    photo = Image.fromarray(np.random.default_rng(5).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    request = ChatRequest(
        [Message("user", "What is this?", (ImageAttachment(photo),))],
        GenerationParams(max_new_tokens=6, min_new_tokens=6, temperature=0),
    )
    logits = {}
    for quantization in ("none", "int8"):
        model = LocalChatModel.load(
            path, quantization=quantization, image_max_side=128, dtype="float32", prefix_cache_bytes=0
        )
        model.record_first_logits = True
        items = list(model.stream(request))
        assert items[-1].completion_tokens == 6
        logits[quantization] = model.first_logits.float()
        kinds = {
            type(m).__name__
            for name, m in model.model.named_modules()
            if "vision" in name or "visual" in name
        }
        assert "Int8Linear" not in kinds, "the vision tower must stay as loaded"
    assert model.info.quantization == "int8"
    assert any(isinstance(m, Int8Linear) for m in model.model.modules())
    assert not any("bitsandbytes" in type(m).__module__ for m in model.model.modules())
    diff = (logits["int8"] - logits["none"]).abs().max()
    spread = logits["none"].max() - logits["none"].min()
    assert diff / spread < 0.05, f"{arch}: max logit diff {diff:.4f} of a range {spread:.2f}"
