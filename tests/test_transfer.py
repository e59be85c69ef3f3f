"""Export a chat as Markdown and JSON (photos included) and import the JSON again."""

from __future__ import annotations

import base64
import json

import pytest
from PIL import Image

from assistant import transfer
from assistant.conversation import Message
from assistant.errors import InvalidParams
from assistant.store import HistoryStore


def test_export_and_import_round_trip_with_the_photo(tmp_path):
    photo = tmp_path / "leaf.png"
    Image.new("RGB", (20, 10), (0, 200, 0)).save(photo)
    store = HistoryStore(tmp_path / "data")
    cid, saved = store.save(
        None, [Message.user("What **plant**?", [str(photo)]), Message("assistant", "A fern.")]
    )
    loaded = store.load(cid)
    markdown = transfer.to_markdown(loaded.title, loaded.messages)
    assert markdown.startswith("# What plant?") and "A fern." in markdown
    assert "](data:image/png;base64," in markdown and "gradio_api" not in markdown
    exported = json.dumps(transfer.to_json(loaded.title, loaded.messages))

    (tmp_path / "in").mkdir()
    title, messages = transfer.from_json(exported, tmp_path / "in")
    assert title == loaded.title
    assert [(m.role, m.text) for m in messages] == [(m.role, m.text) for m in loaded.messages]
    assert messages[0].created == loaded.messages[0].created
    assert Image.open(messages[0].images[0]).size == (20, 10)
    again, _ = store.save(None, messages, owner="bob")
    assert store.load(again, "bob").messages[0].images[0].startswith(str(store.media_dir / again))


@pytest.mark.parametrize(
    "raw, why",
    [
        ("not json", "not JSON"),
        ('{"format": "other"}', "format"),
        (json.dumps({"format": transfer.FORMAT, "version": 1, "messages": []}), "no messages"),
        (
            json.dumps(
                {"format": transfer.FORMAT, "version": 1, "messages": [{"role": "system", "text": "x"}]}
            ),
            "role",
        ),
        (
            json.dumps(
                {
                    "format": transfer.FORMAT,
                    "version": 1,
                    "messages": [
                        {
                            "role": "user",
                            "text": "x",
                            "attachments": [{"kind": "image", "data": base64.b64encode(b"<svg/>").decode()}],
                        }
                    ],
                }
            ),
            "not a supported image",
        ),
    ],
)
def test_import_refuses_what_is_not_an_export(tmp_path, raw, why):
    with pytest.raises(InvalidParams, match=why):
        transfer.from_json(raw, tmp_path)
