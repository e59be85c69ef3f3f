"""OCR (PP-OCRv4 through rapidocr-onnxruntime, real models) on rendered pictures: what it reads,
in which order, within which bounds; and how the prompt builder hands it to a text-only model."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw, ImageFont

from assistant.media import ocr

pytestmark = pytest.mark.skipif(not ocr.available(), reason="rapidocr-onnxruntime is not installed")

RECEIPT = ["GROCERY STORE", "Milk 1.20", "Bread 2.50", "TOTAL 57.00 EUR"]


def receipt(size=(800, 600), lines=RECEIPT, scale=1.0) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=round(36 * scale))  # Pillow's own scalable font
    for row, line in enumerate(lines):
        draw.text((40 * scale, (30 + 70 * row) * scale), line, fill="black", font=font)
    return image


def squeeze(text: str) -> str:
    return "".join(text.lower().split())  # the model often drops the space between words


def test_a_receipt_is_read_line_by_line_top_to_bottom():
    found = ocr.read_text(receipt())
    assert found.lines == 4, found
    rows = [squeeze(line) for line in found.text.splitlines()]
    assert rows == [squeeze(line) for line in RECEIPT], found.text


def test_words_on_one_line_are_joined_left_to_right():
    image = Image.new("RGB", (900, 200), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    draw.text((600, 70), "Tuesday", fill="black", font=font)  # drawn first, but on the right
    draw.text((40, 75), "Opening", fill="black", font=font)
    assert squeeze(ocr.read_text(image).text) == "openingtuesday"


def test_a_blank_or_tiny_picture_has_no_text():
    assert ocr.read_text(Image.new("RGB", (400, 300), "white")).text == ""
    assert ocr.read_text(Image.new("RGB", (8, 8), "black")).lines == 0


def test_a_huge_picture_is_read_downscaled():
    found = ocr.read_text(receipt(size=(8000, 6000), scale=10))
    assert found.pixels <= ocr.MAX_SIDE * ocr.MAX_SIDE
    assert "57.00" in found.text and "total" in found.text.lower()


def test_reading_order_groups_boxes_by_their_heights():
    def box(x, y, h=20, w=50):
        return [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]

    boxes = [(box(300, 102), "2.50"), (box(10, 10), "Shop"), (box(10, 100), "Bread")]
    assert ocr.reading_order(boxes) == ["Shop", "Bread 2.50"]


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
    builder = PromptBuilder(Settings(data_dir=tmp_path), lambda: model)
    prompt = builder.build([], Message.user("What is the total?", [str(path)]), "", 64)
    sent = prompt.messages[-1]
    assert not sent.images  # nothing it cannot read is sent
    assert "Text read from photo 1 by OCR (this model cannot see pictures)" in sent.text
    assert "57.00" in sent.text and sent.text.endswith("What is the total?")
    assert "photo 1: its text by OCR" in prompt.sent

    off = PromptBuilder(Settings(data_dir=tmp_path, ocr="off"), lambda: model)
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
    auto = PromptBuilder(Settings(data_dir=tmp_path), lambda: model).build([], message, "", 64)
    assert auto.messages[-1].images and "OCR" not in auto.messages[-1].text
    on = PromptBuilder(Settings(data_dir=tmp_path, ocr="on"), lambda: model).build([], message, "", 64)
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
        prompt = PromptBuilder(Settings(data_dir=tmp_path), lambda m=model: m).build([], message, "", 64)
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
    prompt = PromptBuilder(Settings(data_dir=tmp_path), lambda: model).build(
        [], Message.user("What does it say?", videos=[str(clip)]), "", 64
    )
    sent = prompt.messages[-1]
    assert not sent.images and not sent.videos
    assert "Text read from the frames of sign.mp4 by OCR" in sent.text and "57.00" in sent.text
    assert sent.text.count("57.00") == 1  # the same words on every frame are given once
    assert "text of its frames by OCR" in prompt.sent
