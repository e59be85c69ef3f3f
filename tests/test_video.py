"""Video clips: decoding and sampling (real clips made with ffmpeg from photos and espeak-ng
speech), every limit's message, the sound track heard by the real Whisper, and clips through
the engine (a tiny Qwen2.5-VL that takes video natively, a tiny LLaVA that gets frames as
photos), the prefix cache, the API and the CLI."""

from __future__ import annotations

import base64
import json
import os
import subprocess

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from assistant import media
from assistant.conversation import Message, VideoAttachment
from assistant.core import Assistant
from assistant.errors import MediaError
from assistant.media import video
from assistant.models.base import ChatRequest
from assistant.options import GenerationParams
from assistant.settings import Settings
from tests.clip_samples import SPOKEN, make_clip, mean_colour, photos
from tests.fakes import FakeChatModel
from tests.test_cli import run_cli
from tools.random_models import build


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {
        "mp4": make_clip(d / "clip.mp4"),
        "webm": make_clip(d / "clip.webm", fmt="webm"),
        "mov": make_clip(d / "clip.mov", fmt="mov"),
        "mkv": make_clip(d / "clip.mkv", fmt="mkv"),
        "silent": make_clip(d / "silent.mp4", speech=None),
        "reversed": make_clip(d / "reversed.mp4", speech=None, order=(1, 0)),
        "photos": photos(d / "photos"),
    }


def source_colours(clips):
    return [mean_colour(Image.open(p).resize((640, 480))) for p in clips["photos"]]


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("fmt", ["mp4", "webm", "mov", "mkv"])
def test_frames_are_sampled_uniformly_timed_downscaled_and_show_the_clip(clips, fmt):
    clip = video.load_clip(clips[fmt], max_frames=6, fps=1.0, max_side=320)
    assert len(clip.frames) == 6
    assert 5.9 <= clip.duration_s <= 6.1 and clip.size == (640, 480)
    gaps = np.diff(clip.timestamps)
    assert all(0.8 < g < 1.2 for g in gaps), clip.timestamps  # one a second, evenly spread
    assert 0 < clip.timestamps[0] < 1 and clip.timestamps[-1] < clip.duration_s
    assert all(max(f.size) == 320 and f.mode == "RGB" for f in clip.frames)
    astronaut, cat = source_colours(clips)
    for t, frame in zip(clip.timestamps, clip.frames, strict=True):
        colour = mean_colour(frame)
        near, far = (astronaut, cat) if t < 3 else (cat, astronaut)
        assert np.abs(colour - near).sum() < np.abs(colour - far).sum(), (t, colour)
    assert clip.audio is not None and clip.audio.dtype == np.float32 and len(clip.audio) > 16000


def test_frame_count_follows_fps_within_the_cap(clips):
    assert len(video.load_clip(clips["silent"], max_frames=64, fps=2.0).frames) == 12
    assert len(video.load_clip(clips["silent"], max_frames=4, fps=2.0).frames) == 4
    assert len(video.load_clip(clips["silent"], max_frames=1000, fps=100.0).frames) == video.VIDEO_FRAMES_CAP
    assert len(video.load_clip(clips["silent"], max_frames=8, fps=0.01).frames) == 1
    assert video.load_clip(clips["silent"]).audio is None  # no sound track: nothing to hear


def test_a_long_clip_is_sampled_from_its_keyframes(tmp_path, clips):
    """40 s with a keyframe every second, 8 frames 5 s apart: only keyframes are decoded, each at
    most one keyframe interval before its target, and each still shows what is on screen then."""
    long = make_clip(tmp_path / "long.mp4", seconds_each=20, size=(320, 240), speech=None, fps=10, gop=10)
    clip = video.load_clip(long, max_frames=8, fps=1.0)
    targets = video.sample_times(clip.duration_s, 1.0, 8)
    assert len(clip.frames) == 8 and list(clip.timestamps) == sorted(set(clip.timestamps))
    for t, want in zip(clip.timestamps, targets, strict=True):
        assert want - 1.05 <= t <= want + 0.2, (clip.timestamps, targets)
    astronaut, cat = source_colours(clips)
    for t, frame in zip(clip.timestamps, clip.frames, strict=True):
        colour = mean_colour(frame)
        near, far = (astronaut, cat) if t < 20 else (cat, astronaut)
        assert np.abs(colour - near).sum() < np.abs(colour - far).sum(), t


def test_clips_are_routed_by_content(clips, tmp_path):
    for name in ("mp4", "webm", "mov", "mkv", "silent"):
        assert media.kind_of(clips[name]) == "video", name
    renamed = tmp_path / "holiday.mp3"
    renamed.write_bytes(clips["mp4"].read_bytes())
    assert media.kind_of(renamed) == "video"


def refused(source, *words, **limits):
    with pytest.raises(MediaError) as caught:
        video.load_clip(source, **limits)
    message = str(caught.value)
    for word in words:
        assert word in message, message
    return message


def test_every_limit_and_bad_file_is_explained(clips, tmp_path):
    mp4 = clips["mp4"]
    refused(mp4, "clip.mp4 is", "over the 1 KB limit", max_bytes=1024)
    refused(mp4, "clip.mp4 is 6 s long, over the 2 s limit", max_seconds=2)
    refused(mp4, "640x480", "over the 0.1-megapixel limit", max_pixels=100_000)
    half = tmp_path / "half.mp4"
    half.write_bytes(mp4.read_bytes()[:3000])
    refused(half, "half.mp4", "corrupt")
    html = tmp_path / "clip.mp4.html"
    html.write_bytes(b"<!doctype html><html><body>not a video</body></html>")
    refused(html, "is not a video (looks like HTML)")
    voice = tmp_path / "voice.webm"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(mp4),
            "-vn",
            "-c:a",
            "libopus",
            str(voice),
        ],
        check=True,
    )
    refused(voice, "voice.webm has no video stream (it is a sound recording only)")
    refused(b"", "empty")
    refused(tmp_path / "missing.mp4", "was not found")
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"\x1a\x45\xdf\xa3" + os.urandom(5000))
    refused(junk, "junk.mkv")


def test_a_clip_without_sound_and_the_image_only_view(clips):
    clip = video.load_clip(clips["silent"], max_frames=8, fps=2)
    frames, note = video.frames_as_images(clip, 3)
    assert len(frames) == 3 and frames[0] is clip.frames[0] and frames[-1] is clip.frames[-1]
    assert "without sound" in note and "frames at" in note
    times = [t for t in clip.timestamps if f"{t:.1f}".removesuffix(".0") in note]
    assert len(times) >= 3


# --------------------------------------------------------------------------- the engine


def assistant_with(model, transcriber=None, **settings) -> Assistant:
    return Assistant(Settings(**settings), model, transcriber)


class NativeVideoFake(FakeChatModel):
    accepts_video = True


def test_what_is_said_in_a_clip_is_heard_by_whisper_and_given_to_the_model(clips):
    from assistant.speech import WhisperTranscriber as Transcriber

    fake = FakeChatModel()
    helper = assistant_with(fake, Transcriber(), video_frames=4)
    reply = helper.reply([], Message.user("What does she say?", videos=[clips["mp4"]])).wait()
    sent = fake.requests[-1].messages[-1]
    assert "said in clip.mp4:" in sent.text and "What does she say?" in sent.text
    heard = sent.text.lower()
    assert sum(word in heard for word in ("cat", "sleeping", "red", "sofa")) >= 3, sent.text
    assert len(sent.images) == 4 and not sent.videos  # an image-only model: four timed frames
    assert reply.stats is not None and reply.stats.transcribe_s > 0
    assert reply.stats.sent == "video: 4 frames as pictures, its speech as text"
    assert reply.message.transcript is None  # the clip's words are not the user's voice
    # heard once: a follow-up does not run Whisper again
    again = helper.reply([reply.message, Message.assistant(reply.text)], Message.user("And then?")).wait()
    assert again.stats is not None and again.stats.transcribe_s == 0
    assert SPOKEN.split()[1].lower() in fake.requests[-1].messages[1].text.lower()  # [0]: the system prompt


def test_native_models_get_the_clip_and_only_the_newest_one(clips):
    fake = NativeVideoFake()
    helper = assistant_with(fake, video_frames=5)
    first = Message.user("What happens?", videos=[clips["silent"]])
    helper.reply([], first).wait()
    sent = fake.requests[-1].messages[-1]
    assert len(sent.videos) == 1 and not sent.images and len(sent.videos[0].frames) == 5
    second = Message.user("And here?", videos=[clips["reversed"]])
    reply = helper.reply([first, Message.assistant("ok")], second).wait()
    old, new = fake.requests[-1].messages[1], fake.requests[-1].messages[-1]
    assert not old.videos and "video silent.mp4" in old.text  # its description stays
    assert len(new.videos) == 1 and reply.stats is not None and reply.stats.sent == "video: 5 frames"


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from assistant.models.local import LocalChatModel

    out = {}
    for arch in ("qwen2_5_vl", "llava"):
        path = str(build(arch, tmp_path_factory.getbasetemp() / f"tiny-{arch}"))
        reuse = LocalChatModel.load(path, image_max_side=128, dtype="float32")
        fresh = LocalChatModel.load(path, image_max_side=128, dtype="float32", prefix_cache_bytes=0)
        reuse.record_first_logits = fresh.record_first_logits = True
        out[arch] = (path, reuse, fresh)
    return out


def greedy(model, messages, n=6):
    request = ChatRequest(messages, GenerationParams(max_new_tokens=n, min_new_tokens=n, temperature=0))
    items = list(model.stream(request))
    return "".join(i for i in items if isinstance(i, str)), items[-1]


@pytest.mark.slow
def test_video_capability_is_read_from_the_processor(engines):
    assert engines["qwen2_5_vl"][1].accepts_video is True
    assert engines["llava"][1].accepts_video is False


@pytest.mark.slow
def test_a_native_model_reads_the_frames_through_its_video_path(engines, clips):
    _, model, _ = engines["qwen2_5_vl"]
    clip = video.load_clip(clips["silent"], max_frames=4, fps=1, max_side=64)
    message = Message("user", "What happens?", (VideoAttachment(clip),))
    inputs = model.prepare_inputs([message])
    assert (
        "pixel_values_videos" in inputs and int(inputs["video_grid_thw"][0][0]) == 2
    )  # 4 frames, 2 per patch
    text_only = model.prepare_inputs([Message("user", "What happens?")])
    assert model.count_tokens(message) >= inputs["input_ids"].shape[-1] - text_only["input_ids"].shape[-1]
    # the frames matter: another clip of the same length gives other first-step logits
    other = video.load_clip(clips["reversed"], max_frames=4, fps=1, max_side=64)
    greedy(model, [message], 1)
    first = model.first_logits.clone()
    greedy(model, [Message("user", "What happens?", (VideoAttachment(other),))], 1)
    assert float((first - model.first_logits).abs().max()) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen2_5_vl", "llava"])
def test_a_turn_after_a_clip_answers_as_without_the_cache(engines, clips, arch):
    """The prefix cache tells clips apart by their pixels: a follow-up reuses the clip already
    read, the same chat with another clip of the same length (same token ids) reuses nothing
    past the clip, and a second clip later in the chat reuses the first; each answers exactly as
    a model without a cache does."""
    path, reuse, fresh = engines[arch]
    helper = assistant_with(reuse, video_frames=4, video_max_side=64)
    first = Message.user("What happens?", videos=[clips["silent"]])
    history = helper.prompt.build([], first, "", 6).messages
    reply, _ = greedy(reuse, history)
    expected, _ = greedy(fresh, history)
    assert reply == expected

    def same(messages) -> int:
        text, usage = greedy(reuse, messages)
        want, _ = greedy(fresh, messages)
        assert text == want, arch
        assert float((reuse.first_logits - fresh.first_logits).abs().max()) < 1e-4
        return usage.cached_tokens

    ids = reuse.prepare_inputs(history)["input_ids"][0].tolist()
    marks = {
        getattr(reuse.model.config, n, None)
        for n in ("video_token_id", "image_token_id", "image_token_index")
    }
    clip_start = next(i for i, t in enumerate(ids) if t in marks)
    clip_end = max(i for i, t in enumerate(ids) if t in marks) + 1
    follow = helper.prompt.build(
        [first, Message.assistant(reply)], Message.user("Tell me more."), "", 6
    ).messages
    assert same(follow) >= clip_end  # the clip is not read again
    other = Message.user("What happens?", videos=[clips["reversed"]])
    swapped = helper.prompt.build(
        [other, Message.assistant(reply)], Message.user("Tell me more."), "", 6
    ).messages
    assert same(swapped) <= clip_start  # another clip of the same length is read afresh
    if arch == "qwen2_5_vl":  # two clips in one prompt: the first reused, the second's rows sent
        one, two = (
            video.load_clip(clips[k], max_frames=4, fps=1, max_side=64) for k in ("silent", "reversed")
        )
        turn = [Message("user", "What happens?", (VideoAttachment(one),)), Message.assistant(reply)]
        same(turn)
        later = [*turn, Message("user", "And now?", (VideoAttachment(two),))]
        assert same(later) >= clip_end


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen2_5_vl", "llava"])
def test_clip_then_document_in_one_conversation_through_the_engine(engines, clips, arch, tmp_path):
    from tests.pdf_samples import text_pdf

    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(text_pdf(["Invoice 42", "Total: 99 euros"]))
    _, model, _ = engines[arch]
    helper = assistant_with(model, video_frames=4, video_max_side=64, image_max_side=128)
    params = helper.params(max_new_tokens=4, min_new_tokens=4, temperature=0)
    one = helper.reply([], Message.user("What happens?", videos=[clips["silent"]]), params).wait()
    assert one.stats is not None and one.stats.tokens == 4
    assert one.stats.sent == ("video: 4 frames" if arch == "qwen2_5_vl" else "video: 4 frames as pictures")
    history = [one.message, Message.assistant(one.text)]
    two = helper.reply(history, Message.user("What is the total?", documents=[pdf]), params).wait()
    assert two.stats is not None and two.stats.tokens == 4
    assert two.stats.sent == "invoice.pdf: pages 1, 2 of 2 as pictures + text"
    three = helper.reply([*history, two.message, Message.assistant(two.text)], Message.user("Thanks"), params)
    assert three.wait().stats is not None


# --------------------------------------------------------------------------- API and CLI


def api_client(**settings) -> tuple[TestClient, FakeChatModel]:
    from api import install_api

    fake = FakeChatModel()
    settings_ = Settings(**settings)
    app = FastAPI()
    install_api(app, Assistant(settings_, fake, None), settings_)
    return TestClient(app), fake


def post(c, content):
    return c.post(
        "/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": content}]}
    )


def test_api_takes_video_url_data_urls_and_explains_bad_ones(clips):
    c, fake = api_client(video_frames=3)
    url = "data:video/mp4;base64," + base64.b64encode(clips["silent"].read_bytes()).decode()
    r = post(c, [{"type": "text", "text": "what happens?"}, {"type": "video_url", "video_url": {"url": url}}])
    assert r.status_code == 200, r.text
    assert len(fake.requests[-1].messages[-1].images) == 3  # the fake takes images only
    html = "data:video/mp4;base64," + base64.b64encode(b"<!doctype html><p>hi</p>").decode()
    r = post(c, [{"type": "video_url", "video_url": {"url": html}}])
    assert r.status_code == 400 and "is not a video (looks like HTML)" in r.json()["error"]["message"]
    r = post(c, [{"type": "video_url", "video_url": {"url": "data:image/png;base64,AAAA"}}])
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_video_url"
    r = post(c, [{"type": "video_url", "video_url": {"url": "http://example.com/a.mp4"}}])
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_video_url"
    r = post(c, [{"type": "video_url", "image_url": {"url": url}}])
    assert r.status_code == 400
    small, _ = api_client(max_video_bytes=1000)
    r = post(small, [{"type": "video_url", "video_url": {"url": url}}])
    assert r.status_code == 400 and r.json()["error"]["code"] == "video_too_large"


@pytest.mark.slow
def test_cli_chat_with_a_clip_and_a_bad_one(engines, clips, tmp_path):
    path = engines["qwen2_5_vl"][0]
    result = run_cli(
        "chat",
        "--model",
        path,
        "--video",
        clips["silent"],
        "--max-new-tokens",
        "3",
        "--json",
        "What happens?",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["tokens"] == 3 and out["sent"].startswith("video: ") and "frames" in out["sent"]
    fake = tmp_path / "fake.mp4"
    fake.write_text("<!doctype html><html>nope</html>")
    bad = run_cli("chat", "--model", path, "--video", fake, "hi")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: fake.mp4 is not a video"), bad.stderr


# --------------------------------------------------------------------------- remote servers


def test_a_remote_server_that_takes_video_gets_the_clip_itself(clips):
    from tests.test_remote import remote

    chat_model, engine = remote()  # this app as the server: it lists itself as taking video
    assert chat_model.accepts_video
    front = Assistant(Settings(video_frames=6), chat_model)
    reply = front.reply([], Message.user("What happens?", videos=[clips["silent"]])).wait()
    assert reply.stats is not None and reply.stats.sent == "video: 6 frames"
    got = engine.requests[-1].messages[-1]  # the engine decoded the clip it was sent: 4 frames for its fake
    assert len(got.images) == 4 and "video" in got.text and "What happens?" in got.text


def test_other_servers_get_frames_as_images(clips):
    import httpx

    from tests.test_remote import delta, scripted, sse

    bodies = []

    def handler(request):
        if request.url.path.endswith("/models"):
            return httpx.Response(
                200, json={"data": [{"id": "m", "owned_by": "llamacpp", "meta": {"n_ctx": 8192}}]}
            )
        bodies.append(json.loads(request.content))
        return httpx.Response(200, content=sse(delta("ok"), delta(finish="stop"), b"[DONE]"))

    chat_model = scripted(handler)
    chat_model.discover()
    assert not chat_model.accepts_video
    front = Assistant(Settings(video_frames_as_images=3), chat_model)
    front.reply([], Message.user("What happens?", videos=[clips["silent"]])).wait()
    parts = bodies[-1]["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 3 + ["text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
