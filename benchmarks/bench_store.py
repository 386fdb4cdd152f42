"""The session store at scale: opening a 1,000-step session with GBs of tables, and compression.

Builds a session of ``--steps`` steps (a main line with a side branch every 50 steps), each
with its own synthetic reflection table of ``--mb`` MB (DIALS msgpack: positions, intensities,
Miller indices, flags) and a small experiment list, then, in a fresh process each time:

- open: ``Session(folder)`` + the head + the head's state (experiments decoded, tables not),
  also for a 10-step session (the ratio shows that opening does not grow with the session),
- history: list every step (what `history` reads),
- one table: decode the head's table on first use,

and reports them next to the import time of the modules (paid once per process). The target is
open < 0.1 s whatever the size of the session: opening reads no step and no table.

With ``--compression`` it also compares zstd (what the store uses), zlib and lzma on the real
tables with shoeboxes in ../shared/data (size ratio, MB/s).

    python benchmarks/bench_store.py [--steps 1000] [--mb 3] [--keep FOLDER] [--compression]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROBE = """
import json, sys, time
t0 = time.perf_counter()
from gonio.shell.session import Session
import gonio.store.history, gonio.store.state, gonio.core.io.dials_expt  # noqa: E401
t1 = time.perf_counter()
s = Session(sys.argv[1])
head = s.head
state = s.state
t2 = time.perf_counter()
what = sys.argv[2]
if what == "history":
    n = len(s.history.tree())
elif what == "table":
    n = len(state.reflections[state.newest_table])
else:
    n = len(state.reflections)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "open": t2 - t1, "then": t3 - t2, "n": n, "head": head}))
"""


def synthetic_table(n_rows: int, rng: np.random.Generator):
    from gonio.core.reflection_table import ReflectionTable

    return ReflectionTable({
        "xyzobs.px.value": rng.uniform(0, 2000, (n_rows, 3)),
        "intensity.sum.value": rng.poisson(200, n_rows).astype(np.float64),
        "intensity.sum.variance": rng.poisson(200, n_rows).astype(np.float64),
        "miller_index": rng.integers(-40, 40, (n_rows, 3)).astype(np.int32),
        "flags": np.full(n_rows, 32, np.uint64),
        "id": np.zeros(n_rows, np.int32),
    }, {0: "synthetic"})


def build(folder: Path, n_steps: int, mb: float) -> float:
    """Write the session; return the bytes of tables committed (before compression)."""
    from gonio.core.io.dials_expt import expt_to_bytes
    from gonio.core.io.dials_refl import refl_to_bytes
    from gonio.core.models.experiment import ExperimentList
    from gonio.store.history import History

    rng = np.random.default_rng(1)
    n_rows = int(mb * 1e6 / 68)  # 68 bytes a row
    table = synthetic_table(n_rows, rng)
    expt = expt_to_bytes(ExperimentList())
    total = 0
    with History.open(folder) as h:
        for i in range(1, n_steps + 1):
            table["flags"][:1000] = i  # every step's table is its own blob
            table["intensity.sum.value"][:1000] = rng.poisson(200, 1000)
            blob = refl_to_bytes(table)
            total += len(blob)
            artifacts = {"reflections/integrated": blob, "data/step": json.dumps(i).encode()}
            if i == 1:
                artifacts["experiments"] = expt
            log = f"step {i}\n" + "log line of a step\n" * 50
            h.commit_step("integrate", f"integrate seed={i}", {"seed": i, "nproc": 2}, artifacts,
                          log, {"n": n_rows, "rmsd": 0.1}, 1.0, "bench")
            if i % 50 == 0 and i < n_steps:
                h.goto(i - 10)  # the next steps start a branch
            if i % 100 == 0:
                print(f"  {i} steps, {total / 1e9:.2f} GB of tables", file=sys.stderr)
    return total


def probe(folder: Path, what: str, n: int = 5) -> dict:
    runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE, str(folder), what],
                                      capture_output=True, text=True, check=True).stdout)
            for _ in range(n)]
    return {k: float(np.median([r[k] for r in runs])) for k in ("import", "open", "then")}


def compression() -> None:
    import lzma
    import zlib

    import zstandard

    data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    files = [data / "myd88" / "strong.refl", data / "x4_xds" / "indexed.refl",
             data / "x4_xds" / "integrated.refl"]
    codecs = {
        "zstd 1 (store)": (lambda b: zstandard.ZstdCompressor(level=1).compress(b),
                           lambda z: zstandard.ZstdDecompressor().decompress(z)),
        "zstd 3": (lambda b: zstandard.ZstdCompressor(level=3).compress(b),
                   lambda z: zstandard.ZstdDecompressor().decompress(z)),
        "zlib 1": (lambda b: zlib.compress(b, 1), zlib.decompress),
        "zlib 6": (lambda b: zlib.compress(b, 6), zlib.decompress),
        "lzma 0": (lambda b: lzma.compress(b, preset=0), lzma.decompress),
    }
    for path in files:
        if not path.exists():
            print(f"{path}: not found, skipped")
            continue
        raw = path.read_bytes()
        print(f"{path.parent.name}/{path.name} ({len(raw) / 1e6:.2f} MB, with shoeboxes)")
        for name, (pack, unpack) in codecs.items():
            t0 = time.perf_counter()
            for _ in range(5):
                z = pack(raw)
            t1 = time.perf_counter()
            for _ in range(5):
                unpack(z)
            t2 = time.perf_counter()
            print(f"  {name:15s} size {len(z) / len(raw):5.3f}  compress "
                  f"{5 * len(raw) / (t1 - t0) / 1e6:5.0f} MB/s  decompress "
                  f"{5 * len(raw) / (t2 - t1) / 1e6:5.0f} MB/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--mb", type=float, default=3.0, help="MB of table per step")
    ap.add_argument("--keep", type=Path, help="build in (or reuse) this folder and keep it")
    ap.add_argument("--compression", action="store_true")
    args = ap.parse_args()
    if args.compression:
        compression()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="gonio-bench-store-"))
    try:
        if not (folder / ".gonio").exists():
            folder.mkdir(exist_ok=True, parents=True)
            t0 = time.perf_counter()
            total = build(folder, args.steps, args.mb)
            took = time.perf_counter() - t0
            print(f"built {args.steps} steps, {total / 1e9:.2f} GB of tables in {took:.0f} s "
                  f"({total / took / 1e6:.0f} MB/s committed)")
        on_disk = sum(p.stat().st_size for p in (folder / ".gonio").rglob("*") if p.is_file())
        print(f"session on disk: {on_disk / 1e9:.2f} GB")
        opened = probe(folder, "open")
        listed = probe(folder, "history")
        table = probe(folder, "table", n=3)
        print(f"import of the shell and store modules: {opened['import']:.3f} s (once per "
              "process, not part of opening)")
        with tempfile.TemporaryDirectory(prefix="gonio-bench-small-") as small:
            build(Path(small), 10, args.mb)
            reference = probe(Path(small), "open")
        print(f"open session + head + head state: {opened['open']:.4f} s "
              f"(target < 0.1 s; tables not decoded); a 10-step session: "
              f"{reference['open']:.4f} s (ratio {opened['open'] / reference['open']:.2f})")
        print(f"then list all {args.steps} steps (history): {listed['then']:.3f} s")
        print(f"then decode the head's table: {table['then']:.3f} s")
    finally:
        if args.keep is None:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
