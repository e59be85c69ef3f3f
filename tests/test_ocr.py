"""OCR (PP-OCRv4 through rapidocr-onnxruntime, real models) on pictures drawn with a real font: what
it reads, in which order, within which bounds, how it fails; and how the prompt builder hands it to
a text-only model.

The model often drops the space between two words ("TOTAL57.00EUR"), so lines are compared with
their spaces squeezed out; every character must still be right.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from skimage import data as skdata

from assistant.errors import MediaError
from assistant.media import ocr

pytestmark = pytest.mark.skipif(not ocr.available(), reason="rapidocr-onnxruntime is not installed")

RECEIPT = ["GROCERY STORE", "Milk 1.20", "Bread 2.50", "TOTAL 57.00 EUR"]
DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (fonts-dejavu-core, which fontconfig pulls in), else Pillow's own TrueType."""
    path = DEJAVU / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")
    return ImageFont.truetype(str(path), size) if path.exists() else ImageFont.load_default(size=size)


def receipt(size=(800, 600), lines=RECEIPT, scale=1.0, paper="white", ink="black") -> Image.Image:
    image = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(image)
    face = font(round(36 * scale))
    for row, line in enumerate(lines):
        draw.text((40 * scale, (30 + 70 * row) * scale), line, fill=ink, font=face)
    return image


def squeeze(text: str) -> str:
    return "".join(text.lower().split())


def rows(found: ocr.OcrText) -> list[str]:
    return [squeeze(line) for line in found.text.splitlines()]


RECEIPT_ROWS = [squeeze(line) for line in RECEIPT]


def test_a_receipt_is_read_line_by_line_top_to_bottom():
    found = ocr.read_text(receipt())
    assert found.lines == 4 and rows(found) == RECEIPT_ROWS, found
    assert found.pixels == 800 * 600 and 0 < found.seconds < 30


def test_words_on_one_line_are_joined_left_to_right():
    image = Image.new("RGB", (900, 200), "white")
    draw = ImageDraw.Draw(image)
    draw.text((600, 70), "Tuesday", fill="black", font=font(40))  # drawn first, but on the right
    draw.text((40, 75), "Opening", fill="black", font=font(40))
    found = ocr.read_text(image)
    assert found.lines == 1 and squeeze(found.text) == "openingtuesday", found


def test_a_street_sign_in_a_photo_is_read():
    photo = Image.fromarray(skdata.chelsea()).resize((900, 600))  # a cat behind the sign
    draw = ImageDraw.Draw(photo)
    draw.rounded_rectangle((150, 180, 750, 400), 20, fill=(0, 110, 60), outline="white", width=6)
    draw.text((450, 250), "MAIN STREET", fill="white", font=font(56, bold=True), anchor="mm")
    draw.text((450, 330), "Old Town 2 km", fill="white", font=font(36), anchor="mm")
    # Held a little askew and slightly out of focus, as a phone takes it.
    photo = photo.rotate(4, resample=Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(1))
    assert rows(ocr.read_text(photo)) == ["mainstreet", "oldtown2km"]


def test_a_receipt_on_grey_grainy_unevenly_lit_paper_is_read():
    pixels = np.asarray(receipt(paper=(235, 225, 200), ink=(40, 40, 40))).astype(np.float32)
    pixels *= (0.75 + 0.25 * np.linspace(0, 1, pixels.shape[1]))[None, :, None]  # light from the right
    pixels += np.random.default_rng(0).normal(0, 25, pixels.shape)  # sensor grain
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    assert rows(ocr.read_text(photo)) == RECEIPT_ROWS


def test_an_upside_down_receipt_is_read_in_its_own_order():
    assert rows(ocr.read_text(receipt().rotate(180))) == RECEIPT_ROWS


def test_black_text_on_a_transparent_background_is_read_on_white():
    image = Image.new("RGBA", (600, 160), (0, 0, 0, 0))  # transparent black: dropped alpha = all black
    ImageDraw.Draw(image).text((30, 50), "TOTAL 57.00 EUR", fill="black", font=font(40))
    assert rows(ocr.read_text(image)) == ["total57.00eur"]


def test_a_blank_or_tiny_picture_has_no_text():
    blank = ocr.read_text(Image.new("RGB", (400, 300), "white"))
    assert (blank.text, blank.lines, blank.pixels) == ("", 0, 400 * 300)
    assert ocr.read_text(Image.new("RGB", (8, 8), "black")) == ocr.OcrText("", 0, pytest.approx(0, abs=1), 0)
    # 20000 x 40 becomes 2000 x 4 before reading: too thin to hold text, and never sent to the engine.
    assert ocr.read_text(Image.new("L", (20000, 40), 255)).pixels == 0


def test_a_huge_picture_is_read_downscaled_within_the_caps():
    huge = receipt(size=(800, 800)).resize((8000, 8000), Image.Resampling.BICUBIC)
    prepared = ocr.prepare(huge)
    assert max(prepared.size) <= ocr.MAX_SIDE and prepared.width * prepared.height <= ocr.MAX_PIXELS
    found = ocr.read_text(huge)
    assert found.pixels == prepared.width * prepared.height
    assert rows(found) == RECEIPT_ROWS, found
    assert found.seconds < 30


def test_one_engine_is_made_however_many_calls_come_at_once(monkeypatch):
    import rapidocr_onnxruntime

    made = []
    real = rapidocr_onnxruntime.RapidOCR

    def counted(**kwargs):
        made.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(ocr, "_engine", None)  # a fresh process, as far as OCR knows
    monkeypatch.setattr(rapidocr_onnxruntime, "RapidOCR", counted)
    found: list[ocr.OcrText] = []
    threads = [threading.Thread(target=lambda: found.append(ocr.read_text(receipt()))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(found) == 2 and all(rows(f) == RECEIPT_ROWS for f in found)
    assert len(made) == 1
    assert made[0]["intra_op_num_threads"] <= ocr.THREADS and made[0]["text_score"] == ocr.MIN_SCORE
    engine = ocr._engine
    assert engine is not None and engine.stoppable == 3  # detector, classifier, recogniser
    ocr.read_text(receipt())
    assert ocr._engine is engine and len(made) == 1


def test_a_deadline_stops_a_long_read_and_the_engine_reads_on():
    huge = receipt(size=(2000, 1500), scale=2.5)
    with pytest.raises(MediaError, match=r"took longer than the 0\.2 s allowed"):
        ocr.read_text(huge, deadline_s=0.2)
    with pytest.raises(MediaError, match="no time left"):
        ocr.read_text(huge, deadline_s=0)
    assert rows(ocr.read_text(receipt(), deadline_s=60)) == RECEIPT_ROWS


def test_a_deadline_counts_the_wait_for_the_engine():
    ocr.read_text(receipt())  # the engine exists: the wait below is for the lock alone
    # Another picture is being read all along.
    with ocr._lock, pytest.raises(MediaError, match="OCR is busy with other pictures"):
        ocr.read_text(receipt(), deadline_s=0.2)


def test_an_engine_failure_is_a_media_error_not_a_traceback(monkeypatch):
    ocr.read_text(receipt())
    engine = ocr._engine

    def broken(image):
        raise RuntimeError("Traceback (most recent call last): onnxruntime internals")

    monkeypatch.setattr(engine, "ocr", broken)
    with pytest.raises(MediaError) as caught:
        ocr.read_text(receipt())
    assert str(caught.value) == "the text in this picture could not be read: OCR failed (RuntimeError)"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not ocr._lock.locked()


def test_reading_order_groups_boxes_by_their_heights():
    def box(x, y, h=20, w=50):
        return [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]

    boxes = [(box(300, 102), "2.50"), (box(10, 10), "Shop"), (box(10, 100), "Bread")]
    assert ocr.reading_order(boxes) == ["Shop", "Bread 2.50"]
    # Touching by a few pixels (tight line spacing) is not the same line.
    assert ocr.reading_order([(box(10, 0), "one"), (box(10, 17), "two")]) == ["one", "two"]


def test_a_text_only_model_gets_the_photos_text_marked_as_such(tmp_path):
    from assistant.conversation import Message
    from assistant.models.base import ModelInfo
    from assistant.prompting import PromptBuilder
    from assistant.settings import Settings
    from tests.fakes import FakeChatModel

    model = FakeChatModel()
    model.info = ModelInfo("text-model", "local", "cpu", "none", 4096, vision=False)
    path = tmp_path / "receipt.png"
    receipt().save(path)
    builder = PromptBuilder(Settings(data_dir=tmp_path), model)
    prompt = builder.build([], Message.user("What is the total?", [str(path)]), "", 64)
    sent = prompt.messages[-1]
    assert not sent.images  # nothing it cannot read is sent
    assert "Text read from photo 1 by OCR (this model cannot see pictures)" in sent.text
    assert "57.00" in sent.text and sent.text.endswith("What is the total?")
    assert "photo 1: its text by OCR" in prompt.sent

    off = PromptBuilder(Settings(data_dir=tmp_path, ocr="off"), model)
    quiet = off.build([], Message.user("What is the total?", [str(path)]), "", 64).messages[-1]
    assert "photo 1 is not shown" in quiet.text and "57" not in quiet.text


def test_a_vision_model_gets_the_photo_and_its_text_only_with_ocr_on(tmp_path):
    from assistant.conversation import Message
    from assistant.prompting import PromptBuilder
    from assistant.settings import Settings
    from tests.fakes import FakeChatModel

    model = FakeChatModel()
    path = tmp_path / "receipt.png"
    receipt().save(path)
    message = Message.user("What is the total?", [str(path)])
    auto = PromptBuilder(Settings(data_dir=tmp_path), model).build([], message, "", 64)
    assert auto.messages[-1].images and "OCR" not in auto.messages[-1].text
    on = PromptBuilder(Settings(data_dir=tmp_path, ocr="on"), model).build([], message, "", 64)
    assert on.messages[-1].images and "57.00" in on.messages[-1].text


def test_a_scanned_pdf_is_read_by_ocr_for_every_model(tmp_path):
    from assistant.conversation import Message
    from assistant.models.base import ModelInfo
    from assistant.prompting import PromptBuilder
    from assistant.settings import Settings
    from tests.fakes import FakeChatModel
    from tests.pdf_samples import scanned_pdf

    path = tmp_path / "scan.pdf"
    path.write_bytes(scanned_pdf([receipt(size=(612, 792))]))
    message = Message.user("What is the total?", documents=[str(path)])
    vision = FakeChatModel()
    blind = FakeChatModel()
    blind.info = ModelInfo("text-model", "local", "cpu", "none", 4096, vision=False)
    for model, pictures in ((vision, True), (blind, False)):
        prompt = PromptBuilder(Settings(data_dir=tmp_path), model).build([], message, "", 64)
        sent = prompt.messages[-1]
        assert "--- page 1 (text read by OCR) ---" in sent.text and "57.00" in sent.text, sent.text
        assert bool(sent.images) == pictures
        assert "OCR of page 1" in prompt.sent, prompt.sent


def test_a_text_only_model_gets_the_text_on_a_clips_frames(tmp_path):
    import subprocess

    from assistant.conversation import Message
    from assistant.models.base import ModelInfo
    from assistant.prompting import PromptBuilder
    from assistant.settings import Settings
    from tests.fakes import FakeChatModel

    still = tmp_path / "sign.png"
    receipt(size=(640, 480)).save(still)
    clip = tmp_path / "sign.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-loop", "1", "-t", "2", "-framerate", "10"]
        + ["-i", str(still), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(clip)],
        check=True,
        timeout=120,
    )
    model = FakeChatModel()
    model.info = ModelInfo("text-model", "local", "cpu", "none", 4096, vision=False)
    prompt = PromptBuilder(Settings(data_dir=tmp_path), model).build(
        [], Message.user("What does it say?", videos=[str(clip)]), "", 64
    )
    sent = prompt.messages[-1]
    assert not sent.images and not sent.videos
    assert "Text read from the frames of sign.mp4 by OCR" in sent.text and "57.00" in sent.text
    assert sent.text.count("57.00") == 1  # the same words on every frame are given once
    assert "text of its frames by OCR" in prompt.sent
