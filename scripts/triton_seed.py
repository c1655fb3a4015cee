"""gdn2's compiled Triton kernels (and FLA's, as room allows), taken from one GPU call to a cold machine's next (used by
gpu_session.sh: SAVE_TCACHE=1 saves, a carried ``.tcache/`` loads).

    python scripts/triton_seed.py save CACHE OUT    # CACHE's gdn2 kernels as OUT/gdn2-kernels.tgz.00, .01, ...
    python scripts/triton_seed.py load SEED CACHE   # SEED's parts into CACHE, entries it lacks only

A cold machine compiles every kernel a run needs before its first step (a d_model 256 MQAR model's
first step took 110-140 s on a cold H100, against 1-9 s on a warm one, torch.compile's own work
included). Triton keys each cache entry on the kernel's source, its specialisation, the compiler
and the target, and a group file names its members by absolute path: entries made under the same
cache folder on the same kind of machine are hits, and any other entry is only a miss, never a
wrong kernel. Inductor's generated kernels (``triton_*``) stay behind: they are many and large; so do the
intermediate forms of gdn2's (``KEEP``).
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

PART_BYTES = 15 * 2**20     # a file that comes back from a call holds at most 16 MiB
MAX_PARTS = 3               # what a call carries is 64 MiB with the wheels
NAME = "gdn2-kernels.tgz"
# what a cached kernel needs to load: its metadata, its group file and the binary. Triton's cache
# lookup keeps a group's members that exist and builds the kernel from the metadata and the binary,
# so the intermediate forms (ttir, ttgir, llir, ptx, source: two thirds of the compressed bytes, and
# a profile's 281 kernels came to 48 MiB with them, over what a call brings back) stay behind
KEEP = (".json", ".cubin")


def kernel_names() -> set:
    """The names of gdn2's Triton functions (a cache group is named after its kernel)."""
    import importlib
    import pkgutil

    from triton.runtime.jit import KernelInterface

    import gdn2.ops.gdn2.triton as package
    names = set()
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        # (KernelInterface: a JITFunction, or an InterpretedFunction under TRITON_INTERPRET)
        names |= {k for k, v in vars(module).items() if isinstance(v, KernelInterface)}
    return names


def save(cache: Path, out: Path) -> int:
    """gdn2's kernels first, then other libraries' (FLA's: the benchmark's correctness gate compiles
    them for minutes on a cold machine) while the archive stays within ``MAX_PARTS`` parts;
    Inductor's (``triton_*``) never."""
    names = kernel_names()
    ours, others = [], []
    for group in sorted(cache.glob("*/__grp__*.json")):
        kernel = group.name[len("__grp__"):].rsplit(".", 1)[0]
        if kernel.startswith("triton_"):
            continue
        try:
            members = json.loads(group.read_text())["child_paths"].values()
        except (OSError, ValueError, KeyError):
            continue
        if all(Path(p).parent == group.parent and Path(p).exists() for p in members):
            (ours if kernel in names else others).append(group.parent)
    limit = MAX_PARTS * PART_BYTES
    buffer = io.BytesIO()
    saved = skipped = 0
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i, entry in enumerate(ours + others):
            files = [p for p in sorted(entry.iterdir()) if p.suffix in KEEP]
            # the compressed stream runs behind by at most gzip's window: stop with a raw entry's
            # size to spare
            if i >= len(ours) and buffer.tell() + sum(p.stat().st_size for p in files) > limit - 2**20:
                skipped = len(ours) + len(others) - i
                break
            for path in files:
                tar.add(path, arcname=f"{entry.name}/{path.name}")
            saved += 1
    data = buffer.getvalue()
    parts = -(-len(data) // PART_BYTES)
    if parts > MAX_PARTS:
        print(f"triton_seed: gdn2's {len(ours)} kernels make {len(data) / 2**20:.1f} MiB, over {MAX_PARTS} parts "
              f"of {PART_BYTES // 2**20} MiB: not saved", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    for i in range(parts):
        (out / f"{NAME}.{i:02d}").write_bytes(data[i * PART_BYTES:(i + 1) * PART_BYTES])
    print(f"triton_seed: {saved} kernel entries ({len(ours)} gdn2's), {len(data) / 2**20:.1f} MiB in {parts} "
          f"part(s) under {out}" + (f"; {skipped} other entries left out (no room)" if skipped else ""))
    return 0


def load(seed: Path, cache: Path) -> int:
    parts = sorted(seed.glob(f"{NAME}.*"))
    if not parts:
        return 0
    data = b"".join(p.read_bytes() for p in parts)
    cache.mkdir(parents=True, exist_ok=True)
    added = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not (cache / member.name).exists():   # an entry already here stays as it is
                tar.extract(member, cache, filter="data")
                added += member.isfile()
    print(f"triton_seed: {added} file(s) of {len(parts)} part(s) into {cache}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in ("save", "load"):
        print(__doc__.strip().splitlines()[0] + "\nusage: triton_seed.py save CACHE OUT | load SEED CACHE",
              file=sys.stderr)
        return 2
    return (save if argv[0] == "save" else load)(Path(argv[1]), Path(argv[2]))


if __name__ == "__main__":
    sys.exit(main())
