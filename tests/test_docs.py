"""Generated reference docs must match the code; the README must cover every command."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetrail import reference

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("name", "render"), [
    ("fields.md", reference.fields_markdown),
    ("config.md", reference.config_markdown),
    ("cli.md", reference.cli_markdown),
    ("sigma.md", reference.sigma_markdown),
    ("pack.md", reference.pack_markdown),
])
def test_generated_docs_are_current(name: str, render: object) -> None:
    committed = (ROOT / "docs" / name).read_text()
    assert committed == render(), (  # type: ignore[operator]
        f"docs/{name} is stale: run `python -m kubetrail.reference docs`")


def test_readme_documents_every_command_and_the_two_make_targets() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for command in reference.command_paths():
        assert f"kubetrail {command}" in readme, command
