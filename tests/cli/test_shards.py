"""`--shard K/N` splitting and per-shard manifests merged by `sgtool merge-manifests`."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sgtool.errors import SgtoolError
from sgtool.latents import load_npy
from sgtool.utils.batch import (
    Shard,
    find_manifests,
    manifest_path,
    merge_manifests,
    parse_shard,
    select_shard,
    shard_file_name,
    shard_of,
    write_manifest,
)

NAMES = [f"photos/person_{i:04d}.{'jpg' if i % 3 else 'png'}" for i in range(1000)]


def test_parse_shard():
    assert parse_shard("2/8") == Shard(2, 8) and str(parse_shard(" 3 / 4 ")) == "3/4"
    assert parse_shard(None) is None and parse_shard("") is None
    for bad in ("0/4", "5/4", "1/0", "a/b", "2", "1/2/3", "-1/2"):
        with pytest.raises(SgtoolError, match="--shard"):
            parse_shard(bad)


@pytest.mark.parametrize("count", [1, 2, 3, 7, 16])
def test_shards_cover_every_input_exactly_once(count):
    shards = [select_shard(NAMES, Shard(k, count)) for k in range(1, count + 1)]
    flat = [name for shard in shards for name in shard]
    assert sorted(flat) == sorted(NAMES) and len(flat) == len(set(flat))
    for shard in shards:  # the hash spreads a realistic batch evenly
        assert abs(len(shard) - len(NAMES) / count) < 0.2 * len(NAMES) / count + 10


def test_split_is_deterministic_and_independent_of_listing():
    shuffled = NAMES[:]
    random.Random(0).shuffle(shuffled)
    assert set(select_shard(shuffled, Shard(2, 5))) == set(select_shard(NAMES, Shard(2, 5)))
    # A machine that sees only part of the folder (files still arriving) agrees on what it sees.
    partial = NAMES[::3]
    assert set(select_shard(partial, Shard(2, 5))) == set(select_shard(NAMES, Shard(2, 5))) & set(partial)
    # The documented rule: sha256 of the file stem, first 16 hex digits, mod N, plus one; the folder
    # (a different mount point on each machine) does not matter.
    stem = "person_0042"
    k = int(hashlib.sha256(stem.encode()).hexdigest()[:16], 16) % 6 + 1
    assert shard_of(stem, 6) == k
    assert select_shard(["/mnt/a/x/person_0042.jpg", "/scratch/person_0042.png"], Shard(k, 6)) == \
        ["/mnt/a/x/person_0042.jpg", "/scratch/person_0042.png"]
    # The given order is kept (commands list inputs sorted); without a shard everything is returned.
    chosen = select_shard(NAMES, Shard(1, 3))
    assert chosen == [name for name in NAMES if name in set(chosen)]
    assert select_shard(NAMES, None) == NAMES


def test_manifest_names_sort_and_validate(tmp_path):
    assert manifest_path(tmp_path, "invert", Shard(3, 12)).name == "manifest-invert-shard03of12.json"
    assert manifest_path(tmp_path, "invert", None).name == "manifest-invert.json"
    assert shard_file_name("alignment.json", Shard(2, 4)) == "alignment-shard2of4.json"
    assert shard_file_name("latents.npy", None) == "latents.npy"
    with pytest.raises(ValueError, match="a status of ok, skipped, failed, not_run"):
        write_manifest(tmp_path, "invert", Shard(1, 2), [{"input": "a.jpg", "status": "maybe"}])


def _run_sharded(outdir, count, skip=(), fail=("person_0007.jpg",)):
    for k in range(1, count + 1):
        if k in skip:
            continue
        shard = Shard(k, count)
        items = []
        for name in select_shard(NAMES[:40], shard):
            base = name.rsplit("/", 1)[1]
            if base in fail:
                items.append({"input": name, "status": "failed", "error": "no face found"})
            else:
                items.append({"input": name, "status": "ok", "outputs": [f"{base}.npy"]})
        write_manifest(outdir, "invert", shard, items, inputs_total=40)


def test_merge_manifests_joins_shards(tmp_path):
    _run_sharded(tmp_path, 4)
    files = find_manifests([tmp_path])
    assert [f.name for f in files] == [f"manifest-invert-shard{k}of4.json" for k in range(1, 5)]
    merged = merge_manifests(files)
    assert [i["input"] for i in merged["items"]] == sorted(NAMES[:40])
    assert merged["summary"] == {"inputs": 40, "ok": 39, "failed": 1}
    assert merged["missing_shards"] == [] and merged["duplicates"] == [] and merged["shard_count"] == 4
    failed = [i for i in merged["items"] if i["status"] == "failed"]
    assert failed[0]["input"].endswith("person_0007.jpg") and failed[0]["error"] == "no face found"


def test_merge_reports_missing_shards_and_duplicates(tmp_path):
    _run_sharded(tmp_path, 3, skip=(2,), fail=())
    merged = merge_manifests(find_manifests([tmp_path]))
    assert merged["missing_shards"] == [2]
    assert merged["summary"]["inputs"] == 40 - len(select_shard(NAMES[:40], Shard(2, 3)))
    # A rerun of one input elsewhere (e.g. an unsharded retry) shows up as a duplicate; success wins.
    done = merged["items"][0]["input"]
    again = tmp_path / "retry"
    write_manifest(again, "invert", None, [{"input": done, "status": "failed", "error": "x"}])
    merged = merge_manifests(find_manifests([tmp_path]) + [manifest_path(again, "invert", None)])
    assert merged["duplicates"] == [done]
    assert next(i for i in merged["items"] if i["input"] == done)["status"] == "ok"


def test_merge_refuses_mixed_runs(tmp_path):
    write_manifest(tmp_path / "a", "invert", Shard(1, 2), [])
    write_manifest(tmp_path / "b", "edit", Shard(2, 2), [])
    write_manifest(tmp_path / "c", "invert", Shard(1, 3), [])
    write_manifest(tmp_path / "d", "invert", Shard(1, 2), [])
    with pytest.raises(SgtoolError, match="different commands"):
        merge_manifests(find_manifests([tmp_path / "a", tmp_path / "b"]))
    with pytest.raises(SgtoolError, match="split the batch in different ways"):
        merge_manifests(find_manifests([tmp_path / "a", tmp_path / "c"]))
    with pytest.raises(SgtoolError, match="are both shard 1/2"):
        merge_manifests(find_manifests([tmp_path / "a", tmp_path / "d"]))
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "manifest-invert-shard1of2.json").write_text("{ truncated")
    with pytest.raises(SgtoolError, match="not valid JSON"):
        merge_manifests(find_manifests([tmp_path / "e"]))


def test_cli_merge_manifests(tmp_path):
    from sgtool.cli import app

    runner = CliRunner()
    _run_sharded(tmp_path, 2, fail=())
    result = runner.invoke(app, ["merge-manifests", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["summary"] == {"inputs": 40, "ok": 40, "failed": 0}
    merged = json.loads((tmp_path / "manifest-invert.json").read_text())
    assert len(merged["items"]) == 40 and summary["output"] == str(tmp_path / "manifest-invert.json")

    partial = tmp_path / "partial"
    _run_sharded(partial, 3, skip=(3,))
    out = tmp_path / "merged.json"
    result = runner.invoke(app, ["merge-manifests", str(partial), "-o", str(out)])
    assert result.exit_code == 1 and "missing shards: 3 of 3" in result.output
    assert json.loads(out.read_text())["missing_shards"] == [3]

    result = runner.invoke(app, ["merge-manifests", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_align_shards_share_an_outdir_and_merge(tmp_path):
    import skimage.data
    from PIL import Image

    from sgtool.cli import app

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(photos / "astro.png")
    Image.fromarray(skimage.data.astronaut()[:, ::-1]).save(photos / "flipped.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    out = tmp_path / "out"
    runner = CliRunner()
    codes = [runner.invoke(app, ["align", str(photos), "-o", str(out), "--size", "64", "--shard", f"{k}/2",
                                 "--json"]).exit_code for k in (1, 2)]
    owner = {p.stem: shard_of(p.stem, 2) for p in photos.iterdir()}
    assert set(owner.values()) == {1, 2}, "the file names were chosen so that both shards get work"
    assert codes == [1 if owner["broken"] == k else 0 for k in (1, 2)]
    assert not (out / "alignment.json").exists()  # each shard kept its own summary
    for k in (1, 2):
        shard_summary = json.loads((out / f"alignment-shard{k}of2.json").read_text())
        assert {Path(f["source"]).stem for f in shard_summary["faces"]} == \
            {stem for stem, shard in owner.items() if shard == k and stem != "broken"}
    result = runner.invoke(app, ["merge-manifests", str(out)])
    assert result.exit_code == 1  # broken.jpg failed
    merged = json.loads((out / "manifest-align.json").read_text())
    assert merged["summary"] == {"inputs": 3, "ok": 2, "failed": 1} and merged["missing_shards"] == []
    alignment = json.loads((out / "alignment.json").read_text())  # what --transforms reads, as unsharded
    assert sorted(Path(f["aligned"]).name for f in alignment["faces"]) == \
        ["astro_face0_aligned.png", "flipped_face0_aligned.png"]
    assert alignment["config"]["size"] == 64 and len(alignment["failed"]) == 1 and alignment["shard"] is None
    assert alignment["counts"] == {"ok": 2, "skipped": 0, "failed": 1, "not_run": 0}


def test_edit_shards_cover_every_latent_and_merge(golden_generator_files, tmp_path):
    from sgtool.cli import app

    pkl, _, io, _ = golden_generator_files("sg2_64")
    ws = io["ws"]
    names = [f"person{i}" for i in range(4)]
    for name, w in zip(names, [ws[0], ws[1], ws[0], ws[1]]):
        np.save(tmp_path / f"{name}_latent.npy", w)
    np.save(tmp_path / "dir.npy", np.random.RandomState(5).randn(1, ws.shape[-1]).astype(np.float32))
    latents = [str(tmp_path / f"{name}_latent.npy") for name in names]
    out = tmp_path / "out"
    runner = CliRunner()
    for k in (1, 2):
        result = runner.invoke(app, ["edit", *latents, "--network", str(pkl),
                                     "--direction", f"d={tmp_path / 'dir.npy'}", "--edit", "d=+1", "-o", str(out), "--shard", f"{k}/2", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        edited = json.loads((out / f"edits-shard{k}of2.json").read_text())
        assert [Path(i["input"]).name for i in edited["items"]] == \
            [Path(p).name for p in latents if shard_of(Path(p).stem, 2) == k]
    sharded = runner.invoke(app, ["edit", *latents, "--network", str(pkl), "--edit", "d=+1", "--sweep", "d=-1:1:3",
                                  "--direction", f"d={tmp_path / 'dir.npy'}", "-o", str(out), "--shard", "1/2"])
    assert sharded.exit_code == 2 and "run sweeps without --shard" in sharded.output
    assert runner.invoke(app, ["merge-manifests", str(out)]).exit_code == 0
    merged = json.loads((out / "edits.json").read_text())
    assert sorted(Path(i["input"]).name for i in merged["items"]) == sorted(Path(p).name for p in latents)
    assert merged["settings"]["edits"] == ["d=+1"]  # the same in every shard, so kept
    manifest = json.loads((out / "manifest-edit.json").read_text())
    assert manifest["summary"] == {"inputs": 4, "ok": 4, "failed": 0}
    for item in manifest["items"]:  # every latent's edited image and latent, written by its own shard
        assert len(item["outputs"]) == 2 and all(Path(p).is_file() for p in item["outputs"])


def test_invert_shards_share_an_outdir_and_merge(golden_generator_files, tmp_path):
    from PIL import Image

    from sgtool.cli import app

    pkl = golden_generator_files("sg2_64")[0]
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.RandomState(0)
    names = ["alice", "bob", "carol", "right"]  # shards 2, 1, 1, 2 of 2
    for name in names:
        Image.fromarray(rng.randint(0, 256, (64, 64, 3)).astype(np.uint8)).save(photos / f"{name}.png")
    out = tmp_path / "out"
    runner = CliRunner()
    for k in (1, 2):
        result = runner.invoke(app, ["invert", str(photos), "--method", "optimize", "--network", str(pkl),
                                     "--num-steps", "1", "--space", "w", "--no-align", "-o", str(out),
                                     "--shard", f"{k}/2", "--set", "lpips_random_backbone=true",
                                     "--set", "projector.w_avg_samples=64", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        record = json.loads((out / f"invert-shard{k}of2.json").read_text())
        assert sorted(i["name"] for i in record["items"]) == sorted(n for n in names if shard_of(n, 2) == k)
        # the final line names the record this shard wrote
        assert f"record in {out / f'invert-shard{k}of2.json'}" in result.stderr.replace("\n", "")
    assert not (out / "invert.json").exists()
    assert runner.invoke(app, ["merge-manifests", str(out)]).exit_code == 0
    merged = json.loads((out / "invert.json").read_text())  # what `sgtool edit` looks for beside the latents
    assert sorted(i["name"] for i in merged["items"]) == names
    assert sorted(p.name for p in out.glob("*_latent.npy")) == [f"{n}_latent.npy" for n in names]
    # the shards' latents dicts are joined into the one the merged record names, as one run would have written
    assert merged["latents"] == str(out / "latents.npy")
    table = load_npy(out / "latents.npy")
    assert sorted(table) == sorted(f"{n}.png" for n in names)
    for n in names:
        np.testing.assert_array_equal(table[f"{n}.png"][-1], np.load(out / f"{n}_latent.npy"))
