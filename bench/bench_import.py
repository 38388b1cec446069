"""Import of a full-size official checkpoint: time and peak memory of `avmae import-scenic`.

Writes a ViT-L AudioSet AV-MAE pretraining checkpoint with random weights in the legacy Flax msgpack
format and the old trainer's layout (`optimizer: {target: params, state: {param_states: Adam
moments}}`, as the released pretraining checkpoints), then runs `avmae import-scenic` on it in a
fresh process and reports its wall time and peak resident memory against the parameters' size and
the file's size. The writer is this script's own (msgpack + numpy): no JAX needed.

    python bench/bench_import.py [--dir /tmp/bench_import] [--keep]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import emit, machine  # noqa: E402

D, HEADS, MLP, DEPTH, S = 1024, 16, 4096, 24, 2          # ViT-L, mid fusion with 2 joint layers
DD, DHEADS, DMLP, DDEPTH = 512, 8, 2048, 4              # Table 15 large decoder


def block(d: int, heads: int, mlp: int) -> dict:
    hd = d // heads
    att = {p: {"kernel": (d, heads, hd), "bias": (heads, hd)} for p in ("query", "key", "value")}
    att["out"] = {"kernel": (heads, hd, d), "bias": (d,)}
    return {"LayerNorm_0": {"scale": (d,), "bias": (d,)}, "LayerNorm_1": {"scale": (d,), "bias": (d,)},
            "MultiHeadDotProductAttention_0": att,
            "MlpBlock_0": {"Dense_0": {"kernel": (d, mlp), "bias": (mlp,)},
                           "Dense_1": {"kernel": (mlp, d), "bias": (d,)}}}


def encoder(layers: int, d: int, heads: int, mlp: int) -> dict:
    tree = {f"encoderblock_{i}": block(d, heads, mlp) for i in range(layers)}
    tree["encoder_norm"] = {"scale": (d,), "bias": (d,)}
    return tree


def official_tree() -> dict:
    """Shapes of the official AudioSet pretraining model's parameters (names as Flax saves them)."""
    return {
        "embedding_rgb": {"kernel": (2, 16, 16, 3, D), "bias": (D,)},
        "embedding_spectrogram": {"kernel": (16, 16, 1, D), "bias": (D,)},
        "Transformer_rgb": encoder(DEPTH - S, D, HEADS, MLP),
        "Transformer_spectrogram": encoder(DEPTH - S, D, HEADS, MLP),
        "Transformer_concat": encoder(S, D, HEADS, MLP),
        "decoder_projection_rgb": {"kernel": (D, DD), "bias": (DD,)},
        "decoder_projection_spectrogram": {"kernel": (D, DD), "bias": (DD,)},
        "mask_token_rgb": (1, 1, DD), "mask_token_spectrogram": (1, 1, DD),
        "Decoder": encoder(DDEPTH, DD, DHEADS, DMLP),
        "output_projection_rgb": {"kernel": (DD, 1536), "bias": (1536,)},
        "output_projection_spectrogram": {"kernel": (DD, 256), "bias": (256,)},
    }


def array_ext(shape, rng: np.random.Generator) -> msgpack.ExtType:
    x = rng.standard_normal(shape, dtype=np.float32) * 0.02
    return msgpack.ExtType(1, msgpack.packb((list(shape), "float32", x.tobytes()), use_bin_type=True))


def write_tree(f, packer: msgpack.Packer, tree, rng: np.random.Generator, leaf=None) -> int:
    """Stream a nested dict of shapes as msgpack; returns the number of parameter values."""
    if isinstance(tree, tuple):
        if leaf is not None:
            return leaf(f, packer, tree, rng)
        f.write(packer.pack(array_ext(tree, rng)))
        return int(np.prod(tree))
    f.write(packer.pack_map_header(len(tree)))
    n = 0
    for k, v in tree.items():
        f.write(packer.pack(k))
        n += write_tree(f, packer, v, rng, leaf)
    return n


def adam_state(f, packer, shape, rng) -> int:
    """flax.optim Adam's per-parameter state: first and second moments."""
    f.write(packer.pack_map_header(2))
    for name in ("grad_ema", "grad_sq_ema"):
        f.write(packer.pack(name))
        f.write(packer.pack(array_ext(shape, rng)))
    return 0


def write_checkpoint(path: Path) -> int:
    rng = np.random.default_rng(0)
    packer = msgpack.Packer(use_bin_type=True)
    tree = official_tree()
    with open(path, "wb") as f:
        f.write(packer.pack_map_header(2))
        f.write(packer.pack("optimizer"))
        f.write(packer.pack_map_header(2))
        f.write(packer.pack("target"))
        n = write_tree(f, packer, tree, rng)
        f.write(packer.pack("state"))
        f.write(packer.pack_map_header(2))
        f.write(packer.pack("step"))
        f.write(packer.pack(1000))
        f.write(packer.pack("param_states"))
        write_tree(f, packer, tree, rng, leaf=adam_state)
        f.write(packer.pack("global_step"))
        f.write(packer.pack(1000))
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="/tmp/bench_import")
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoint")
    args = parser.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt, out = folder / "checkpoint", folder / "run"
    t0 = time.perf_counter()
    n = write_checkpoint(ckpt)
    write_s = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "avmae.cli", "import-scenic", str(ckpt), "--out", str(out)],
                          capture_output=True, text=True)
    import_s = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"import failed: {proc.stderr.strip()}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
    params_bytes = 4 * n
    emit({"bench": "import_scenic", "model": "ViT-L AudioSet AV-MAE (mid fusion, S=2) + Adam state",
          "parameters_M": round(n / 1e6, 1), "params_GB": round(params_bytes / 1e9, 2),
          "file_GB": round(ckpt.stat().st_size / 1e9, 2), "write_s": round(write_s, 1),
          "import_s": round(import_s, 1), "peak_rss_GB": round(peak / 1e9, 2),
          "peak_minus_params_GB": round((peak - params_bytes) / 1e9, 2), "machine": machine()})
    if not args.keep:
        ckpt.unlink()
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
