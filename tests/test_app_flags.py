"""app.py: every flag documented, each with an ASSISTANT_* environment twin; safe defaults."""

import pytest

import app
from assistant import flags


def parse(argv=(), env=None):
    parser = app.build_parser()
    flags.apply_environment(parser, env or {})
    return app.settings_from_args(parser.parse_args(list(argv)))


def test_safe_defaults():
    s = parse()
    assert s.host == "127.0.0.1" and s.port == 7860 and not s.share
    assert s.auth == () and s.api_key is None and not s.allow_remote_images
    assert s.max_image_bytes == 20 * 1024 * 1024


def test_every_flag_has_an_environment_twin():
    parser = app.build_parser()
    declared = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(declared) > 20
    for action in declared:
        assert action.help, f"{action.option_strings[-1]} is undocumented"
        assert flags.env_name(action.option_strings[-1]).startswith("ASSISTANT_")


def test_environment_sets_defaults_and_flags_win():
    env = {
        "ASSISTANT_MODEL": "/models/x",
        "ASSISTANT_PORT": "9000",
        "ASSISTANT_SHARE": "true",
        "ASSISTANT_API_KEY": "k",
        "ASSISTANT_AUTH": "a:b,c:d",
        "ASSISTANT_ASR_BEAM_SIZE": "1",
    }
    s = parse(env=env)
    assert (s.model, s.port, s.share, s.api_key, s.asr_beam_size) == ("/models/x", 9000, True, "k", 1)
    assert s.auth == (("a", "b"), ("c", "d"))
    assert parse(["--port", "7000", "--model", "/m"], env).port == 7000
    assert parse(["--port", "7000", "--model", "/m"], env).model == "/m"


def test_auth_file_and_bad_auth(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("# people\nann:secret\nbob:pa:ss\n")
    assert parse(["--auth-file", str(users)]).auth == (("ann", "secret"), ("bob", "pa:ss"))
    with pytest.raises(SystemExit, match="USER:PASSWORD"):
        parse(["--auth", "nopassword"])


def test_remote_backend_needs_base_url():
    with pytest.raises(SystemExit, match="base-url"):
        parse(["--backend", "openai"])


def test_gradios_queue_polls_calmly(tmp_path):
    # Gradio polls its queue every 1 ms by default, taking CPU from a model decoding on the same
    # cores; a Gradio that renamed these attributes would silently bring that back.
    from assistant.core import Assistant
    from assistant.settings import Settings
    from tests.fakes import FakeChatModel

    settings = Settings(data_dir=tmp_path / "data")
    _, blocks = app.build_server(Assistant(settings, FakeChatModel()), settings)
    assert blocks._queue.sleep_when_free == app.QUEUE_POLL_S > 0.001
    assert blocks._queue.progress_update_sleep_when_free == app.PROGRESS_POLL_S
