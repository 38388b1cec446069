"""Decoding the shards' JPEG frames on the GPU: data.jpeg_decode="cuda" (issue 20).

By default (data.jpeg_decode="cpu") a DataLoader worker decodes the frames of a clip's window
with Pillow (libjpeg-turbo) and applies the video transform; at the paper's input the decoding
is most of a worker's time (BENCHMARKS.md, shards format 2). With data.jpeg_decode="cuda" the
work is split at the batch:

    worker       draws the window and the transform's random choices from the sample's rng,
                 exactly as the CPU path does (every draw stays a function of (seed, epoch,
                 clip): resume stays exact and the worker count changes nothing), reads the
                 window's JPEG files and leaves them undecoded:
                 sample["video_jpeg"] = (JpegFrames, VideoPlan), or None without video
    collate      keeps those pairs as a list beside the stacked tensors
    after the    decode_video_batch: every JPEG file of the batch in one decoder call
    batch        (nvjpeg_decoder: torchvision.io.decode_jpeg(files, device="cuda"), nvJPEG),
                 then per clip the CPU path's own crop / resize / flip / colour steps
                 (transforms.apply_video_plan) on the decoded frames -> batch["video"]
                 (B, 3, T, S, S) on the GPU. DecodeAfterBatch does this for every batch a
                 loader yields, so the training, evaluation, probe and embedding loops see
                 batches of the usual form.

The result is the CPU path's video tensor up to decoder rounding: nvJPEG's IDCT and chroma
upsampling may differ from libjpeg-turbo's by a level or so, and CUDA resizes in float (one level
at most, transforms.resize). `decode_video_batch` takes the decoder as an argument, so the whole
deferred path also runs on a CPU with `pillow_decoder`, where it gives exactly the in-worker
path's tensors (tests/test_gpu_jpeg.py).

Fallback: only shards format 2 hold JPEG frames, and the GPU path needs CUDA and torchvision
(`pip install 'avmae[gpu-jpeg]'`; the project itself does not depend on torchvision). Where the
flag asks for cuda and the data is a manifest of raw videos, CUDA is not available, or
torchvision (or its decode_jpeg on a CUDA device) does not work, `choose_jpeg_decode` picks the
CPU path and says why in one warning line, once per process; the training loops write its
decision to the run's metrics log. NVIDIA DALI's decoder would be another way; it is not built.

A frame that the GPU decoder cannot decode (the worker already refuses bytes that are not whole
JPEG files) drops its clip from the batch, counted in "num_skipped" like a clip a worker could
not read (DESIGN "Errors and bad input").
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable

import numpy as np
import torch

from avmae.config import DataConfig
from avmae.data.shards import JpegFrames, decode_jpeg, encode_jpeg
from avmae.data.transforms import VideoPlan, apply_video_plan, fill_video

log = logging.getLogger(__name__)

# JPEG files (uint8 (n,) CPU tensors) -> decoded frames, uint8 (3, H, W) each, in one call
Decoder = Callable[[list[torch.Tensor]], list[torch.Tensor]]
DECODE_ERRORS = (RuntimeError, OSError, ValueError, SyntaxError)  # torchvision, Pillow


# ---- where to decode --------------------------------------------------------------------------

@functools.cache
def gpu_jpeg_available() -> tuple[bool, str]:
    """(True, "") where torchvision's decode_jpeg decodes a batch of JPEG files on the current
    CUDA device (tried once per process on a small image), else (False, why not)."""
    if not torch.cuda.is_available():
        return False, "CUDA is not available"
    try:
        from torchvision.io import decode_jpeg as tv_decode_jpeg
    except Exception as err:  # not installed, or built for another torch
        return False, (f"torchvision is not importable ({type(err).__name__}: {err}); "
                       "pip install 'avmae[gpu-jpeg]'")
    try:
        probe = encode_jpeg(np.full((16, 16, 3), 128, np.uint8), 90)
        tv_decode_jpeg([torch.frombuffer(bytearray(probe), dtype=torch.uint8)], device="cuda")
    except Exception as err:  # an old torchvision (no batched or no CUDA decoding), no nvJPEG
        return False, f"torchvision's decode_jpeg does not decode on CUDA ({type(err).__name__}: {err})"
    return True, ""


_WARNED: set[str] = set()


def choose_jpeg_decode(wanted: str, shards: bool, device: torch.device | None = None) -> dict:
    """Where a dataset's JPEG frames are decoded: {"jpeg_decode": "cpu" | "cuda" (used),
    "jpeg_decode_asked": wanted (data.jpeg_decode), "jpeg_decode_why": the reason} (the run log's
    record). `device`: the run's (None: not known, CUDA if there is one); a run on another device
    decodes on the CPU. Asked for cuda and given cpu: one warning line, once per process (rank 0)."""
    if wanted != "cuda":
        used, why = "cpu", "data.jpeg_decode=cpu"
    elif not shards:
        used, why = "cpu", "the data is not shards format 2 (only shards hold JPEG frames)"
    else:
        ok, why = gpu_jpeg_available()
        if ok and device is not None and torch.device(device).type != "cuda":
            ok, why = False, f"the run's device is {torch.device(device).type}"
        used, why = ("cuda", "nvJPEG (torchvision.io.decode_jpeg on CUDA)") if ok else ("cpu", why)
    if wanted == "cuda" and used == "cpu" and why not in _WARNED:
        _WARNED.add(why)
        if os.environ.get("RANK", "0") == "0":
            sys.stderr.write(f"avmae: warning: data.jpeg_decode=cuda: decoding JPEG frames on the "
                             f"CPU instead ({why})\n")
            sys.stderr.flush()
    return {"jpeg_decode": used, "jpeg_decode_asked": wanted, "jpeg_decode_why": why}


# ---- decoders ---------------------------------------------------------------------------------

def pillow_decoder(files: list[torch.Tensor]) -> list[torch.Tensor]:
    """The CPU path's decoder (libjpeg-turbo through Pillow) in the Decoder form."""
    return [torch.from_numpy(decode_jpeg(f.numpy()).copy()).permute(2, 0, 1) for f in files]


def nvjpeg_decoder(device: torch.device | str | None = None) -> Decoder:
    """torchvision's batched nvJPEG decoding onto `device` (default: the current CUDA device)."""
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as tv_decode_jpeg
    device = torch.device("cuda", torch.cuda.current_device()) if device is None else device

    def decode(files: list[torch.Tensor]) -> list[torch.Tensor]:
        return tv_decode_jpeg(files, mode=ImageReadMode.RGB, device=device)
    return decode


# ---- after the batch --------------------------------------------------------------------------

def clip_video(frames: JpegFrames, plan: VideoPlan, images: list[torch.Tensor],
               cfg: DataConfig) -> torch.Tensor:
    """One clip's decoded distinct frames (uint8 (3, H, W) each) -> its video input, float32
    (3, T, S, S), by the CPU path's steps with the worker's draws."""
    if any(tuple(im.shape) != (3, frames.height, frames.width) for im in images):
        raise ValueError(f"a frame decoded to {tuple(images[0].shape)}, the index says "
                         f"(3, {frames.height}, {frames.width})")
    distinct = torch.stack(images)                                   # (K, 3, H, W)
    window = distinct[frames.order.to(distinct.device)]              # (T, 3, H, W)
    return apply_video_plan(window.permute(0, 2, 3, 1), plan, cfg)   # from (T, H, W, 3)


def decode_video_batch(windows: list[tuple[JpegFrames, VideoPlan] | None], cfg: DataConfig,
                       decoder: Decoder) -> tuple[torch.Tensor, list[int]]:
    """A batch's undecoded windows -> (video float32 (B - failed, 3, T, S, S) on the decoder's
    device, the positions of the clips whose frames did not decode). Every JPEG file of the
    batch goes to `decoder` in one call; if that call fails, clip by clip, to find the culprits.
    A clip without video (None) gets fill_video's zeros, as in the worker."""
    files = [f for w in windows if w is not None for f in w[0].files()]
    try:
        images = decoder(files) if files else []
    except DECODE_ERRORS:
        images = None
    videos, failed, k = {}, [], 0   # position -> its video; None: the clip has no video
    for position, window in enumerate(windows):
        if window is None:
            videos[position] = None
            continue
        frames, plan = window
        n = len(frames.bounds) - 1
        try:
            mine = images[k: k + n] if images is not None else decoder(frames.files())
            videos[position] = clip_video(frames, plan, mine, cfg)
        except DECODE_ERRORS as err:
            log.warning("clip %d of the batch: skipped (its JPEG frames did not decode after "
                        "the batch: %s)", position, err)
            failed.append(position)
        k += n
    device = next((x.device for x in videos.values() if x is not None), torch.device("cpu"))
    kept = [fill_video(cfg).to(device) if x is None else x for x in videos.values()]
    video = torch.stack(kept) if kept else fill_video(cfg).unsqueeze(0)[:0].to(device)
    return video, failed


def finish_batch(batch: dict, cfg: DataConfig, decoder: Decoder) -> dict:
    """A collated batch with "video_jpeg" -> the usual batch, "video" decoded; clips whose frames
    did not decode are taken out of every per-clip tensor and counted in "num_skipped"."""
    windows = batch.pop("video_jpeg", None)
    if windows is None:  # an all-unreadable batch: the template's empty "video" is already there
        return batch
    video, failed = decode_video_batch(windows, cfg, decoder)
    if failed:
        keep = torch.ones(len(windows), dtype=torch.bool)
        keep[failed] = False
        batch = {k: v[keep] if torch.is_tensor(v) and v.dim() > 0 and len(v) == len(windows)
                 else v for k, v in batch.items()}
        batch["num_skipped"] = batch["num_skipped"] + len(failed)
    batch["video"] = video
    return batch


class DecodeAfterBatch:
    """A DataLoader whose batches carry undecoded windows: each batch comes out with its "video"
    decoded by `decoder` (finish_batch). len, and `batches_per_epoch` where build_loader sets it,
    as the loader's."""

    def __init__(self, loader, cfg: DataConfig, decoder: Decoder):
        self.loader, self.cfg, self.decoder = loader, cfg, decoder
        self.dataset = loader.dataset

    def __iter__(self):
        for batch in self.loader:
            yield finish_batch(batch, self.cfg, self.decoder)

    def __len__(self) -> int:
        return len(self.loader)
