"""`save_nvidia_pickle`: NVIDIA's snapshot layout without code, read back by our restricted loader."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from support.golden import GENERATOR_FIXTURES, golden_dir
from sgtool import kernels
from sgtool.models import load_generator
from sgtool.models.nvidia_pickle import MODULE_SRC, save_nvidia_pickle
from sgtool.models.safe_pickle import ALLOWED_GLOBALS, PersistentRecord, RestrictedUnpickler, restricted_load


@pytest.fixture(autouse=True)
def _reference_ops_one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with kernels.use("ref"):
        yield
    torch.set_num_threads(previous)


def globals_in(path) -> set[tuple[str, str]]:
    """Every (module, name) the pickle imports (loading through the restricted unpickler)."""
    seen = set()

    class Recording(RestrictedUnpickler):
        def find_class(self, module, name):
            seen.add((module, name))
            return super().find_class(module, name)

    with open(path, "rb") as f:
        Recording(f).load()
    return seen


@pytest.mark.parametrize("name", GENERATOR_FIXTURES)
def test_round_trip_renders_identically(name, tmp_path):
    G = load_generator(golden_dir("generators") / f"{name}.pkl")
    modules_before = set(sys.modules)
    path = save_nvidia_pickle(G, tmp_path / "G.pkl")
    assert set(sys.modules) == modules_before  # the temporary stand-in modules are gone
    used = globals_in(path)
    assert used <= set(ALLOWED_GLOBALS)
    assert {("torch_utils.persistence", "_reconstruct_persistent_obj"), ("dnnlib.util", "EasyDict")} <= used
    assert b"import " not in path.read_bytes() and b"def " not in path.read_bytes()

    reloaded = load_generator(path)
    assert reloaded.kind == G.kind and reloaded.init_kwargs == G.init_kwargs
    for key, value in G.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    ws = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(0)), None)
    with torch.no_grad():
        assert torch.equal(reloaded.synthesis(ws), G.synthesis(ws))


def test_snapshot_layout_matches_nvidias(tmp_path):
    G = load_generator(golden_dir("generators") / "sg3t_64.pkl")
    path = save_nvidia_pickle(G, tmp_path / "G.pkl")
    with open(path, "rb") as f:
        snapshot = restricted_load(f)
    assert list(snapshot) == ["G", "D", "G_ema", "augment_pipe", "training_set_kwargs"]
    record = snapshot["G_ema"]
    assert snapshot["G"] is record and snapshot["D"] is None and snapshot["augment_pipe"] is None
    assert snapshot["training_set_kwargs"]["resolution"] == 64
    assert isinstance(record, PersistentRecord) and record.class_name == "Generator" and record.version == 6
    assert record.init_args == () and record.init_kwargs["mapping_kwargs"] == {"num_layers": 2}
    assert type(record.init_kwargs["mapping_kwargs"]).__name__ == "EasyDict"
    layer = record.submodules["synthesis"].submodules["L1_36_16"]
    assert layer.class_name == "SynthesisLayer"
    assert isinstance(layer.state["_parameters"]["weight"], torch.nn.Parameter)
    assert layer.state["up_factor"] == 2 and list(layer.state["in_size"]) == [36, 36]
    assert MODULE_SRC.encode() in path.read_bytes()


def test_writes_beside_real_modules_of_the_same_names(tmp_path, monkeypatch):
    # A process that imported NVIDIA's dnnlib, and an unrelated top-level `torch_utils` package.
    dnnlib_util = types.ModuleType("dnnlib.util")
    dnnlib_util.EasyDict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    monkeypatch.setitem(sys.modules, "dnnlib", types.ModuleType("dnnlib"))
    monkeypatch.setitem(sys.modules, "dnnlib.util", dnnlib_util)
    sys.modules["dnnlib"].util = dnnlib_util
    unrelated = types.ModuleType("torch_utils")
    monkeypatch.setitem(sys.modules, "torch_utils", unrelated)
    G = load_generator("tiny-stylegan2")
    path = save_nvidia_pickle(G, tmp_path / "G.pkl")
    assert "torch_utils.persistence" not in sys.modules and not hasattr(unrelated, "persistence")
    assert sys.modules["dnnlib.util"] is dnnlib_util
    ws = G.mapping(torch.zeros(1, G.z_dim), None)
    with torch.no_grad():
        assert torch.equal(load_generator(path).synthesis(ws), G.synthesis(ws))
