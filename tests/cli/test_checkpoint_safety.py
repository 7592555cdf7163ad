"""Loading never runs code from a checkpoint, and bad files fail with one clear line (exit 2)."""

from __future__ import annotations

import collections
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sgtool.cli import app
from sgtool.errors import CheckpointError
from sgtool.models import build_builtin, load_generator

runner = CliRunner()


@pytest.fixture
def nvidia_persistence(monkeypatch):
    """Stand-ins for NVIDIA's torch_utils.persistence and dnnlib, as a user with their repo on sys.path has.

    Like the real hook, `_reconstruct_persistent_obj` executes the record's module source: that is
    exactly what plain `pickle.load` of an official .pkl does.
    """
    persistence = types.ModuleType("torch_utils.persistence")
    dnnlib_util = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):
        namespace = {}
        exec(meta["module_src"], namespace)
        return meta["class_name"]

    class EasyDict(dict):
        pass

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    dnnlib_util.EasyDict = EasyDict
    for name, module in {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
                         "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": dnnlib_util}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return persistence, EasyDict


class Persistent:
    """Pickles as NVIDIA's persistent-object record."""

    def __init__(self, hook, meta):
        self.hook, self.meta = hook, meta

    def __reduce__(self):
        return self.hook, (self.meta,)


def record_tree(module, hook, easydict, source, old_torch=True):
    """Our module as the record tree an official pickle holds (OrderedDict containers as older torch wrote)."""
    container = collections.OrderedDict if old_torch else dict
    state = {
        "training": False,
        "_parameters": container((k, v) for k, v in module._parameters.items()),
        "_buffers": container((k, v) for k, v in module._buffers.items()),
        "_modules": container((k, record_tree(v, hook, easydict, source, old_torch)) for k, v in module._modules.items()),
        "_non_persistent_buffers_set": set(),
        "_init_args": (),
        "_init_kwargs": easydict(getattr(module, "init_kwargs", {})),
        "img_resolution": np.int64(getattr(module, "img_resolution", 0)),  # numpy scalar attribute
    }
    if "mapping_kwargs" in state["_init_kwargs"]:
        state["_init_kwargs"]["mapping_kwargs"] = easydict(state["_init_kwargs"]["mapping_kwargs"])
    meta = {"type": "class", "version": 6, "module_src": source, "class_name": type(module).__name__, "state": state}
    return Persistent(hook, meta)


def test_os_system_pickle_is_refused_without_side_effect(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"\x80\x02" + payload)  # protocol header, then the classic GLOBAL/REDUCE payload
    # Prove the file is dangerous: plain pickle runs the command.
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pkl: it references code 'os\.system'"):
        load_generator(evil)
    assert not marker.exists()
    result = runner.invoke(app, ["info", str(evil)])
    assert result.exit_code == 2
    assert "it references code 'os.system'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not marker.exists()


def test_persistence_record_with_code_is_never_executed(tmp_path, nvidia_persistence):
    hook, easydict = nvidia_persistence
    marker = tmp_path / "created_by_module_src"
    source = f"open({str(marker)!r}, 'w').write('x')"
    bad = {"G_ema": Persistent(hook._reconstruct_persistent_obj,
                               {"type": "class", "version": 6, "module_src": source, "class_name": "Backdoor",
                                "state": {"_parameters": {}, "_buffers": {}, "_modules": {}}})}
    data = pickle.dumps(bad, protocol=4)
    pickle.loads(data)  # what NVIDIA's loader would do
    assert marker.exists()
    marker.unlink()

    path = tmp_path / "backdoor.pkl"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="expected a Generator network, found Backdoor"):
        load_generator(path)
    assert not marker.exists()


@pytest.mark.parametrize("old_torch", [True, False])
def test_generator_record_with_code_loads_weights_only(tmp_path, nvidia_persistence, old_torch):
    """A real-looking snapshot (source inside, OrderedDict or dict state, numpy.core spelling) loads; its code never runs."""
    hook, easydict = nvidia_persistence
    marker = tmp_path / "ran"
    G = build_builtin("tiny-stylegan3-r")
    snapshot = {"G": None, "D": record_tree(torch.nn.Linear(2, 2), hook._reconstruct_persistent_obj, easydict, ""),
                "G_ema": record_tree(G, hook._reconstruct_persistent_obj, easydict,
                                     f"open({str(marker)!r}, 'w')", old_torch),
                "augment_pipe": None, "training_set_kwargs": {"resolution": 64}}
    data = pickle.dumps(snapshot, protocol=4)
    assert b"numpy.core.multiarray" in data or b"numpy._core.multiarray" in data
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(data)
    loaded = load_generator(path)
    assert not marker.exists()
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    with torch.no_grad():
        assert torch.equal(loaded.synthesis(ws), G.synthesis(ws))


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case,expected", [
    ("missing", "does not exist"),
    ("empty", "is empty"),
    ("html", "is an HTML page, not a checkpoint"),
    ("truncated", "is truncated or corrupt"),
    ("png", "is not a generator checkpoint"),
    ("mismatch", "does not match the generator"),
    ("encoder", "is an encoder checkpoint"),
    ("rosinality", "rosinality-layout"),
    ("directory", "is a directory"),
])
def test_bad_files_give_one_line_and_exit_2(case, expected, tmp_path, golden_generator_files):
    pkl, _, _, state = golden_generator_files("sg3t_64")
    path = tmp_path / f"{case}.pkl"
    if case == "empty":
        _write(path, b"")
    elif case == "html":
        _write(path, b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>")
    elif case == "truncated":
        _write(path, pkl.read_bytes()[:100_000])
    elif case == "png":
        _write(path, b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    elif case == "mismatch":
        tensors = {k: torch.from_numpy(v) for k, v in state.items()}
        tensors["synthesis.L0_36_16.bias"] = torch.zeros(7)
        path = tmp_path / "mismatch.pt"
        torch.save(tensors, path)
    elif case == "encoder":
        path = tmp_path / "encoder.pt"
        torch.save({"state_dict": {"encoder.conv.weight": torch.zeros(1)}, "latent_avg": torch.zeros(4)}, path)
    elif case == "rosinality":
        path = tmp_path / "rosinality.pt"
        torch.save({"g_ema": {"style.1.weight": torch.zeros(1)}}, path)
    elif case == "directory":
        path = tmp_path / "folder"
        path.mkdir()
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(" ".join(lines)) < 400 and expected in " ".join(lines)
    assert str(path.name) in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
