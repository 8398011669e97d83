"""The README stays true to the code: every setting is documented."""

from __future__ import annotations

from pathlib import Path

from streamrec.stream.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_readme_configuration_table():
    missing = [
        f"STREAMREC_{name.upper()}"
        for name in Settings.model_fields
        if f"`STREAMREC_{name.upper()}`" not in README
    ]
    assert missing == []


def test_the_readme_names_the_two_quick_start_commands():
    assert "make demo" in README
    assert "make test" in README
