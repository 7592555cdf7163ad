"""Results a person reads (tables, listings) go to stdout, where `> file` and pipes get them; messages to stderr."""

from __future__ import annotations

from typer.testing import CliRunner

from support.golden import golden_dir
from sgtool.cli import app

runner = CliRunner()


def test_info_table_is_on_stdout():
    result = runner.invoke(app, ["info", str(golden_dir("generators", "sg2_64.pkl"))])
    assert result.exit_code == 0, result.stderr
    assert "stylegan2" in result.stdout and "num_ws" in result.stdout.replace(" ", "")
    assert result.stderr.strip() == ""


def test_models_list_table_is_on_stdout_and_the_licence_note_on_stderr():
    result = runner.invoke(app, ["models", "list", "--kind", "generator"])
    assert result.exit_code == 0, result.stderr
    assert "stylegan3-r-ffhq-1024" in result.stdout and "cache:" in result.stdout
    assert "Licences" in result.stderr and "Licences" not in result.stdout
