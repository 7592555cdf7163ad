"""`make demo`'s job runs offline on the built-in test generator and says that it is one."""

import json

from PIL import Image
from rich.console import Console

from sgtool.demo import run_demo


def test_demo_renders_grid_and_sweep_with_banner(tmp_path):
    console = Console(record=True, width=120)
    record = run_demo(tmp_path, console=console)
    assert "TEST model" in console.export_text()
    grid = Image.open(tmp_path / "samples_grid.png")
    assert grid.size == (8 * 64, 2 * 64)
    sweep = Image.open(tmp_path / "rotate_translate_sweep.png")
    assert sweep.size == (7 * 64, 2 * 64)
    assert json.loads((tmp_path / "demo.json").read_text())["test_model"] is True
    assert record["outputs"]["sweep"].endswith("rotate_translate_sweep.png")
