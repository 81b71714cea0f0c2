"""Running the ``scimd`` command in-process, as the CLI tests do."""

from __future__ import annotations

from typer.testing import CliRunner

from scimd.cli.main import app

runner = CliRunner()


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    """What the command printed on stdout (notes and warnings go to stderr)."""
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout
