"""assistant.media: every accepted format comes out normalised, every bad upload is a MediaError.

All fixtures are made at test time: images with Pillow (real photos from skimage.data), speech
with espeak-ng and ffmpeg.
"""

from __future__ import annotations

import io
import random
import re
import shutil
import struct
import subprocess
import sys
import wave
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile
from skimage import data as skdata

from assistant import media
from assistant.errors import MediaError

# --------------------------------------------------------------------------- image fixtures


def photo(size=None) -> Image.Image:
    img = Image.fromarray(skdata.chelsea())  # 451x300 RGB cat
    return img.resize(size, Image.Resampling.BILINEAR) if size else img


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header that declares width x height, followed by a few bytes of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def animated(fmt: str) -> bytes:
    red, blue = Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (40, 30), (0, 0, 255))
    return encode(red, fmt, save_all=True, append_images=[blue], duration=100, loop=0)


ACCEPTED = {
    "jpeg": lambda: encode(photo(), "JPEG", quality=90),
    "png": lambda: encode(photo(), "PNG"),
    "webp": lambda: encode(photo(), "WEBP"),
    "gif": lambda: encode(photo(), "GIF"),
    "bmp": lambda: encode(photo(), "BMP"),
    "tiff": lambda: encode(photo(), "TIFF"),
    "mpo": lambda: encode(photo(), "MPO", save_all=True, append_images=[photo()]),
}


def assert_rejected(source, *words, loader=media.load_image, **kw):
    with pytest.raises(MediaError) as err:
        loader(source, **kw)
    message = str(err.value)
    for word in words:
        assert word in message, message
    return message


# --------------------------------------------------------------------------- images: accepted


@pytest.mark.parametrize("fmt", sorted(ACCEPTED))
def test_accepted_formats_come_out_rgb_within_max_side(fmt, tmp_path):
    data = ACCEPTED[fmt]()
    path = tmp_path / f"cat.{fmt}"
    path.write_bytes(data)
    for source in (data, path, str(path), io.BytesIO(data)):
        img = media.load_image(source, max_side=256)
        assert img.mode == "RGB"
        assert img.size == (256, 170)  # 451x300 scaled to a 256 long side
    assert media.load_image(data, max_side=0).size == (451, 300)
    assert media.load_image(data, max_side=None).size == (451, 300)
    assert media.load_image(data, max_side=1024).size == (451, 300)  # never upscaled


def test_mpo_and_animations_give_their_first_frame():
    assert Image.open(io.BytesIO(ACCEPTED["mpo"]())).format == "MPO"
    for fmt in ("GIF", "WEBP"):
        img = media.load_image(animated(fmt))
        r, g, b = img.getpixel((20, 15))
        assert r > 200 and b < 60, (fmt, (r, g, b))  # red first frame, not the blue second


def test_pil_image_source_is_normalised_without_being_changed():
    src = Image.new("RGBA", (2000, 1000), (0, 0, 0, 0))
    img = media.load_image(src, max_side=500)
    assert (img.mode, img.size) == ("RGB", (500, 250))
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert (src.mode, src.size) == ("RGBA", (2000, 1000))


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": stored landscape, shown portrait
    data = encode(photo((400, 200)), "JPEG", exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).size == (400, 200)
    assert media.load_image(data).size == (200, 400)
    assert media.load_image(data, max_side=100).size == (50, 100)


def test_large_jpeg_goes_through_draft_and_comes_out_at_max_side(monkeypatch):
    big = Image.fromarray(skdata.astronaut()).resize((6000, 4000), Image.Resampling.BILINEAR)
    data = encode(big, "JPEG", quality=85)
    drafts = []
    real_draft = Image.Image.draft

    def spy(self, mode, size):
        drafts.append((mode, size))
        return real_draft(self, mode, size)

    monkeypatch.setattr(type(Image.open(io.BytesIO(data))), "draft", spy)
    img = media.load_image(data, max_side=1024)
    assert (img.mode, img.size) == ("RGB", (1024, 683))
    assert drafts == [("RGB", (1024, 683))]
    # draft reduced 6000x4000 by 4 (to 1500x1000 >= 1024): the picture is still the picture
    ref = big.resize((1024, 683), Image.Resampling.LANCZOS)
    diff = np.abs(np.asarray(img, np.int16) - np.asarray(ref, np.int16)).mean()
    assert diff < 8, diff


def test_cmyk_jpeg_becomes_rgb_with_the_same_colours():
    src = photo()
    img = media.load_image(encode(src.convert("CMYK"), "JPEG", quality=95))
    assert img.mode == "RGB"
    diff = np.abs(np.asarray(img, np.int16) - np.asarray(src, np.int16)).mean()
    assert diff < 12, diff


def test_16_bit_png_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (16, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = media.load_image(data)
    row = np.asarray(img)[0, :, 0]
    assert row[0] == 0 and row[-1] == 255 and 120 <= row[128] <= 135


def test_palette_png_with_transparency_composites_on_white():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black, 1 red
    pal.paste(1, (0, 0, 4, 8))
    data = encode(pal, "PNG", transparency=0)  # index 0 (black) is see-through
    img = media.load_image(data)
    assert img.getpixel((0, 0)) == (255, 0, 0)
    assert img.getpixel((7, 7)) == (255, 255, 255)  # white, not black


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composites_on_white(mode):
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    img.paste((200, 200, 200, 255), (0, 0, 5, 10))
    out = media.load_image(encode(img.convert(mode), "PNG"))
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == (200, 200, 200)
    assert out.getpixel((8, 8)) == (255, 255, 255)


def test_grey_bilevel_and_palette_images_are_accepted():
    for mode in ("L", "1", "P"):
        out = media.load_image(encode(photo().convert(mode), "PNG"))
        assert (out.mode, out.size) == ("RGB", (451, 300))


# --------------------------------------------------------------------------- images: rejected


def test_rejects_html(tmp_path):
    path = tmp_path / "page.jpg"  # a lying extension changes nothing
    path.write_text("<!DOCTYPE html><html><body><img src=x></body></html>")
    assert_rejected(path, "page.jpg is not a supported image (looks like HTML)", "Use JPEG")


def test_rejects_svg():
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    assert_rejected(
        svg,
        "photo.svg is not a supported image (looks like SVG/XML). Use JPEG, PNG, WebP, GIF, BMP or TIFF.",
        name="photo.svg",
    )


def test_rejects_text():
    assert_rejected(b"just some notes\n" * 20, "notes.png", "looks like text", name="notes.png")


def test_rejects_zero_bytes(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert_rejected(path, "empty.png is empty (0 bytes)")
    assert_rejected(b"", "image is empty")


def test_rejects_truncated_jpeg():
    data = encode(photo(), "JPEG")
    assert_rejected(data[: len(data) // 2], "cut.jpg is truncated or corrupt", name="cut.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_rejects_truncated_png():
    data = encode(photo(), "PNG")
    assert_rejected(data[: len(data) // 2], "cut.png is truncated or corrupt", name="cut.png")
    assert_rejected(data[:30], "truncated or corrupt")  # cut inside the header


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_rejects_decompression_bomb_from_the_header():
    pil_cap = Image.MAX_IMAGE_PIXELS
    # 30000x30000 declared, ~100 bytes of data: a decode would fail as "corrupt"; the
    # megapixel message proves the header alone was judged.
    assert_rejected(
        png_claiming(30000, 30000),
        "bomb.png has 900 megapixels",
        "over the 100-megapixel limit",
        name="bomb.png",
    )
    # Under Pillow's own guard but over ours: our cap, our message.
    assert_rejected(
        png_claiming(11000, 10000), "110 megapixels (11000x10000)", "over the 100-megapixel limit"
    )
    assert_rejected(encode(photo(), "JPEG"), "0.1 megapixels", max_pixels=100_000)
    assert pil_cap == Image.MAX_IMAGE_PIXELS  # Pillow's process-wide guard left alone


def test_rejects_over_the_byte_cap(tmp_path):
    data = encode(photo(), "PNG")
    path = tmp_path / "cat.png"
    path.write_bytes(data)
    assert_rejected(path, "cat.png is ", "over the 1000 bytes limit", max_bytes=1000)
    assert_rejected(data, "image is ", "KB, over the 1000 bytes limit", max_bytes=1000)
    assert_rejected(io.BytesIO(data), "over the 1000 bytes limit", max_bytes=1000)
    big = b"\0" * (21 * 1024 * 1024)
    assert_rejected(big, "image is 21 MB, over the 20 MB limit")


def test_rejects_unsupported_image_formats_by_name():
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\0" * 100
    assert_rejected(heic, "IMG_1.HEIC is not a supported image (looks like HEIC/HEIF)", name="IMG_1.HEIC")
    ico = encode(Image.new("RGB", (16, 16)), "ICO")
    assert_rejected(ico, "looks like ICO")
    assert_rejected(123, "expected a file path or bytes")
    assert_rejected("/no/such/file.png", "file.png was not found")


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow narrates damaged EXIF
def test_fuzzed_uploads_only_ever_raise_media_error():
    rng = random.Random(1234)
    small = photo((64, 48))
    samples = [rng.randbytes(rng.choice([1, 10, 100, 5000])) for _ in range(40)]
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"):
        good = encode(small, fmt)
        samples += [good[:n] for n in sorted({1, 4, 8, 16, 33, 64, len(good) // 3, len(good) - 5})]
        for _ in range(15):  # flip a few bytes anywhere
            bad = bytearray(good)
            for _ in range(3):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
            samples.append(bytes(bad))
    samples += [png_claiming(w, h) for w, h in ((0, 10), (1, 2**31 - 1), (65535, 65535))]
    for sample in samples:
        try:
            img = media.load_image(sample)
        except MediaError:
            continue
        assert img.mode == "RGB" and max(img.size) <= 1024


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow narrates damaged EXIF
def test_truncated_prefixes_of_every_format_are_rejected():
    for fmt in ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"):
        good = encode(photo((64, 48)), fmt)
        for n in (10, len(good) // 2):
            with pytest.raises(MediaError):
                media.load_image(good[:n])


# --------------------------------------------------------------------------- audio fixtures

SPEECH = "Hello there, this is a short test of the audio pipeline."


def _run(*cmd):
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """Path per name: wav44 (44.1 kHz stereo), mp3, opus.ogg, webm, live.webm, m4a, flac, ..."""
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            print(f"skipping audio tests: {tool} is not installed")
            pytest.skip(f"{tool} is not installed (apt-get install {tool})")
    d = tmp_path_factory.mktemp("audio")
    _run("espeak-ng", "-v", "en-us", "-s", "140", "-w", str(d / "speech.wav"), SPEECH)
    ff = ("ffmpeg", "-v", "error", "-y", "-i")
    _run(*ff, str(d / "speech.wav"), "-ar", "44100", "-ac", "2", str(d / "wav44.wav"))
    src = str(d / "wav44.wav")
    _run(*ff, src, "-c:a", "libmp3lame", str(d / "speech.mp3"))
    _run(*ff, src, "-c:a", "libopus", str(d / "speech.opus.ogg"))
    _run(*ff, src, "-c:a", "libopus", str(d / "speech.webm"))
    _run(*ff, src, "-c:a", "aac", str(d / "speech.m4a"))
    _run(*ff, src, "-c:a", "flac", str(d / "speech.flac"))
    # What a browser's MediaRecorder sends: WebM/Opus written as a stream, no duration header.
    with open(d / "live.webm", "wb") as out:
        subprocess.run(
            [*ff, src, "-c:a", "libopus", "-f", "webm", "pipe:1"], stdout=out, check=True, timeout=60
        )
    _run(
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc=d=1:s=64x48:r=10",
        "-pix_fmt",
        "yuv420p",
        str(d / "silent_video.mp4"),
    )
    with wave.open(str(d / "wav44.wav")) as w:
        seconds = w.getnframes() / w.getframerate()
    files = {p.name: p for p in d.iterdir()}
    files["seconds"] = seconds
    return files


def write_wav(path, samples: np.ndarray, rate=16000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


def assert_audio_rejected(source, *words, **kw):
    return assert_rejected(source, *words, loader=media.load_audio, **kw)


# --------------------------------------------------------------------------- audio: accepted


@pytest.mark.parametrize(
    "name",
    ["wav44.wav", "speech.mp3", "speech.opus.ogg", "speech.webm", "live.webm", "speech.m4a", "speech.flac"],
)
def test_audio_formats_decode_to_16k_mono_float32(audio, name):
    path = audio[name]
    for source in (path, str(path), path.read_bytes()):
        samples = media.load_audio(source)
        assert samples.dtype == np.float32 and samples.ndim == 1
        assert abs(samples.size / 16000 - audio["seconds"]) < 0.1
        assert 0.05 < np.abs(samples).max() <= 1.0  # speech, not silence or garbage
    half = media.load_audio(path, sampling_rate=8000)
    assert half.size == pytest.approx(samples.size / 2, abs=10)


def test_browser_webm_has_no_duration_header_yet_is_measured(audio):
    import av

    with av.open(str(audio["live.webm"])) as c:
        assert c.duration is None and c.streams.audio[0].duration is None
    assert abs(media.load_audio(audio["live.webm"].read_bytes()).size / 16000 - audio["seconds"]) < 0.1


def test_silence_is_not_an_error(tmp_path):
    samples = media.load_audio(write_wav(tmp_path / "quiet.wav", np.zeros(8000)))
    assert samples.size == 8000 and not samples.any()


# --------------------------------------------------------------------------- audio: rejected


def test_audio_rejects_not_audio(audio, tmp_path):
    png = encode(photo(), "PNG")
    assert_audio_rejected(png, "cat.mp3 is not audio (looks like PNG image)", name="cat.mp3")
    assert_audio_rejected(b"<html><body>hi</body></html>", "looks like HTML")
    assert_audio_rejected(b"la la la\n" * 100, "looks like text")
    assert_audio_rejected(random.Random(7).randbytes(5000), "not a supported audio file")
    assert_audio_rejected(audio["silent_video.mp4"], "silent_video.mp4 has no audio track")


def test_audio_rejects_empty(tmp_path):
    assert_audio_rejected(b"", "audio is empty (0 bytes)")
    (tmp_path / "none.wav").write_bytes(b"")
    assert_audio_rejected(tmp_path / "none.wav", "none.wav is empty (0 bytes)")
    no_samples = write_wav(tmp_path / "nothing.wav", np.zeros(0))
    assert_audio_rejected(no_samples, "nothing.wav contains no audio (0 samples)")


def test_audio_rejects_over_duration(audio):
    # header duration: refused before decoding
    message = assert_audio_rejected(audio["speech.m4a"], max_seconds=1.0)
    assert re.fullmatch(r"speech\.m4a is \d\.\d s long, over the 1 s limit", message), message
    # no duration in the header (browser WebM): refused while decoding, once past the cap
    assert_audio_rejected(audio["live.webm"], "live.webm is longer than the 1 s limit", max_seconds=1.0)
    assert media.load_audio(audio["live.webm"], max_seconds=30).size > 16000


def test_audio_rejects_over_byte_cap(audio):
    assert_audio_rejected(
        audio["speech.flac"], "speech.flac is ", "over the 1000 bytes limit", max_bytes=1000
    )
    assert_audio_rejected(audio["speech.flac"].read_bytes(), "over the 1000 bytes limit", max_bytes=1000)


def test_audio_rejects_corrupt(audio):
    rng = random.Random(3)
    assert_audio_rejected(b"fLaC" + rng.randbytes(4000), "rec.flac is truncated or corrupt", name="rec.flac")
    m4a = audio["speech.m4a"].read_bytes()
    assert_audio_rejected(m4a[: len(m4a) // 2], "truncated or corrupt (a damaged M4A audio file)")
    wav = audio["wav44.wav"].read_bytes()
    bad_codec = wav[:20] + b"\xff\xff" + wav[22:44] + rng.randbytes(1000)  # unknown format tag
    assert_audio_rejected(bad_codec, "corrupt")


def test_fuzzed_audio_only_ever_raises_media_error(audio):
    rng = random.Random(99)
    for name in ("speech.mp3", "speech.opus.ogg", "live.webm", "speech.m4a", "speech.flac"):
        good = audio[name].read_bytes()
        cuts = [good[:n] for n in (4, 40, 400, len(good) // 2)]
        flips = []
        for _ in range(3):
            bad = bytearray(good)
            for _ in range(20):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
            flips.append(bytes(bad))
        for sample in cuts + flips:
            try:
                samples = media.load_audio(sample)
            except MediaError:
                continue
            assert samples.dtype == np.float32 and samples.ndim == 1 and samples.size > 0


# --------------------------------------------------------------------------- routing


def test_kind_of_routes_by_content_not_extension(audio, tmp_path):
    for fmt, make in ACCEPTED.items():
        data = make()
        assert media.kind_of(data) == "image", fmt
        (tmp_path / f"x.{fmt}.mp3").write_bytes(data)
        assert media.kind_of(tmp_path / f"x.{fmt}.mp3") == "image", fmt
    for name in (
        "wav44.wav",
        "speech.mp3",
        "speech.opus.ogg",
        "speech.webm",
        "live.webm",
        "speech.m4a",
        "speech.flac",
    ):
        assert media.kind_of(audio[name]) == "audio", name
        assert media.kind_of(audio[name].read_bytes()) == "audio", name
    disguised = tmp_path / "voice.jpg"
    disguised.write_bytes(audio["speech.webm"].read_bytes())
    assert media.kind_of(disguised) == "audio"
    for junk in (
        b"",
        b"<!doctype html><p>hi",
        random.Random(5).randbytes(3000),
    ):
        assert media.kind_of(junk) == "unknown", junk[:20]
    # a video without sound is a clip, text is a document (both have their own loaders now)
    assert media.kind_of(audio["silent_video.mp4"].read_bytes()) == "video"
    assert media.kind_of(b"hello world") == "unknown"  # text is a document only when named so
    assert media.kind_of(b"hello world", name="notes.md") == "document"
    assert media.kind_of(tmp_path / "missing.png") == "unknown"
    # recognisable but unusable images route to load_image, which says exactly why
    assert media.kind_of(b'<svg xmlns="http://www.w3.org/2000/svg"/>') == "image"
    assert media.kind_of(png_claiming(30000, 30000)) == "image"


def test_media_does_not_import_torch():
    code = "import sys, assistant.media; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
