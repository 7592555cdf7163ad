"""Settings: each declared once. configs/*.yaml, the CLI options and the model fields agree; values load in
order defaults -> shipped YAML -> --config -> --set -> CLI, converted and checked, with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer.main
from pydantic import ValidationError

from sgtool.cli import app
from sgtool.errors import SgtoolError
from sgtool.settings import (COMMAND_SETTINGS, EditSettings, GenerateSettings, TuneSettings, VideoSettings,
                             defaults_yaml, load_settings)
from sgtool.settings import base
from sgtool.settings.base import Cli, config_path, field_for_key, key_of, metadata_of, read_config_file, section_model

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = sorted(COMMAND_SETTINGS)
RUN_LEVEL = {"--config", "--set", "--json", "--shard", "--help", "-h"}  # options of a run, not settings


# --------------------------------------------------------------------------------------------------
# configs/, the CLI and the models agree


def test_top_level_configs_is_the_package_data():
    link = ROOT / "configs"
    assert link.is_symlink() and os.readlink(link) == "src/sgtool/configs"
    assert link.resolve() == base.CONFIG_DIR.resolve()
    assert all(path.exists() for path in link.iterdir())  # no broken link inside (bug 9: configs/configs)


@pytest.mark.parametrize("command", COMMANDS)
def test_configs_yaml_holds_the_models_generated_defaults(command):
    model = COMMAND_SETTINGS[command]
    path = ROOT / "configs" / config_path(command).name
    assert path.is_file(), f"{path} does not resolve"
    assert read_config_file(path) == model().model_dump(mode="json", by_alias=True)
    # The text too (comments are the fields' help), all but the title line; `python -m sgtool.settings` writes it.
    assert path.read_text().splitlines()[1:] == defaults_yaml(model, "").splitlines()[1:]
    assert load_settings(model, command) == model()


def _yaml_keys_are_fields(model, data: dict, where: str) -> None:
    assert set(data) == {key_of(model, name) for name in model.model_fields}, where
    for key, value in data.items():
        section = section_model(model, field_for_key(model, key))
        if section is not None and isinstance(value, dict):
            _yaml_keys_are_fields(section, value, f"{where}.{key}")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_yaml_key_is_a_field(command):
    _yaml_keys_are_fields(COMMAND_SETTINGS[command], read_config_file(ROOT / "configs" / config_path(command).name),
                          command)


def _declared_flags(model) -> dict[str, str]:
    """Every command-line spelling the model declares -> the key it sets."""
    flags = {}

    def add(key: str, cli: Cli, name: str) -> None:
        for flag in (cli.flag or "--" + name.replace("_", "-"), cli.short, *cli.hidden):
            if flag:
                flags[flag] = key

    for name in model.model_fields:
        cli = metadata_of(model, name, Cli)
        if cli is not None:
            add(key_of(model, name), cli, name)
    for dotted, cli in model.cli_nested.items():
        add(dotted, cli, dotted.replace(".", "_"))
    return flags


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_options_and_settings_fields_agree(command):
    declared = _declared_flags(COMMAND_SETTINGS[command])
    click_command = typer.main.get_command(app)
    for word in command.split():  # `directions sefa`: a command of a group
        click_command = click_command.commands[word]
    offered = {flag for param in click_command.params if param.param_type_name == "option"
               for flag in param.opts + param.secondary_opts}
    assert not set(declared) - offered, f"settings without their option: {sorted(set(declared) - offered)}"
    negations = {flag for flag in offered if flag.startswith("--no-") and "--" + flag[5:] in declared}
    extra = offered - RUN_LEVEL - negations - set(declared)
    assert not extra, f"options that set no field of {COMMAND_SETTINGS[command].__name__}: {sorted(extra)}"


# --------------------------------------------------------------------------------------------------
# Loading


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """An empty folder standing in for the shipped configs/ (write <command>.yaml into it)."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    monkeypatch.setattr(base, "CONFIG_DIR", folder)
    return folder


def test_load_order_defaults_yaml_config_set_cli(shipped, tmp_path):
    (shipped / "generate.yaml").write_text("seeds: '1'\ntrunc: 0.1\nrotate: 1\nsave_latents: true\n")
    user = tmp_path / "user.yaml"
    user.write_text("trunc: 0.2\nrotate: 2\nnoise_mode: none\n")
    settings = load_settings(GenerateSettings, "generate", user, ["rotate=3", "noise_mode=none"],
                             {"noise_mode": "random"})
    assert settings.grid_max == 64  # the model's default
    assert (settings.seeds, settings.save_latents) == ("1", True)  # shipped YAML
    assert settings.trunc == 0.2  # --config over the YAML
    assert settings.rotate == 3.0  # --set over --config
    assert settings.noise_mode == "random"  # the command line over everything


def test_nested_set_is_converted_and_keeps_the_rest_of_its_section(shipped):
    settings = load_settings(VideoSettings, "video", overrides=["tune.lr=1e-4", "landmark_smoothing.window=7"])
    assert isinstance(settings.tune.lr, float) and settings.tune.lr == 1e-4  # bug 2: YAML reads 1e-4 as text
    assert settings.landmark_smoothing.window == 7
    assert (settings.tune.steps, settings.tune.batch_size) == (200, 2)  # the section's own defaults survive
    with pytest.raises(SgtoolError, match=r"setting tune\.lr = 'fast' \(from --set tune\.lr=fast\)"):
        load_settings(VideoSettings, "video", overrides=["tune.lr=fast"])


@pytest.mark.parametrize("item, message", [
    ("colour=red", "unknown setting 'colour' in --set colour=red; known keys: class, device"),
    ("trunc.x=1", "setting 'trunc' in --set trunc.x=1 is a single value, not a section (write trunc=VALUE)"),
    ("trunc=.nan", "setting trunc = nan (from --set trunc=.nan): Input should be a finite number"),
    ("trunc=.inf", "setting trunc = inf (from --set trunc=.inf): Input should be a finite number"),
    ("trunc=abc", "setting trunc = 'abc' (from --set trunc=abc): Input should be a valid number"),
    ("trunc=99", "setting trunc = 99 (from --set trunc=99): Input should be less than or equal to 10"),
    ("trunc", "--set expects key=value"),
])
def test_bad_values_are_one_line_naming_key_value_and_source(shipped, item, message):
    with pytest.raises(SgtoolError) as info:
        load_settings(GenerateSettings, "generate", overrides=[item])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unknown_key_inside_a_section_names_the_section(shipped):
    with pytest.raises(SgtoolError, match=r"unknown setting 'tune\.colour' in --set tune\.colour=1; known keys of "
                                          r"tune: batch_size"):
        load_settings(VideoSettings, "video", overrides=["tune.colour=1"])


def test_bad_value_in_a_file_names_the_file(shipped, tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("noise_mode: loud\n")
    with pytest.raises(SgtoolError, match=rf"setting noise_mode = 'loud' \(from --config {user}\)"):
        load_settings(GenerateSettings, "generate", user)


def test_old_names_are_accepted_once(shipped, tmp_path):
    assert load_settings(TuneSettings, "tune", overrides=["random_lpips_backbone=true"]).lpips_random_backbone
    old = tmp_path / "old.yaml"
    old.write_text("edit_layers: 0-3\nextra_directions: {smile: s.npy}\n")
    settings = load_settings(EditSettings, "edit", old)
    assert settings.layers == [0, 1, 2, 3] and settings.directions == ["smile=s.npy"]
    with pytest.raises(ValidationError, match="'random_lpips_backbone' is the old name of 'lpips_random_backbone'; "
                                              "give only one of them"):
        TuneSettings(random_lpips_backbone=True, lpips_random_backbone=False)  # Python keywords: the old name too


def test_config_that_is_a_directory_or_binary_is_one_line(shipped, tmp_path):
    with pytest.raises(SgtoolError, match=rf"config file {tmp_path} is a directory; give a YAML file"):
        load_settings(GenerateSettings, "generate", tmp_path)
    binary = tmp_path / "weights.pt"
    binary.write_bytes(b"\x80\x02\xff\xfe\x00\x81 pickled")
    with pytest.raises(SgtoolError, match=rf"config file {binary} is not a text file"):
        load_settings(GenerateSettings, "generate", binary)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SgtoolError, match="must hold a mapping of keys to values, not a list"):
        load_settings(GenerateSettings, "generate", listing)
    with pytest.raises(SgtoolError, match="does not exist"):
        load_settings(GenerateSettings, "generate", tmp_path / "missing.yaml")


def test_cli_error_exits_2_before_any_work(tmp_path):
    from typer.testing import CliRunner

    config = tmp_path / "bad.yaml"
    config.write_text("trunc: [1, 2]\n")
    result = CliRunner().invoke(app, ["generate", "--config", str(config), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and f"setting trunc = [1, 2] (from --config {config})" in result.stderr
    assert not (tmp_path / "out").exists()
