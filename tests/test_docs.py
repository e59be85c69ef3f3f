"""README stays true: its flag table is the one generated from the Settings declarations."""

from pathlib import Path

import app
from tools import flag_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_flag_table_is_generated_from_the_declarations():
    text = README.read_text(encoding="utf-8")
    assert flag_table.current(text) == flag_table.block(), (
        "README's flag table is out of date: run `make docs`"
    )


def test_every_flag_of_the_app_is_in_the_readme():
    table = flag_table.current(README.read_text(encoding="utf-8")) or ""
    for action in app.build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert f"`{action.option_strings[-1]}`" in table, f"{action.option_strings[-1]} is undocumented"


def test_a_stale_table_is_caught(tmp_path):
    stale = tmp_path / "README.md"
    stale.write_text(README.read_text(encoding="utf-8").replace("`--port`", "`--prot`"), encoding="utf-8")
    assert flag_table.main(["--check", str(stale)]) == 1
    assert flag_table.main([str(stale)]) == 0 and flag_table.main(["--check", str(stale)]) == 0
