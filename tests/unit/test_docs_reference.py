"""The committed reference docs are what the code generates; a change without regenerating fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coldstart_bench import cli
from coldstart_bench.docs_reference import (
    REFERENCE_DIR,
    drifted,
    field_comments,
    option_docs,
    reference_pages,
    write_pages,
)
from coldstart_bench.options import addoption
from coldstart_bench.samples import SAMPLE_FIELDS, Sample


def test_committed_reference_docs_match_the_code() -> None:
    stale = drifted(REFERENCE_DIR, reference_pages())
    assert stale == [], f"docs/reference/{stale} differ from the code: run `coldstart-bench docs`"


def _with_new_option(parser: Any) -> None:
    addoption(parser)
    parser.getgroup("coldstart-bench").addoption("--bench-new-knob", metavar="N", help="a knob added later")


def test_an_option_added_without_regenerating_is_drift() -> None:
    committed = {name: (REFERENCE_DIR / name).read_text() for name in reference_pages()}
    grown = reference_pages(option_docs(_with_new_option))
    assert "--bench-new-knob N" in grown["options.md"]
    assert "--bench-new-knob" not in committed["options.md"]
    assert drifted(REFERENCE_DIR, grown) == ["options.md"]


def test_check_command_fails_on_a_stale_page_and_passes_after_regenerating(tmp_path: Path, capsys: Any) -> None:
    assert cli.main(["docs", "--out", str(tmp_path)]) == 0
    assert cli.main(["docs", "--check", "--out", str(tmp_path)]) == 0
    page = tmp_path / "samples.md"
    page.write_text(page.read_text().replace("`connect_us`", "`connect_ms`", 1))
    assert cli.main(["docs", "--check", "--out", str(tmp_path)]) == 1
    assert "samples.md differs from the code" in capsys.readouterr().err
    (tmp_path / "options.md").unlink()
    assert drifted(tmp_path, reference_pages()) == ["options.md", "samples.md"]


def test_every_option_sample_column_and_scenario_is_documented(tmp_path: Path) -> None:
    write_pages(tmp_path, reference_pages())
    options = (tmp_path / "options.md").read_text()
    for o in option_docs():
        assert f"`{o.names[0]}" in options
    samples = (tmp_path / "samples.md").read_text()
    assert all(f"| `{name}` |" in samples for name in SAMPLE_FIELDS)
    assert "| `socket` | thesis |" in (tmp_path / "scenarios.md").read_text()


def test_field_comments_take_the_trailing_or_the_preceding_comment() -> None:
    notes = field_comments(Sample)
    assert notes["delay_ms"] == "configured SYN-ACK delay of the scenario"
    assert "how the connection arrived" in notes["handoff"]
