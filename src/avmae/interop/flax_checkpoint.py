"""Read a legacy Flax checkpoint (the msgpack file `flax.training.checkpoints` wrote) without JAX.

The format is plain msgpack: the state dict of the saved train state, with numpy arrays as msgpack
extension type 1 holding msgpack([shape, dtype name, raw bytes]) (type 3 for numpy scalars, 2 for
complex numbers), and arrays over 1 GiB split into {"__msgpack_chunked_array__": True, "shape",
"chunks"}. Scenic wrote two layouts:
    {"params": ..., "opt_state": ..., "global_step": ...}          scenic.train_lib TrainState
    {"optimizer": {"target": params, "state": ...}, ...}          the old flax.optim trainer
The parameters are read; everything else (the Adam moments are twice the parameters' size) is
skipped in the stream, never materialised.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np

from avmae.config import ConfigError

EXT_NDARRAY, EXT_COMPLEX, EXT_SCALAR = 1, 2, 3
CHUNKED = "__msgpack_chunked_array__"
READ_SIZE = 16 * 2 ** 20
MAX_BUFFER = 2 ** 31 - 1  # one msgpack object (a chunk is at most 1 GiB) must fit


def _array(data: bytes) -> np.ndarray:
    shape, dtype, buffer = msgpack.unpackb(data, raw=False)
    if dtype in ("bfloat16", b"bfloat16"):  # no numpy dtype: widen to float32 (exact)
        bits = np.frombuffer(buffer, np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(buffer, np.dtype(dtype)).reshape(shape)


def _ext_hook(code: int, data: bytes):
    if code == EXT_NDARRAY:
        return _array(data)
    if code == EXT_SCALAR:
        return _array(data)[()]
    if code == EXT_COMPLEX:
        real, imag = msgpack.unpackb(data)
        return complex(real, imag)
    return msgpack.ExtType(code, data)


def _unchunk(tree):
    """Join the chunked arrays of a restored tree (in place) and return it."""
    if isinstance(tree, dict):
        if tree.get(CHUNKED) is True:
            chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
            shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
            return np.concatenate(chunks).reshape(shape)
        for k, v in tree.items():
            tree[k] = _unchunk(v)
    return tree


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """{"a": {"b": x}} -> {"a/b": x}: Flax's own way of naming a parameter."""
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "/"))
        else:
            out[name] = v
    return out


def _read_state(unpacker: msgpack.Unpacker) -> tuple[dict | None, str | None, int]:
    """(params, layout, global step) from the top-level map of a saved train state; every other
    entry is skipped in the stream."""
    params, layout, step = None, None, 0
    for _ in range(unpacker.read_map_header()):
        key = unpacker.unpack()
        if key == "params":
            params, layout = unpacker.unpack(), "train_state"
        elif key == "optimizer":
            params, layout = _optimizer_target(unpacker, params, layout)
        elif key == "global_step":
            step = int(unpacker.unpack())
        else:
            unpacker.skip()          # opt_state, rng, model state, metadata
    return params, layout, step


def _optimizer_target(unpacker: msgpack.Unpacker, params, layout):
    """The old flax.optim trainer's {"target": params, "state": ...}: (its target, "optimizer"),
    or (params, layout) as given when it has none."""
    for _ in range(unpacker.read_map_header()):
        if unpacker.unpack() == "target":
            params, layout = unpacker.unpack(), "optimizer"
        else:
            unpacker.skip()  # the optimizer's state: moments, step
    return params, layout


def _expect_end(unpacker: msgpack.Unpacker) -> None:
    """Raise ValueError when anything follows the checkpoint's map."""
    try:
        unpacker.unpack()
    except msgpack.OutOfData:
        return
    raise ValueError("trailing data")


def read_params(path: str | Path) -> tuple[dict[str, np.ndarray], str, int]:
    """(flat parameters {"Transformer_rgb/encoderblock_0/...": array}, layout, global step).

    layout is "train_state" or "optimizer". Raises ConfigError with one line for a file that is not
    a Flax checkpoint, a truncated one, or one without parameters.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' not found (download it from the Model Zoo, "
                          "scenic/projects/av_mae/README.md)")
    try:
        with open(path, "rb") as f:
            unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False, ext_hook=_ext_hook,
                                        read_size=READ_SIZE, max_buffer_size=MAX_BUFFER)
            params, layout, step = _read_state(unpacker)
            _expect_end(unpacker)
    except msgpack.OutOfData:
        raise ConfigError(f"'{path}' ends early ({path.stat().st_size} bytes): the download is "
                          "truncated; download it again") from None
    except (msgpack.UnpackException, msgpack.exceptions.ExtraData, ValueError, TypeError,
            UnicodeDecodeError) as err:
        raise ConfigError(f"'{path}' is not a Flax msgpack checkpoint ({type(err).__name__}): give "
                          "the file a Scenic Model Zoo link downloads, e.g. .../checkpoint") from None
    if not isinstance(params, dict) or not params:
        raise ConfigError(f"'{path}' is a msgpack file but holds no Flax parameters (expected a "
                          "'params' or 'optimizer/target' entry)")
    flat = flatten(_unchunk(params))
    bad = [k for k, v in flat.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise ConfigError(f"'{path}': parameter '{bad[0]}' is not an array")
    return flat, layout, step
