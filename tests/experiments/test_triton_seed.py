"""scripts/triton_seed.py: gdn2's compiled kernels (then other libraries', as room allows) go from
one cache to a cold one; Inductor's and incomplete entries stay behind, and an entry already in the
cache is left as it is."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("triton_seed", ROOT / "scripts" / "triton_seed.py")
triton_seed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(triton_seed)


def entry(cache: Path, key: str, kernel: str, members=("cubin", "json"), missing=()) -> Path:
    folder = cache / key
    folder.mkdir(parents=True)
    paths = {}
    for ext in members:
        path = folder / f"{kernel}.{ext}"
        if ext not in missing:
            path.write_text(f"{key} {ext}")
        paths[f"{kernel}.{ext}"] = str(path)   # absolute, as Triton writes them
    (folder / f"__grp__{kernel}.json").write_text(json.dumps({"child_paths": paths}))
    return folder


def test_saves_gdn2_kernels_only_and_loads_what_the_cache_lacks(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    entry(cache, "a1", "chunk_state_fwd_kernel", members=("cubin", "json", "ptx", "llir"))
    entry(cache, "b2", "triton_poi_fused_add_0")                      # Inductor's
    entry(cache, "c3", "chunk_intra_fwd_kernel", missing=("cubin",))  # a compile cut off
    entry(cache, "e5", "chunk_gdn2_fwd_kernel_o")                     # another library's (FLA's)
    assert triton_seed.main(["save", str(cache), str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["gdn2-kernels.tgz.00"]

    shutil.rmtree(cache)
    entry(cache, "d4", "chunk_gated_kernel")
    (cache / "d4" / "chunk_gated_kernel.cubin").write_text("newer")
    assert triton_seed.main(["load", str(out), str(cache)]) == 0
    assert sorted(p.name for p in cache.iterdir()) == ["a1", "d4", "e5"]
    assert (cache / "a1" / "chunk_state_fwd_kernel.cubin").read_text() == "a1 cubin"
    # the binary, its metadata and the group file only: the intermediate forms stay behind
    assert sorted(p.name for p in (cache / "a1").iterdir()) == [
        "__grp__chunk_state_fwd_kernel.json", "chunk_state_fwd_kernel.cubin", "chunk_state_fwd_kernel.json"]
    assert (cache / "d4" / "chunk_gated_kernel.cubin").read_text() == "newer"

    (cache / "a1" / "chunk_state_fwd_kernel.cubin").write_text("rebuilt here")
    triton_seed.main(["load", str(out), str(cache)])                 # a warm machine's entry stays
    assert (cache / "a1" / "chunk_state_fwd_kernel.cubin").read_text() == "rebuilt here"


def test_loading_nothing_is_a_no_op(tmp_path):
    assert triton_seed.main(["load", str(tmp_path / "none"), str(tmp_path / "cache")]) == 0
    assert not (tmp_path / "cache").exists()
    assert triton_seed.main(["save", str(tmp_path)]) == 2


def test_other_libraries_kernels_only_as_room_allows(tmp_path, monkeypatch):
    """gdn2's kernels are saved whatever their size (or nothing is); another library's only while
    the archive stays within its parts."""
    import random
    cache, out = tmp_path / "cache", tmp_path / "out"
    noise = random.Random(0)
    for key, kernel in (("a1", "chunk_state_fwd_kernel"), ("f6", "fla_big_kernel")):
        folder = entry(cache, key, kernel)
        (folder / f"{kernel}.cubin").write_bytes(noise.randbytes(3 * 2**20))   # incompressible
    monkeypatch.setattr(triton_seed, "PART_BYTES", 2 * 2**20)
    monkeypatch.setattr(triton_seed, "MAX_PARTS", 2)
    assert triton_seed.main(["save", str(cache), str(out)]) == 0
    assert triton_seed.main(["load", str(out), str(tmp_path / "cold")]) == 0
    assert sorted(p.name for p in (tmp_path / "cold").iterdir()) == ["a1"]
    monkeypatch.setattr(triton_seed, "MAX_PARTS", 1)   # gdn2's own kernels past the parts: nothing
    assert triton_seed.main(["save", str(cache), str(tmp_path / "out2")]) == 1
    assert not (tmp_path / "out2").exists()
