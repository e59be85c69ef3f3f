"""Which project files one turn runs code in, and how often it enters the engine's hub.

    .venv/bin/python -m tools.turn_files          # the page turn and the /v1 request
    .venv/bin/python -m tools.turn_files --calls  # also each file's call count
    .venv/bin/python -m tools.turn_files --functions  # the functions, and each way into the hub

Two turns, each with a few words and a small photo, over the scripted ``FakeChatModel`` of
the unit tests (no model, no network):

- **page**: the handlers ``ui/page.py`` wires to the box's Enter, called as it chains them:
  ``actions.send``, then the answer (``voice.speaking(as_owner(respond))``) to its end, then
  ``report_error`` and the version arrows (``render.versions``);
- **api**: one ``POST /v1/chat/completions`` (not streamed) with the photo as a data URL,
  through FastAPI's ``TestClient`` on the app's ``/v1`` router.

``sys.setprofile`` and ``threading.setprofile`` (the engine and the API run parts of a turn
on threads of their own) record every Python function called while the turn runs, never
during setup or imports. Printed per turn: the project files (under ``assistant/``, ``ui/``,
``api/``, ``web/``) that ran code, sorted; how many times control entered
``assistant/core.py`` from another file; how many of those entries were re-entries (from
another project file while ``assistant/core.py`` is on that thread's stack: the hub calling
out, and being called back), and how many were callbacks from library code (a
``threading.Condition.wait_for`` predicate).
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("assistant", "ui", "api", "web")
HUB = "assistant/core.py"


def project_file(filename: str) -> str | None:
    """``filename`` relative to the repository when it is one of the project's, else None."""
    try:
        relative = Path(filename).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return None
    return relative if relative.split("/", 1)[0] in PACKAGES else None


class Recorder:
    """Counts calls into project files, and entries into the hub, while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.calls: Counter[str] = Counter()
        self.hub_entries = 0
        self.hub_reentries = 0
        self.hub_callbacks = 0
        self.functions: Counter[str] = Counter()  # "file: function"
        self.ways_in: Counter[str] = Counter()  # "caller file:function -> hub function (re-entry)"
        self._lock = threading.Lock()
        self._names: dict[str, str | None] = {}  # filename -> project file (memo)

    def _file(self, filename: str) -> str | None:
        found = self._names.get(filename, "")
        if found == "":
            found = self._names[filename] = project_file(filename)
        return found

    def profile(self, frame, event, arg) -> None:
        if event != "call" or not self.on:
            return
        name = self._file(frame.f_code.co_filename)
        if name is None:
            return
        entry = reentry = callback = False
        if name == HUB:
            caller = frame.f_back
            by = self._file(caller.f_code.co_filename) if caller is not None else None
            if by != HUB:
                entry = True
                up = caller.f_back if caller is not None else None
                while up is not None:
                    if self._file(up.f_code.co_filename) == HUB:
                        # Called back by a project module the hub called (a re-entry), or by
                        # library code (e.g. the predicate threading.Condition.wait_for calls).
                        reentry, callback = by is not None, by is None
                        break
                    up = up.f_back
        with self._lock:
            self.calls[name] += 1
            self.functions[f"{name}: {frame.f_code.co_name}"] += 1
            self.hub_entries += entry
            self.hub_reentries += reentry
            self.hub_callbacks += callback
            if entry:
                caller = frame.f_back
                where = f"{self._file(caller.f_code.co_filename)}:{caller.f_code.co_name}" if caller else "?"
                again = " (re-entry)" if reentry else " (callback)" if callback else ""
                self.ways_in[f"{where} -> {frame.f_code.co_name}{again}"] += 1

    def __enter__(self) -> Recorder:
        self.calls.clear()
        self.functions.clear()
        self.ways_in.clear()
        self.hub_entries = self.hub_reentries = self.hub_callbacks = 0
        self.on = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.on = False


def png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 10)).save(buffer, "PNG")
    return buffer.getvalue()


def page_turn(recorder: Recorder, folder: Path) -> None:
    """One turn as the page runs it: Enter in the box (words and a photo) and its answer."""
    from functools import partial

    from assistant.core import Assistant
    from assistant.options import knobs
    from assistant.settings import Settings
    from assistant.store import HistoryStore
    from tests.fakes import FakeChatModel
    from ui import actions, page, render, voice  # noqa: F401  (page: everything it imports)
    from ui.actions import report_error, respond
    from ui.session import ChatSession, as_owner

    settings = Settings(model="fake", data_dir=folder / "page")
    model = FakeChatModel()
    assistant = Assistant(settings, model)
    store = HistoryStore(settings.data_dir)
    session = ChatSession()
    photo = folder / "leaf.png"
    photo.write_bytes(png_bytes())
    defaults = assistant.params()
    # The settings panel's values as a fresh page sends them (ui/page.py: panel.inputs).
    panel = ["default", "", *(getattr(defaults, name) for name, _, knob in knobs() if knob.label)]
    answer = voice.speaking(voice.VoiceHub(), assistant, as_owner(partial(respond, assistant, store)))
    with recorder:
        actions.send(session, {"text": "What plant is this?", "files": [str(photo)]})
        for _ in answer(None, "", session, *panel):
            pass
        report_error(session)
        render.versions(session.messages, session.others)
    assert model.requests and len(model.requests[-1].messages[-1].images) == 1, "the photo was not sent"
    assert session.messages[-1].text == "Hello, world!", session.messages


def api_turn(recorder: Recorder) -> None:
    """One ``POST /v1/chat/completions`` with words and a photo (a data URL)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from api import install_api
    from assistant.core import Assistant
    from assistant.settings import Settings
    from tests.fakes import FakeChatModel

    settings = Settings(api_key="turn-files")
    model = FakeChatModel()
    assistant = Assistant(settings, model)
    app = FastAPI()
    install_api(app, assistant, settings)
    url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    body = {
        "model": "fake",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What plant is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    }
    with TestClient(app, headers={"Authorization": "Bearer turn-files"}) as client:
        client.get("/v1/models")  # the client's own first-request set-up, outside the turn
        with recorder:
            response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello, world!"
    assert len(model.requests[-1].messages[-1].images) == 1, "the photo was not sent"


def report(title: str, recorder: Recorder, calls: bool, functions: bool) -> None:
    files = sorted(recorder.calls)
    print(f"{title}: {len(files)} project files")
    for name in files:
        print(f"  {name}" + (f"  ({recorder.calls[name]} calls)" if calls else ""))
        if functions:
            for where, count in sorted(recorder.functions.items()):
                if where.startswith(f"{name}: "):
                    print(f"      {where.split(': ', 1)[1]} x{count}")
    print(f"  entries into {HUB} from another file: {recorder.hub_entries}")
    print(f"  of them re-entries (from a project file, {HUB} on the stack): {recorder.hub_reentries}")
    print(f"  of them callbacks (from library code, {HUB} on the stack): {recorder.hub_callbacks}")
    if functions:
        for way, count in sorted(recorder.ways_in.items()):
            print(f"      {way} x{count}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", action="store_true", help="show each file's call count")
    parser.add_argument(
        "--functions", action="store_true", help="show the functions called, and each way into the hub"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from assistant.environment import QUIET_OFFLINE, quiet

    quiet(QUIET_OFFLINE)
    recorder = Recorder()
    threading.setprofile(recorder.profile)  # every thread started from here on
    sys.setprofile(recorder.profile)
    try:
        with tempfile.TemporaryDirectory() as folder:
            page_turn(recorder, Path(folder))
            report("page turn (text + photo)", recorder, args.calls, args.functions)
            api_turn(recorder)
            report("POST /v1/chat/completions (text + photo)", recorder, args.calls, args.functions)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
