"""Clips and documents: from the file to model-ready tensors, against the model's own prefill.

Video: a 60-s 1080p H.264 clip with an AAC sound track (made here with ffmpeg: a moving test
pattern with film-grain noise, so it compresses like a camera clip, ~10 Mbit/s). Our path is
``assistant.media.video.load_clip`` (PyAV decode, 16 frames sampled uniformly, FFmpeg downscale to
448 px, the sound track decoded to 16 kHz for Whisper) then the processor: Qwen2.5-VL-3B's video
path (the GPU default) and, for SmolVLM-256M (the CPU default, image-only), four frames as photos.
PDF: a 20-page text document (Letter); ``assistant.media.documents.load_document`` (open, page sizes,
the text layer of every page) then four pages rendered at 1024 px (what the model is sent) and
the processor. Each is compared with the prefill of the same input by the model's full-size
architecture (random weights; speed does not depend on their values), on the same CPU.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import Context, Goal, SectionResult, pyplot, spread, summary, table

QUESTION = "What happens in this clip?"
DOC_QUESTION = "Summarise this report."
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "unknown"
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return ", ".join(f for f in CPU_FLAGS if f in have) or "none of " + ", ".join(CPU_FLAGS)


def make_clip(cache: Path, quick: bool) -> Path:
    seconds, (w, h) = (6, (640, 360)) if quick else (60, (1920, 1080))
    path = cache / "clips" / f"pattern-{seconds}s-{h}p.mp4"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={w}x{h}:rate=30:duration={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=220:duration={seconds}:sample_rate=48000",
            "-vf",
            "noise=alls=12:allf=t,format=yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-b:v",
            "10M",
            "-g",
            "60",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-shortest",
            str(tmp),
        ],
        check=True,
        capture_output=True,
    )
    tmp.replace(path)
    return path


def make_pdf(cache: Path, pages: int) -> Path:
    from tests.pdf_samples import text_pdf  # the tests' writer: real text layer, Helvetica

    path = cache / "documents" / f"report-{pages}p.pdf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        body = [
            "\n".join(
                f"Section {n}.{line}: quarterly figures, risks and the plan for the next period."
                for line in range(1, 30)
            )
            for n in range(1, pages + 1)
        ]
        path.write_bytes(text_pdf(body))
    return path


def video_inputs(processor, clip) -> Any:
    from assistant.conversation import Message, VideoAttachment
    from assistant.models.video_inputs import video_options

    conversation = [
        {
            "role": "user",
            "content": [{"type": "video", "video": list(clip.frames)}, {"type": "text", "text": QUESTION}],
        }
    ]
    options = video_options([Message("user", QUESTION, (VideoAttachment(clip),))])
    return processor.apply_chat_template(
        conversation,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        **options,
    )


def image_inputs(processor, images, text) -> Any:
    content: list[dict] = [{"type": "image", "image": im} for im in images]
    content.append({"type": "text", "text": text})
    return processor.apply_chat_template(
        [{"role": "user", "content": content}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )


def timed(fn, reps: int) -> tuple[dict, Any]:
    times, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return summary(times), out


def prefill(model, inputs, reps: int) -> dict:
    import torch

    def once():
        with torch.inference_mode():
            model(**inputs, use_cache=False, logits_to_keep=1)

    return timed(once, reps)[0]


def plot(path: Path, bars: list[tuple[str, float, float | None]]) -> None:
    """Ours vs the model's prefill, per input (log scale: they differ by orders of magnitude)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    names = [b[0] for b in bars]
    ys = range(len(bars))
    ax.barh([y + 0.2 for y in ys], [b[1] * 1000 for b in bars], height=0.4, label="ours: file → tensors")
    ax.barh(
        [y - 0.2 for y in ys],
        [(b[2] or 0) * 1000 for b in bars],
        height=0.4,
        label="model prefill (same input)",
    )
    ax.set_yticks(list(ys), names)
    ax.set_xscale("log")
    ax.set_xlabel("ms (log scale)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(ctx: Context) -> SectionResult:

    import torch

    from assistant.media import documents, video
    from assistant.models.loading import cap_processor_upscaling, inference_thread, resolve_dtype
    from assistant.settings import Settings
    from bench.common import chat_model_dir, quiet_transformers
    from tools.random_models import build_config, build_parts

    quiet_transformers()
    settings = Settings()
    size = "tiny" if ctx.quick else "full"
    reps = 1 if ctx.quick else 3
    worker = inference_thread("bench-documents")  # all torch work on one thread, as the engine does
    on_worker = lambda fn, *a: worker.submit(fn, *a).result()  # noqa: E731
    data: dict[str, Any] = {"cpu_flags": cpu_flags()}
    rows: list[list[Any]] = []

    # ---- video: decode, sample, downscale, sound track
    clip_path = make_clip(ctx.cache, ctx.quick)
    ctx.log(f"clip {clip_path.name}: {clip_path.stat().st_size / 2**20:.1f} MB")

    def load(with_audio: bool):
        return video.load_clip(
            clip_path,
            max_bytes=settings.max_video_bytes,
            max_frames=settings.video_frames,
            fps=settings.video_fps,
            max_side=settings.video_max_side,
            with_audio=with_audio,
        )

    decode, clip = timed(lambda: load(False), reps)
    decode_audio, clip = timed(lambda: load(True), reps)
    data["video"] = {"decode_sample": decode, "with_sound": decode_audio, "frames": len(clip.frames)}
    qwen_processor = build_parts("qwen2_5_vl", size=size)[0]
    qwen_proc, qwen_in = on_worker(timed, lambda: video_inputs(qwen_processor, clip), reps)
    smol_model_dir = chat_model_dir(ctx.cache, "idefics3", size)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    smol_processor = AutoProcessor.from_pretrained(smol_model_dir)
    cap_processor_upscaling(smol_processor, settings.image_max_side)
    frames, note = video.frames_as_images(clip, settings.video_frames_as_images)
    smol_proc, smol_in = on_worker(
        timed, lambda: image_inputs(smol_processor, frames, f"{note}\n\n{QUESTION}"), reps
    )
    dtype = resolve_dtype("auto", "cpu")  # what the engine loads here (bf16 with AVX512-BF16/AMX)
    data["dtype"] = str(dtype).removeprefix("torch.")
    smol = on_worker(lambda: AutoModelForImageTextToText.from_pretrained(smol_model_dir, dtype=dtype).eval())
    smol_prefill = on_worker(prefill, smol, smol_in, reps)
    data["video"].update(qwen_processor=qwen_proc, smol_processor=smol_proc, smol_prefill=smol_prefill)
    data["video"]["qwen_tokens"] = int(qwen_in["input_ids"].shape[-1])
    data["video"]["smol_tokens"] = int(smol_in["input_ids"].shape[-1])
    smol_total = decode_audio["median"] + smol_proc["median"]
    rows.append(
        [
            f"60-s 1080p clip → SmolVLM-256M ({len(frames)} frames as photos, {data['video']['smol_tokens']} tokens)",
            spread(decode_audio, 1000, 0),
            spread(smol_proc, 1000, 0),
            f"{smol_total * 1000:.0f}",
            spread(smol_prefill, 1000, 0),
            f"{smol_total / smol_prefill['median']:.2g}x",
        ]
    )

    # Qwen2.5-VL-3B's own prefill of the same 16-frame video: ~7 GB of bf16 weights, one run.
    qwen_prefill = None
    if not ctx.quick and ctx.left() > 120:
        try:
            config = build_config("qwen2_5_vl", size=size)

            def build_qwen():
                torch.manual_seed(0)
                model = AutoModelForImageTextToText.from_config(config, dtype=dtype).eval()
                return model

            started = time.perf_counter()
            qwen = on_worker(build_qwen)
            ctx.log(f"Qwen2.5-VL-3B shape built in {time.perf_counter() - started:.0f} s")
            qwen_prefill = on_worker(prefill, qwen, qwen_in, 1)
            del qwen
        except (RuntimeError, MemoryError) as exc:
            ctx.log(f"Qwen2.5-VL-3B prefill not measured: {exc}")
    data["video"]["qwen_prefill"] = qwen_prefill
    qwen_total = decode_audio["median"] + qwen_proc["median"]
    rows.append(
        [
            f"60-s 1080p clip → Qwen2.5-VL-3B video path ({len(clip.frames)} frames, {data['video']['qwen_tokens']} tokens)",
            spread(decode_audio, 1000, 0),
            spread(qwen_proc, 1000, 0),
            f"{qwen_total * 1000:.0f}",
            spread(qwen_prefill, 1000, 0) if qwen_prefill else "not measured",
            f"{qwen_total / qwen_prefill['median']:.2g}x" if qwen_prefill else "–",
        ]
    )

    # ---- PDF: open, text layer, render the pages sent, processor
    pdf_path = make_pdf(ctx.cache, 4 if ctx.quick else 20)
    opened, doc = timed(lambda: documents.load_document(pdf_path), reps)
    shown = documents.pages_to_show(doc, DOC_QUESTION, settings.document_page_images)
    rendered, pages = timed(
        lambda: documents.render_pages(doc, shown, max_side=settings.image_max_side), reps
    )
    render_all, _ = timed(
        lambda: documents.render_pages(doc, range(1, doc.page_count + 1), max_side=settings.image_max_side), 1
    )
    text = documents.for_model(doc, shown, settings.document_max_chars)
    pdf_proc, pdf_in = on_worker(
        timed,
        lambda: image_inputs(smol_processor, [im for _, im in pages], f"{text}\n\n{DOC_QUESTION}"),
        reps,
    )
    context = smol.config.get_text_config().max_position_embeddings
    tokens = int(pdf_in["input_ids"].shape[-1])
    if tokens > context:  # SmolVLM's context is 8k: cut the text as the engine's context cap would
        text = documents.for_model(doc, shown, context)
        pdf_proc, pdf_in = on_worker(
            timed,
            lambda: image_inputs(smol_processor, [im for _, im in pages], f"{text}\n\n{DOC_QUESTION}"),
            reps,
        )
        tokens = int(pdf_in["input_ids"].shape[-1])
    pdf_prefill = on_worker(prefill, smol, pdf_in, reps)
    pdf_total = opened["median"] + rendered["median"] + pdf_proc["median"]
    data["pdf"] = {
        "pages": doc.page_count,
        "shown": shown,
        "open_text": opened,
        "render_shown": rendered,
        "render_all": render_all,
        "processor": pdf_proc,
        "prefill": pdf_prefill,
        "tokens": tokens,
    }
    rows.append(
        [
            f"{doc.page_count}-page PDF → SmolVLM-256M ({len(pages)} pages as photos + text, {tokens} tokens)",
            f"{spread(opened, 1000, 0)} + {spread(rendered, 1000, 0)}",
            spread(pdf_proc, 1000, 0),
            f"{pdf_total * 1000:.0f}",
            spread(pdf_prefill, 1000, 0),
            f"{pdf_total / pdf_prefill['median']:.2g}x",
        ]
    )
    worker.shutdown(wait=True)

    ratios = [smol_total / smol_prefill["median"], pdf_total / pdf_prefill["median"]]
    if qwen_prefill:
        ratios.append(qwen_total / qwen_prefill["median"])
    worst = max(ratios)
    plot(
        ctx.out / "bench-documents.png",
        [
            ("clip → SmolVLM", smol_total, smol_prefill["median"]),
            ("clip → Qwen2.5-VL", qwen_total, qwen_prefill["median"] if qwen_prefill else None),
            ("PDF → SmolVLM", pdf_total, pdf_prefill["median"]),
        ],
    )
    goal = Goal(
        "clip / PDF → model-ready tensors vs the model's own prefill (CPU)",
        "≤ 1x",
        f"{worst:.2f}x (worst of {len(ratios)})",
        worst <= 1.0,
        "decode + sample + sound track + processor, or open + text + render + processor",
    )
    body = "\n\n".join(
        [
            "Times in ms, median (min–max) of "
            + (f"{reps} runs" if reps > 1 else "one run")
            + "; the model's prefill is one forward pass over the same tensors (no generation). "
            f"CPU flags that matter here: {data['cpu_flags']}; weights in {data['dtype']}, as the engine "
            "loads them on this CPU (`--dtype auto`).",
            table(
                [
                    "input → model",
                    "decode / open + render",
                    "processor",
                    "ours in all",
                    "model prefill",
                    "ours ÷ prefill",
                ],
                rows,
            ),
            "![clip and PDF preparation against the model's prefill](bench-documents.png)",
            f"- Clip decoding: {spread(decode, 1000, 0)} ms without the sound track, "
            f"{spread(decode_audio, 1000, 0)} ms with it ({len(clip.frames)} frames sampled at "
            f"{settings.video_fps:g}/s up to {settings.video_frames}, downscaled to {settings.video_max_side} px).",
            f"- PDF: rendering all {doc.page_count} pages at {settings.image_max_side} px takes "
            f"{spread(render_all, 1000, 0)} ms; only the {len(shown)} pages sent are rendered.",
        ]
    )
    return SectionResult(
        "documents", "3b. Clips and documents: file to model-ready tensors", body, [goal], data
    )
