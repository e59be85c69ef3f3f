"""Speech: real-time factor and word error rate of the embedded Whisper model.

Test speech is synthesized with espeak-ng (several voices, one clip mixed with noise), then
transcribed through ``assistant.speech.WhisperTranscriber`` exactly as the app does (language
detection on, beam 5, VAD on). int8 and float32 run back to back on each clip, so their ratio
is not skewed by load drifting on a shared machine.
"""

from __future__ import annotations

import hashlib
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import Context, Goal, SectionResult, load_average, pyplot, summary, table
from bench.texts import VOICES, text_for

RATE = 16000
RTF_GOAL = 0.10
NOISE_SNR_DB = 10.0


@dataclass
class Clip:
    name: str
    voice: str
    language: str
    text: str
    path: Path
    noisy: bool = False

    def samples(self) -> np.ndarray:
        return read_wav(self.path)

    @property
    def seconds(self) -> float:
        with wave.open(str(self.path)) as w:
            return w.getnframes() / w.getframerate()


# ------------------------------------------------------------------------------- audio


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0


def write_wav(path: Path, samples: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    tmp.replace(path)
    return path


def add_noise(samples: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """White noise plus a 50 Hz hum at ``snr_db`` below the speech power (speech parts only)."""
    rng = np.random.default_rng(seed)
    voiced = samples[np.abs(samples) > 0.01]
    power = float(np.mean(voiced**2)) if voiced.size else float(np.mean(samples**2))
    noise = rng.normal(0.0, 1.0, samples.size) + 0.5 * np.sin(2 * np.pi * 50 * np.arange(samples.size) / RATE)
    noise *= np.sqrt(power / 10 ** (snr_db / 10) / np.mean(noise**2))
    return (samples + noise).astype(np.float32)


def synthesize(cache: Path, voice: str, text: str, speed: int = 140) -> Path:
    """espeak-ng → 16 kHz mono WAV, cached by content."""
    from tests.speech_samples import make_speech

    key = hashlib.sha1(f"{voice}|{speed}|{text}".encode()).hexdigest()[:12]
    path = cache / "audio" / f"{voice}-{speed}-{key}.wav"
    if not path.exists():
        tmp = path.with_name(path.stem + ".part.wav")
        make_speech(text, tmp, voice=voice, fmt="wav", speed=speed)
        tmp.replace(path)
    return path


def build_clips(cache: Path, quick: bool) -> list[Clip]:
    plan = (
        [("en-us", 2, False)]
        if quick
        else [
            ("en-us", 5, False),
            ("en-us", 30, False),
            ("es", 15, False),
            ("fr-fr", 30, False),
            ("de", 60, False),
            ("en-us", 30, True),
        ]
    )
    clips = []
    for voice, seconds, noisy in plan:
        language = VOICES[voice]
        text = text_for(language, seconds, start=2 if seconds > 10 else 0)
        path = synthesize(cache, voice, text)
        if noisy:
            noisy_path = path.with_name(path.stem + f"-snr{NOISE_SNR_DB:g}.wav")
            if not noisy_path.exists():
                write_wav(noisy_path, add_noise(read_wav(path), NOISE_SNR_DB))
            path = noisy_path
        clip = Clip("", voice, language, text, path, noisy)
        clip.name = f"{voice} {'noisy ' if noisy else ''}{clip.seconds:.0f} s"
        clips.append(clip)
    return clips


def build_long(cache: Path, target_s: float) -> Clip:
    """English speech of ``target_s`` seconds, built by concatenating varied clips."""
    pieces = []
    piece_s = min(30.0, target_s / 3)
    for speed in (130, 150, 170, 140, 160):
        for start in (0, 7):
            text = text_for("en", piece_s, start=start)
            pieces.append((text, synthesize(cache, "en-us", text, speed=speed)))
    key = hashlib.sha1(f"long|{target_s}|{[p.name for _, p in pieces]}".encode()).hexdigest()[:12]
    path = cache / "audio" / f"long-{int(target_s)}s-{key}.wav"
    texts, total, i = [], 0.0, 0
    gap = np.zeros(int(0.7 * RATE), dtype=np.float32)
    chunks = []
    while total < target_s - 1:
        text, piece = pieces[i % len(pieces)]
        audio = read_wav(piece)
        if total + (audio.size + gap.size) / RATE > target_s:
            break
        chunks += [audio, gap]
        texts.append(text)
        total += (audio.size + gap.size) / RATE
        i += 1
    if not path.exists():
        write_wav(path, np.concatenate(chunks))
    return Clip(f"en-us {total / 60:.1f} min (concatenated)", "en-us", "en", " ".join(texts), path)


# ------------------------------------------------------------------------------- scoring


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    norm = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
            jiwer.ReduceToListOfListOfWords(),
        ]
    )
    return float(
        jiwer.wer(reference, hypothesis or "<empty>", reference_transform=norm, hypothesis_transform=norm)
    )


def transcribe_timed(transcriber, samples: np.ndarray, language: str | None = None):
    started = time.perf_counter()
    transcript = transcriber.transcribe(samples, language=language)
    return time.perf_counter() - started, transcript


# ------------------------------------------------------------------------------- section


def run(ctx: Context) -> SectionResult:
    # From a worker thread, as the app transcribes (API and page handlers run in worker threads).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-speech") as worker:
        return worker.submit(_run, ctx).result()


def _run(ctx: Context) -> SectionResult:
    from assistant.speech import WhisperTranscriber

    reps = 1 if ctx.quick else 3
    clips = build_clips(ctx.cache, ctx.quick)
    long_clip = build_long(ctx.cache, 8 if ctx.quick else 600)
    ctx.log(
        f"speech: {len(clips)} clips ({sum(c.seconds for c in clips):.0f} s) + long {long_clip.seconds:.0f} s"
    )
    audio = {c.name: c.samples() for c in clips}

    # First call: loading (weights joined/mapped, CTranslate2 init) and the first transcription
    # (VAD model load, allocations) vs the same clip warm.
    first = {}
    models = {}
    for compute_type in ("int8", "float32"):
        started = time.perf_counter()
        models[compute_type] = WhisperTranscriber(
            "embedded", device="cpu", compute_type=compute_type, max_audio_seconds=900
        )
        load_s = time.perf_counter() - started
        elapsed, _ = transcribe_timed(models[compute_type], audio[clips[0].name])
        first[compute_type] = {
            "load_s": load_s,
            "first_s": elapsed,
            "clip": clips[0].name,
            "clip_s": clips[0].seconds,
        }

    rows = {
        c.name: {"seconds": c.seconds, "int8": [], "float32": [], "wer": {}, "language": {}} for c in clips
    }
    for rep in range(reps):
        for clip in clips:
            kinds = ("int8", "float32") if rep == 0 else ("int8",)  # float32 once, right after int8
            for compute_type in kinds:
                elapsed, transcript = transcribe_timed(models[compute_type], audio[clip.name])
                row = rows[clip.name]
                row[compute_type].append(elapsed)
                if rep == 0:
                    row["wer"][compute_type] = wer(clip.text, transcript.text)
                    row["language"][compute_type] = transcript.language
                    row.setdefault("hypothesis", {})[compute_type] = transcript.text
        ctx.log(f"speech: rep {rep + 1}/{reps} done")

    # The short voice query with its language given (what --language does).
    given = []
    for _ in range(reps):
        elapsed, _t = transcribe_timed(models["int8"], audio[clips[0].name], language=clips[0].language)
        given.append(elapsed)

    # What the decoder's beam search costs: beam 1 vs the app's beam 5, back to back.
    beam_clip = clips[1] if len(clips) > 1 else clips[0]
    beams = {5: [], 1: []}
    for _ in range(1 if ctx.quick else 2):
        for beam in (5, 1):
            models["int8"].beam_size = beam
            elapsed, transcript = transcribe_timed(models["int8"], audio[beam_clip.name])
            beams[beam].append((elapsed, wer(beam_clip.text, transcript.text)))
    models["int8"].beam_size = 5

    # Long audio, int8, once.
    long_samples = long_clip.samples()
    long_s, long_t = transcribe_timed(models["int8"], long_samples)
    long_wer = wer(long_clip.text, long_t.text)
    del models

    # ---- tables
    warm_rtf = {}
    table_rows = []
    for clip in clips:
        r = rows[clip.name]
        i8, f32 = summary(r["int8"]), summary(r["float32"])
        rtf8 = i8["median"] / r["seconds"]
        warm_rtf[clip.name] = rtf8
        table_rows.append(
            [
                clip.name,
                f"{r['seconds']:.1f}",
                f"{rtf8:.3f} ({i8['min'] / r['seconds']:.3f}–{i8['max'] / r['seconds']:.3f})",
                f"{f32['median'] / r['seconds']:.3f}",
                f"{r['float32'][0] / r['int8'][0]:.2f}×",
                f"{r['wer']['int8'] * 100:.1f}",
                f"{r['wer']['float32'] * 100:.1f}",
                f"{r['language']['int8']} / {clip.language}",
            ]
        )
    total_audio = sum(rows[c.name]["seconds"] for c in clips)
    total_asr = sum(summary(rows[c.name]["int8"])["median"] for c in clips)
    aggregate = total_asr / total_audio
    long_rtf = long_s / long_clip.seconds
    table_rows.append(
        [
            long_clip.name,
            f"{long_clip.seconds:.0f}",
            f"{long_rtf:.3f} (1 run)",
            "–",
            "–",
            f"{long_wer * 100:.1f}",
            "–",
            f"{long_t.language} / en",
        ]
    )

    f8, f32 = first["int8"], first["float32"]
    warm0 = summary(rows[clips[0].name]["int8"])["median"]
    warm0_f32 = rows[clips[0].name]["float32"][0]
    first_rows = [
        [
            "int8",
            f"{f8['load_s']:.2f}",
            f"{f8['first_s']:.2f}",
            f"{warm0:.2f}",
            f"{f8['first_s'] / warm0:.1f}×",
        ],
        [
            "float32",
            f"{f32['load_s']:.2f}",
            f"{f32['first_s']:.2f}",
            f"{warm0_f32:.2f}",
            f"{f32['first_s'] / warm0_f32:.1f}×",
        ],
    ]
    given_s = summary(given)["median"]

    met = aggregate <= RTF_GOAL
    b5 = summary([t for t, _ in beams[5]])["median"]
    b1 = summary([t for t, _ in beams[1]])["median"]
    beam_line = (
        f"Beam search: on the {beam_clip.name} clip, beam 1 takes {b1:.2f} s (RTF {b1 / beam_clip.seconds:.3f}, "
        f"WER {beams[1][0][1] * 100:.1f}%) vs beam 5 {b5:.2f} s (RTF {b5 / beam_clip.seconds:.3f}, WER {beams[5][0][1] * 100:.1f}%): "
        f"the decoder's beams are {(1 - b1 / b5) * 100:.0f}% of the time; the encoder and one greedy pass are the rest."
    )
    short_note = ""
    if not ctx.quick:
        short = clips[0]
        short_note = (
            f" Short clips pay for a whole 30-s window: the {short.seconds:.1f}-s query takes {warm0:.2f} s "
            f"(RTF {warm_rtf[short.name]:.2f}); its latency, not its RTF, is what a user feels."
        )
    goal = Goal(
        "Speech RTF (int8, warm, 2 cores)",
        f"≤ {RTF_GOAL:.2f}",
        f"{aggregate:.3f} over {total_audio:.0f} s of 5–60 s clips; {long_rtf:.3f} on {long_clip.seconds / 60:.1f} min",
        met,
        (
            ""
            if met
            else f"missed: model compute on 2 shared cores (1-min load average {load_average():.1f} while measuring); "
            f"beam 1 instead of 5 gives RTF {b1 / beam_clip.seconds:.3f} on {beam_clip.name}."
        )
        + short_note,
    )

    data = {
        "clips": rows,
        "first": first,
        "beams": beams,
        "given_language_s": given,
        "long": {"seconds": long_clip.seconds, "elapsed_s": long_s, "wer": long_wer},
        "aggregate_rtf": aggregate,
    }

    plot = ctx.out / "bench-speech.png"
    _plot(plot, clips, rows, long_clip, long_rtf)

    body = "\n\n".join(
        [
            "Embedded Whisper `base` (CTranslate2) through `assistant.speech.WhisperTranscriber`, as the app runs it: "
            "language auto-detected, beam 5, VAD on, `cpu_threads` = cores, called from a worker thread as in the app. RTF = transcription time / audio length "
            "(lower is better; 0.10 = one minute of speech in six seconds). Speech is espeak-ng's synthetic voice; "
            f"the noisy clip has white noise + 50 Hz hum mixed in at {NOISE_SNR_DB:g} dB SNR. WER after lower-casing and "
            "removing punctuation. int8 and float32 run back to back per clip; int8 warm is the median of "
            f"{reps} runs (min–max). espeak-ng's Spanish, French and German voices are hard for Whisper base (its English: a few "
            "percent WER); what matters here is that int8 and float32 score alike.",
            table(
                [
                    "clip",
                    "audio s",
                    "RTF int8 warm",
                    "RTF float32",
                    "float32 / int8 time",
                    "WER int8 %",
                    "WER float32 %",
                    "language detected / spoken",
                ],
                table_rows,
            ),
            f"**Aggregate** (sum of median times / sum of durations, 5–60 s clips): RTF **{aggregate:.3f}** int8 "
            f"— goal ≤ {RTF_GOAL:.2f}: **{'met' if met else 'missed'}**. {long_clip.seconds / 60:.1f} minutes of speech: RTF {long_rtf:.3f} ({long_s:.0f} s).",
            "First call vs warm (load = `WhisperTranscriber(...)`: joins/maps the embedded weights and starts CTranslate2; "
            "the first transcription also loads the VAD model):",
            table(
                [
                    "compute type",
                    "load s",
                    f"first transcription s ({clips[0].name})",
                    "same clip warm s",
                    "first / warm",
                ],
                first_rows,
            ),
            beam_line,
            f"Language given instead of detected (`--language en`), {clips[0].name} clip, int8: {given_s:.2f} s vs {warm0:.2f} s detected.",
            f"![speech RTF and WER]({plot.name})",
        ]
    )
    return SectionResult("speech", "1. Speech recognition", body, [goal], data)


def _plot(path: Path, clips, rows, long_clip, long_rtf) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = [c.name for c in clips] + [f"{long_clip.seconds / 60:.1f} min"]
    x = np.arange(len(names))
    i8 = [summary(rows[c.name]["int8"])["median"] / rows[c.name]["seconds"] for c in clips] + [long_rtf]
    f32 = [rows[c.name]["float32"][0] / rows[c.name]["seconds"] for c in clips] + [np.nan]
    ax1.bar(x - 0.2, i8, 0.4, label="int8 (warm median)")
    ax1.bar(x + 0.2, f32, 0.4, label="float32")
    ax1.axhline(RTF_GOAL, color="red", ls="--", lw=1, label=f"goal {RTF_GOAL:.2f}")
    ax1.set_xticks(x, names, rotation=35, ha="right")
    ax1.set_ylabel("real-time factor (lower is better)")
    ax1.set_title("Whisper base on CPU: RTF")
    ax1.legend()
    w8 = [rows[c.name]["wer"]["int8"] * 100 for c in clips]
    w32 = [rows[c.name]["wer"]["float32"] * 100 for c in clips]
    x2 = np.arange(len(clips))
    ax2.bar(x2 - 0.2, w8, 0.4, label="int8")
    ax2.bar(x2 + 0.2, w32, 0.4, label="float32")
    ax2.set_xticks(x2, [c.name for c in clips], rotation=35, ha="right")
    ax2.set_ylabel("WER % (lower is better)")
    ax2.set_title("Word error rate on espeak-ng speech")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
