import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # CI has 2 cores; tests run many small models

# A tiny AV-MAE and input that train in well under a second per step on one core.
TINY = ["model.embed_dim=32", "model.num_heads=2", "model.depth=2", "model.fusion_layers=1",
        "model.decoder_embed_dim=16", "model.decoder_num_heads=2", "model.decoder_depth=1",
        "model.decoder_mlp_dim=32", "data.num_frames=4", "data.frame_stride=2", "data.short_side=36",
        "data.crop_size=32", "data.audio_seconds=0.64", "data.num_workers=0",
        "train.figure_clips=1", "train.log_every=1", "finetune.fusion_layer=1"]


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A small synthetic dataset (real mp4 files) shared by the end-to-end tests."""
    from avmae.cli import main
    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", str(out), "--clips", "24", "--seconds", "1.2", "--size", "48",
                 "--workers", "1", "--seed", "3"]) == 0
    return out


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """`avmae ARGS` in a fresh single-threaded process (the same float results as in-process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "avmae.cli", *args], env=env, capture_output=True,
                          text=True, **kwargs)
