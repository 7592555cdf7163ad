"""Results a person reads (tables, listings) go to stdout, where `> file` and pipes get them; messages to stderr."""

from __future__ import annotations

import json

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


def test_config_show_lists_every_setting_with_its_value_and_source(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("jpeg_quality: 90\npti:\n  lr: 0.001\n")
    result = runner.invoke(app, ["config", "show", "edit", "--config", str(config), "--set", "pti.steps=20",
                                 "--json"])
    assert result.exit_code == 0, result.stderr
    rows = {row["key"]: row for row in json.loads(result.stdout)["settings"]}
    assert rows["pti.lr"]["value"] == 0.001 and rows["pti.lr"]["source"] == f"--config {config}"
    assert rows["pti.steps"]["value"] == 20 and rows["pti.steps"]["source"] == "--set pti.steps=20"
    assert rows["jpeg_quality"]["value"] == 90 and rows["fps"] == {"key": "fps", "value": 8.0, "source": "default"}
    from sgtool.settings import EditSettings
    from sgtool.settings.base import key_of

    assert {key.split(".")[0] for key in rows} == {key_of(EditSettings, n) for n in EditSettings.model_fields}
    table = runner.invoke(app, ["config", "show", "directions", "sefa"])
    assert table.exit_code == 0 and "preview_trunc" in table.stdout and "default" in table.stdout
    bad = runner.invoke(app, ["config", "show", "edit", "--set", "pti.lr=-1"])
    assert bad.exit_code == 2 and "setting pti.lr = -1 (from --set pti.lr=-1)" in bad.stderr
