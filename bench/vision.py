"""The vision tower alone: the cost of a photo's first turn, and what makes it cheaper.

SmolVLM-256M shape (random weights), loaded as the engine loads it (its dtype, then the engine's
``sdpa_cpu_decode`` attention, which sends every call of more than one query — all of the vision
tower's — to transformers' own SDPA function). One 1024-px photo through the processor's chat
template (5 tiles of 512 px once upscaling is capped as the app caps it), then only the vision
path the model runs in prefill, ``model.model.get_image_features`` (tower + connector), timed
under ``torch.inference_mode`` in these variants, interleaved (ABBA order across repetitions):

- as the engine runs it (SDPA, the patch-embedding conv channels-last:
  ``assistant.models.loading.channels_last_patch_convs``);
- eager attention in the vision tower (``vision_model.set_attn_implementation("eager")``);
- a channels-first conv, as transformers loads it (what the engine did before);
- ``torch.compile(vision_model, dynamic=False)`` — full runs only, and only with the budget for
  it: its compile time is its own column (a first-turn cost a user pays once), and whether a
  photo with another tile count recompiles is checked (``fail_on_recompile``) and timed.

Each variant's output (the connector's image features) is compared with the engine's one, and
the share of a whole first-turn prefill (``model(**inputs)``) the vision path takes is measured.
``BENCH_VISION_COMPILE=1`` also compiles in quick mode (to check that path on tiny models).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from bench.common import (
    ROOT,
    Context,
    Goal,
    SectionResult,
    chat_model_dir,
    machine,
    pyplot,
    spread,
    summary,
    table,
)

QUESTION = "Describe this picture in detail."
LABELS = {
    "loaded": "the engine (SDPA, channels-last conv)",
    "eager": "eager attention",
    "plain_conv": "channels-first conv (as transformers loads it)",
    "compiled": "torch.compile (dynamic=False)",
}
CLEAR_WIN = 0.95  # a variant wins only at ≤ 0.95× the engine (median) and faster in every repetition
COMPILE_NEEDS_S = 150  # budget left before compiling is tried (compile takes minutes on 2 cores)


def _inputs(processor, image):
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}
    ]
    return processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


def _features(model, inputs):
    """The vision path of prefill: tower + connector, as ``Idefics3Model.forward`` calls it."""
    import torch

    with torch.inference_mode():
        out = model.model.get_image_features(
            pixel_values=inputs["pixel_values"], pixel_attention_mask=inputs.get("pixel_attention_mask")
        )
    return torch.cat(list(out.pooler_output), dim=0)


def _timed(fn):
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


# -- the variants, each a context around the same loaded model --------------------------------


@contextlib.contextmanager
def _as_loaded(model):
    yield


@contextlib.contextmanager
def _eager(model):
    vision = model.model.vision_model
    before = vision.config._attn_implementation
    vision.set_attn_implementation("eager")
    try:
        yield
    finally:
        vision.set_attn_implementation(before)


@contextlib.contextmanager
def _plain_conv(model):
    """Undo the engine's channels-last patch conv for the call (this hook runs after its own)."""
    import torch

    conv = model.model.vision_model.embeddings.patch_embedding
    conv.to(memory_format=torch.contiguous_format)
    hook = conv.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        hook.remove()
        conv.to(memory_format=torch.channels_last)


def _compiled_context(compiled):
    @contextlib.contextmanager
    def swap(model):
        original = model.model.vision_model
        model.model.vision_model = compiled
        try:
            yield
        finally:
            model.model.vision_model = original

    return swap


def _attention_seen(model, inputs, variant) -> dict:
    """What the first vision attention layer is really given: implementation and mask."""
    layer = model.model.vision_model.encoder.layers[0].self_attn
    seen: dict = {}

    def hook(_module, args, kwargs):
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        seen["implementation"] = layer.config._attn_implementation
        seen["mask"] = (
            None if mask is None else f"{tuple(mask.shape)} {str(mask.dtype).removeprefix('torch.')}"
        )

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with variant(model):
            _features(model, inputs)
    finally:
        handle.remove()
    return seen


def _graph_breaks() -> int:
    from torch._dynamo.utils import counters

    return int(sum(counters["graph_break"].values()))


def _unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@contextlib.contextmanager
def _cold():
    """Inductor's on-disk caches would turn a second run's compile into a load: measure the cold one."""
    import warnings

    import torch

    with warnings.catch_warnings(), torch.compiler.config.patch(force_disable_caches=True):
        warnings.filterwarnings("ignore", message=".*force_disable_caches.*")
        yield


def _recompile(model, wide, info: dict, variant, ctx: Context) -> None:
    """Time the recompile a photo of another tile count costs, if the budget has room for it."""
    if not info.get("recompiles_on_tile_count"):
        return
    if ctx.left() < info["compile_s"] * 1.2:
        info["recompile_skipped"] = f"only {ctx.left():.0f} s of the budget left"
        return
    with _cold(), variant(model):
        info["recompile_s"], _ = _timed(lambda: _features(model, wide))
    with variant(model):
        info["after_recompile_s"], _ = _timed(lambda: _features(model, wide))
    ctx.log(f"vision: recompiled for {wide['pixel_values'].shape[1]} tiles in {info['recompile_s']:.1f} s")


def _compile(model, inputs, wide, ctx: Context) -> dict:
    """Compile the vision tower; time the compile, look for graph breaks and for a recompile when
    the tile count changes. Any failure is a finding, not a crash."""
    import torch

    info: dict = {"tried": True, "caches": "off (a cold compile: what the first start pays)"}
    breaks = _graph_breaks()
    try:
        compiled = torch.compile(model.model.vision_model, dynamic=False)
        variant = _compiled_context(compiled)
        with _cold(), variant(model):
            info["compile_s"], first = _timed(lambda: _features(model, inputs))
        info["graph_breaks"] = _graph_breaks() - breaks
        info["variant"], info["first_output"] = variant, first
        ctx.log(f"vision: compiled in {info['compile_s']:.1f} s, {info['graph_breaks']} graph breaks")
        with variant(model):
            try:
                with torch.compiler.set_stance("fail_on_recompile"):
                    _features(model, wide)
                info["recompiles_on_tile_count"] = False
            except Exception as exc:  # dynamo raises when a recompile would be needed
                message = str(exc).strip()
                if "recompil" not in message.lower():
                    raise
                info["recompiles_on_tile_count"] = True
                info["recompile_reason"] = " ".join(message.splitlines()[:4])[:600]
    except Exception as exc:
        info["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc) else ''}"
        ctx.log(f"vision: torch.compile failed: {info['error']}")
    return info


# -- the section -------------------------------------------------------------------------------


def run(ctx: Context) -> SectionResult:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from assistant.models.loading import cap_processor_upscaling, cpu_supports_bf16, prepare_for_inference
    from bench.gpu import photo_1024

    size = "tiny" if ctx.quick else "full"
    reps = 1 if ctx.quick else 5
    prefill_reps = 1 if ctx.quick else 2
    want_compile = not ctx.quick or os.environ.get("BENCH_VISION_COMPILE") == "1"

    model_dir = chat_model_dir(ctx.cache, "idefics3", size)
    dtype = torch.bfloat16 if cpu_supports_bf16() else torch.float32
    load_s, model = _timed(lambda: AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype))
    picked = model.config._attn_implementation
    prepare_for_inference(model, "cpu")  # what the engine does next: attention, channels-last conv
    processor = AutoProcessor.from_pretrained(model_dir)
    cap_processor_upscaling(processor, 1024)
    photo = photo_1024()
    inputs = _inputs(processor, photo)
    wide = _inputs(processor, photo.crop((0, 0, photo.width, photo.width * 2 // 5)))  # fewer tiles
    tiles, wide_tiles = int(inputs["pixel_values"].shape[1]), int(wide["pixel_values"].shape[1])
    vision = model.model.vision_model
    ctx.log(
        f"vision: {size} model in {str(dtype).removeprefix('torch.')}, loaded in {load_s:.1f} s; transformers picked "
        f"{picked}, vision tower runs {vision.config._attn_implementation}; {tiles} tiles "
        f"{tuple(inputs['pixel_values'].shape[-2:])}, {inputs['input_ids'].shape[-1]} prompt tokens; "
        f"{torch.get_num_threads()} threads"
    )

    variants = {"loaded": _as_loaded, "eager": _eager, "plain_conv": _plain_conv}
    first_s, outputs, errors, seen = {}, {}, {}, {}
    for key, variant in list(variants.items()):
        try:
            with variant(model):
                first_s[key], outputs[key] = _timed(lambda: _features(model, inputs))
            seen[key] = _attention_seen(model, inputs, variant)
        except Exception as exc:
            errors[key] = (
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc) else ''}"
            )
            ctx.log(f"vision: {LABELS[key]} failed: {errors[key]}")
            del variants[key]
        else:
            ctx.log(f"vision: {LABELS[key]}: first call {first_s[key]:.2f} s, attention {seen[key]}")
    if "loaded" not in variants:
        raise RuntimeError(f"the vision tower as the engine runs it failed: {errors.get('loaded')}")

    compile_info: dict = {"tried": False}
    if want_compile and (ctx.quick or ctx.left() > COMPILE_NEEDS_S):
        compile_info = _compile(model, inputs, wide, ctx)
        if "variant" in compile_info:
            variants["compiled"] = compile_info.pop("variant")
            outputs["compiled"] = compile_info.pop("first_output")
            first_s["compiled"] = compile_info["compile_s"]
        elif "error" in compile_info:
            errors["compiled"] = compile_info["error"]
    elif want_compile:
        compile_info["skipped"] = (
            f"only {ctx.left():.0f} s of the section's budget left (needs {COMPILE_NEEDS_S} s)"
        )
    else:
        compile_info["skipped"] = "quick mode"
    ctx.log(f"vision: compile: {compile_info}")

    reference = outputs["loaded"].float()
    max_diff = {k: float((o.float() - reference).abs().max()) for k, o in outputs.items()}
    scale = float(reference.abs().max())

    # -- interleaved repetitions: every variant, then the whole prefill in the first reps --------
    times: dict[str, list[float]] = {k: [] for k in variants}
    ratios: dict[str, list[float]] = {k: [] for k in variants if k != "loaded"}
    prefill: list[dict] = []
    rep_s: list[float] = []
    graphs = _unique_graphs()
    for rep in range(reps):
        if rep >= 2 and rep_s and ctx.left() < max(rep_s) * 1.2:
            ctx.log(f"vision: budget spent, stopping after {rep} repetitions")
            break
        started = time.perf_counter()
        order = list(variants) if rep % 2 == 0 else list(variants)[::-1]
        row = {}
        for key in order:
            with variants[key](model):
                row[key], _ = _timed(lambda: _features(model, inputs))
            times[key].append(row[key])
        for key in ratios:
            ratios[key].append(row[key] / row["loaded"])
        if rep < prefill_reps:
            with torch.inference_mode():
                whole, _ = _timed(lambda: model(**inputs))
            prefill.append({"prefill_s": whole, "vision_s": row["loaded"]})
        rep_s.append(time.perf_counter() - started)
        ctx.log(
            f"vision: rep {rep + 1}: "
            + ", ".join(f"{k} {row[k]:.3f} s" for k in variants)
            + (f"; whole prefill {prefill[-1]['prefill_s']:.2f} s" if rep < prefill_reps else "")
        )

    if compile_info.get("tried"):
        # 0: switching the other variants in and out between calls kept the compiled code valid
        compile_info["recompiles_during_reps"] = _unique_graphs() - graphs
    if "compiled" in variants:
        _recompile(model, wide, compile_info, variants["compiled"], ctx)

    # -- figures -------------------------------------------------------------------------------
    stats = {k: summary(v) for k, v in times.items()}
    ratio_stats = {k: summary(v) for k, v in ratios.items()}
    share = summary([p["vision_s"] / p["prefill_s"] for p in prefill])
    prefill_stats = summary([p["prefill_s"] for p in prefill])
    paired_vision = summary([p["vision_s"] for p in prefill])  # the calls of the reps with a prefill
    best = min(variants, key=lambda k: ratio_stats[k]["median"] if k != "loaded" else 1.0)
    best_ratio = ratio_stats[best]["median"] if best != "loaded" else 1.0
    clear = best != "loaded" and best_ratio <= CLEAR_WIN and ratio_stats[best]["max"] < 1.0
    # What costs nothing at start (compiling costs seconds per process and per tile count).
    free = [k for k in variants if k not in ("loaded", "compiled")]
    best_free = min(free, key=lambda k: ratio_stats[k]["median"]) if free else "loaded"
    free_win = (
        best_free != "loaded"
        and ratio_stats[best_free]["median"] <= CLEAR_WIN
        and ratio_stats[best_free]["max"] < 1.0
    )

    rows = []
    for key in LABELS:
        if key in variants:
            rows.append([
                LABELS[key],
                spread(stats[key], 1000, 0),
                "1" if key == "loaded" else spread(ratio_stats[key], 1, 3),
                f"{max_diff[key]:.3g}",
                f"{first_s[key]:.1f}" if key == "compiled" else f"{first_s[key]:.2f} (first call)",
            ])  # fmt: skip
        else:
            why = errors.get(key) or compile_info.get("skipped", "not run")
            rows.append([LABELS[key], "–", "–", "–", f"not measured: {why}"])

    cpu = machine()
    compile_note = _compile_sentence(compile_info, tiles, wide_tiles)
    if clear:
        verdict = (
            f"**{LABELS[best]}** wins: {best_ratio:.3f}× the engine's time (median of {len(ratios[best])} interleaved "
            f"pair{'s' if len(ratios[best]) != 1 else ''}, every one faster)"
        )
    else:
        verdict = (
            "**Nothing beats the engine's tower** by more than the noise: the best variant, "
            f"{LABELS[best]}, runs at {best_ratio:.3f}× its time"
            if best != "loaded"
            else "**Nothing beats the engine's tower**: every variant is slower"
        )
    if best == "compiled" and "compile_s" in compile_info:
        verdict += f", but compiling costs {compile_info['compile_s']:.0f} s once per process" + (
            " and again for every new tile count" if compile_info.get("recompiles_on_tile_count") else ""
        )
    layers = model.config.vision_config.num_hidden_layers
    part = "most" if share["median"] > 0.5 else "a part"
    findings = (
        f"On this {cpu['cpu']} ({cpu['cores']} cores, {str(dtype).removeprefix('torch.')}): {verdict}. "
        f"The vision path takes {share['median']:.0%} of a whole first-turn prefill "
        f"({paired_vision['median']:.2f} s of {prefill_stats['median']:.2f} s, the whole prompt's forward): {part} of turn 1's cost. "
        f"Eager attention {_compare(ratio_stats.get('eager'))}; a channels-first patch conv, as transformers loads it, "
        f"{_compare(ratio_stats.get('plain_conv'))}: the conv itself costs the same either way, but its output, flattened and "
        f"transposed to (patches, width), is then laid out transposed, and every op of the {layers} layers keeps that layout; "
        "from a channels-last conv it is contiguous (same numbers: max |Δ| 0). " + compile_note
    )
    goals = [
        Goal("vision tower", "the engine runs the fastest variant that costs nothing at start",
             f"engine {stats['loaded']['median']:.2f} s; best other: {LABELS[best_free]} {ratio_stats[best_free]['median']:.3f}×"
             + (f"; torch.compile {ratio_stats['compiled']['median']:.3f}× after a {compile_info['compile_s']:.0f}-s compile"
                if "compiled" in ratio_stats and "compile_s" in compile_info else ""),
             not free_win,
             "met; compiling is not worth its start-up cost for a few photos" if not free_win else
             f"missed: {LABELS[best_free]} is faster"),
        Goal("vision share of first-turn prefill", "report", f"{share['median']:.0%} ({paired_vision['median']:.2f} of "
             f"{prefill_stats['median']:.2f} s, {tiles} tiles)", None, "reported"),
    ]  # fmt: skip

    plot = ctx.out / "bench-vision.png"
    _plot(plot, variants, stats, prefill, compile_info)
    attention_line = "; ".join(
        f"{LABELS[k]}: `{v.get('implementation')}`, mask {v.get('mask') or 'none'}" for k, v in seen.items()
    )
    body = "\n\n".join([
        f"SmolVLM-256M shape (random weights, {str(dtype).removeprefix('torch.')}), loaded as the engine loads it (transformers "
        f"picks `{picked}`; the engine's `sdpa_cpu_decode` then sends the vision tower's calls, never one query, to SDPA). One "
        f"1024-px photo → {tiles} tiles of {inputs['pixel_values'].shape[-1]} px ({inputs['input_ids'].shape[-1]} prompt tokens). "
        f"Timed: `model.model.get_image_features` (tower + connector, what prefill runs for the photo) under "
        f"`torch.inference_mode`, {len(times['loaded'])} interleaved repetition{'s' if len(times['loaded']) != 1 else ''} (order reversed every other one) after one "
        "warm-up each; the ratio is the median of per-repetition ratios to the engine's call. Max |Δ| is the largest "
        f"difference of the image features from the engine's ones (their largest magnitude: {scale:.3g}).",
        table(["vision tower", "ms", "× the engine", "max |Δ|", "first call / compile s"], rows),
        "![vision tower variants](bench-vision.png)",
        findings,
        f"What the first attention layer is given (checked with a hook): {attention_line}.",
    ])  # fmt: skip
    return SectionResult(
        key="vision",
        title="2d. The vision tower alone: SDPA, channels-last, torch.compile",
        body=body,
        goals=goals,
        data={"dtype": str(dtype), "threads": torch.get_num_threads(), "tiles": tiles, "wide_tiles": wide_tiles, "picked_attention": picked,
              "attention_seen": seen, "times_s": times, "ratios": ratios, "first_call_s": first_s,
              "max_abs_diff": max_diff, "feature_scale": scale, "prefill": prefill, "vision_share": share,
              "compile": compile_info, "errors": errors, "best": best, "best_ratio": best_ratio, "clear_win": clear, "best_free": best_free},
    )  # fmt: skip


def _compare(s: dict | None) -> str:
    if not s or not s["n"]:
        return "was not measured"
    return f"runs at {s['median']:.3f}× ({s['min']:.3f}–{s['max']:.3f})"


def _compile_sentence(info: dict, tiles: int, wide_tiles: int) -> str:
    if not info.get("tried"):
        return f"torch.compile was not measured ({info.get('skipped', 'not run')})."
    if "error" in info and "compile_s" not in info:
        return f"torch.compile failed: `{info['error']}`."
    text = f"Compiling (inductor's caches off: a cold start) took {info['compile_s']:.1f} s, {info['graph_breaks']} graph breaks"
    if info.get("recompiles_during_reps"):
        text += f", {info['recompiles_during_reps']} recompiles while the variants took turns (their times include them)"
    text += ". "
    if info.get("recompiles_on_tile_count") is None:
        return text
    if not info["recompiles_on_tile_count"]:
        return text + f"A photo of {wide_tiles} tiles instead of {tiles} reused the compiled code."
    text += f"A photo of {wide_tiles} tiles instead of {tiles} needs a recompile (static shapes: the tile count is the batch)"
    if "recompile_s" in info:
        text += f": {info['recompile_s']:.1f} s, then {info['after_recompile_s']:.2f} s a call"
    elif "recompile_skipped" in info:
        text += f" (not timed: {info['recompile_skipped']})"
    return text + "."


def _plot(path, variants, stats, prefill, compile_info) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    keys = list(variants)
    medians = [stats[k]["median"] for k in keys]
    low = [stats[k]["median"] - stats[k]["min"] for k in keys]
    high = [stats[k]["max"] - stats[k]["median"] for k in keys]
    colors = {"loaded": "#4a7", "eager": "#888", "plain_conv": "#69c", "compiled": "#c74"}
    short = {"loaded": "the engine", "eager": "eager\nattention", "plain_conv": "channels-first\nconv",
             "compiled": "torch.compile"}  # fmt: skip
    left.bar([short[k] for k in keys], medians, yerr=[low, high], capsize=4, color=[colors[k] for k in keys])
    left.set(ylabel="s (median, min–max)", title="Vision tower + connector, one 1024-px photo")
    left.margins(y=0.18)
    if "compile_s" in compile_info and "compiled" in keys:
        i = keys.index("compiled")
        left.annotate(f"+{compile_info['compile_s']:.0f} s compile", (i, medians[i]), ha="center", va="bottom",
                      xytext=(0, 8), textcoords="offset points", fontsize=7)  # fmt: skip
    vision_s = summary([p["vision_s"] for p in prefill])["median"]  # the calls paired with the prefills
    whole = summary([p["prefill_s"] for p in prefill])["median"]
    right.bar(["first-turn prefill"], [vision_s], color="#4a7", label="vision tower + connector")
    right.bar(
        ["first-turn prefill"],
        [max(whole - vision_s, 0)],
        bottom=[vision_s],
        color="#ddd",
        label="text model",
    )
    right.set(ylabel="s", title="Share of the whole prefill")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":  # python -m bench.vision [--quick]: this section alone, printed
    from bench.common import log_to_stderr

    result = run(Context(quick="--quick" in sys.argv, cache=ROOT / ".cache" / "bench", out=ROOT / "docs",
                         command="python -m bench.vision", budget_s=300, log=log_to_stderr))  # fmt: skip
    print(result.body)
