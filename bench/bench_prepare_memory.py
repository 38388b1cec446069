"""Peak memory of `avmae prepare` against the number of manifest rows (issue #20: 2 M rows).

    python bench/bench_prepare_memory.py [--rows 1000 5000] [--manifest BIG.csv]

Each measurement runs in a fresh Python process, which reports its peak RSS (ru_maxrss) and its
RSS after the imports, so that `added_mb` is what the work itself added:

    prepare          prepare_shards(workers=1, clips_per_shard=256) on a manifest of N rows that
                     all point at one 1 s clip (64x48, 25 fps, stored at short side 36, 1 s of
                     audio at 32 mel bins: decoding is cheap and not what is measured; one torch
                     thread, as prepare's worker processes)
    manifest_load    (--manifest) load_manifest: every row held, what prepare did before it
                     streamed the manifest
    manifest_stream  (--manifest) the two streaming passes prepare makes now, without decoding:
                     label_names (every row checked, the vocabularies collected), then every Clip
                     made and dropped as the decoders' feed does

Run it with PYTHONPATH pointing at the code to measure (one checkout, then another, for a
before/after); manifest_stream needs the streaming code (avmae.data.manifest.ManifestFile).
Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(kind: str, arg: str, rows: int) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    import avmae.data.manifest as manifest_module
    from avmae.config import DataConfig
    from avmae.data import prepare_shards
    torch.set_num_threads(1)
    base = rss_mb()
    t0 = time.perf_counter()
    if kind == "prepare":
        with tempfile.TemporaryDirectory() as tmp:
            data = DataConfig(short_side=36, mel_bins=32, audio_seconds=1.0)
            meta = prepare_shards(arg, Path(tmp) / "shards", data, clips_per_shard=256,
                                  workers=1, progress=False)
            extra = {"clips": meta["clips"], "shards": len(meta["shards"])}
    elif kind == "manifest_load":
        extra = {"rows": len(manifest_module.load_manifest(arg))}
    else:
        m = manifest_module.ManifestFile(arg)
        counted, names = manifest_module.label_names(m, m.label_columns)
        made = sum(1 for _ in m)
        extra = {"rows": counted, "clips_made": made,
                 "classes": {c: len(v) for c, v in names.items()}}
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux
    return {"what": kind, "input": arg, "rows": rows, **extra, "seconds": round(seconds, 1),
            "rss_after_imports_mb": round(base), "peak_rss_mb": round(peak),
            "added_mb": round(peak - base)}


def run_child(kind: str, arg: str, rows: int = 0) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, arg, str(rows)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--manifest", help="a large manifest CSV to read (not decoded)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, arg, rows = args.child
        print(json.dumps(child(kind, arg, int(rows))))
        return
    import avmae
    machine = {"cpu_count": os.cpu_count(), "python": platform.python_version(),
               "avmae": str(Path(avmae.__file__).parent)}
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_data import write_clip
        clip = Path(tmp) / "clip.mp4"
        write_clip(clip, 1.0, 64, 48, 0)
        for rows in args.rows:
            csv = Path(tmp) / f"rows{rows}.csv"
            csv.write_text("path,label\n" + "".join(f"clip.mp4,c{i % 50}\n" for i in range(rows)))
            print(json.dumps({**run_child("prepare", str(csv), rows), "machine": machine}),
                  flush=True)
    if args.manifest:
        import avmae.data.manifest as manifest_module
        kinds = ["manifest_load"] + (["manifest_stream"]
                                     if hasattr(manifest_module, "ManifestFile") else [])
        for kind in kinds:
            print(json.dumps({**run_child(kind, args.manifest), "machine": machine}), flush=True)


if __name__ == "__main__":
    main()
