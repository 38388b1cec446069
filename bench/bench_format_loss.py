"""The same pretraining from shards format 2 and from the raw mp4 files: does the loss agree
within the run-to-run spread?

    python bench/bench_format_loss.py                       # the quickstart's 304 training clips
    python bench/bench_format_loss.py --data DIR/train.csv --steps 200 --seeds 0 1 2
    python bench/bench_format_loss.py --smoke               # tiny sizes: does it run?

For each seed, `avmae pretrain` runs twice with the quickstart's preset and pretraining recipe,
the same seed and steps: once on the raw manifest (every clip decoded by PyAV at every step) and
once on shards format 2 prepared from it (whole clips, JPEG frames, float16 log-mel, the window
drawn at read time). A run's loss is the mean of its logged training losses over the last quarter
of its steps. The run-to-run spread is the standard deviation of that loss over seeds within one
source; the format's effect is the mean over seeds of (shards - raw) with the same seed. One JSON
line per run, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import emit, machine  # noqa: E402

from avmae.cli import main as avmae  # noqa: E402
from avmae.cli.quickstart import PRESET, PRETRAIN_RECIPE, Plan, synth_args  # noqa: E402

SMOKE = ["model.embed_dim=32", "model.num_heads=2", "model.depth=2", "model.fusion_layers=1",
         "model.decoder_embed_dim=16", "model.decoder_num_heads=2", "model.decoder_depth=1",
         "model.decoder_mlp_dim=32", "data.num_frames=4", "data.short_side=36",
         "data.crop_size=32", "data.audio_seconds=0.64"]


def run_loss(data: Path, out: Path, seed: int, steps: int, extra: list[str]) -> dict:
    """`avmae pretrain` on `data`; the mean logged loss over the last quarter of the steps."""
    sets = [f"train.steps={steps}", f"train.seed={seed}", "train.log_every=1",
            f"train.checkpoint_every={steps}", "train.figure_clips=1", *PRETRAIN_RECIPE, *extra]
    t0 = time.perf_counter()
    status = avmae(["pretrain", "--preset", PRESET, "--data", str(data), "--out", str(out),
                    *[a for s in sets for a in ("--set", s)]])
    seconds = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"avmae pretrain on {data} stopped with status {status}")
    losses = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record and "step" in record:       # the training steps' records
            losses[record["step"]] = record["loss"]
    tail = [losses[s] for s in sorted(losses) if s > steps * 3 // 4]
    return {"loss": statistics.fmean(tail), "final_loss": losses[max(losses)],
            "steps_averaged": len(tail), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="manifest CSV (default: the quickstart's synthetic training split)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    extra = SMOKE if args.smoke else []
    steps = 8 if args.smoke else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = args.data
        if manifest is None:
            plan = Plan()
            clips = (48, 0.5) if args.smoke else (plan.clips, plan.test_fraction)
            avmae(synth_args(tmp / "synth", clips[0], clips[1], 0))
            manifest = tmp / "synth" / "train.csv"
        shards = tmp / "shards"
        if avmae(["prepare", str(manifest), "--out", str(shards), "--preset", PRESET,
                  *[a for s in extra for a in ("--set", s)]]) != 0:
            raise SystemExit("avmae prepare failed")
        runs = {"raw": {}, "shards": {}}
        for seed in args.seeds:
            for source, data in (("raw", manifest), ("shards", shards)):
                result = run_loss(data, tmp / f"{source}-{seed}", seed, steps, extra)
                runs[source][seed] = result["loss"]
                emit({"bench": "format_loss", "source": source, "seed": seed, "steps": steps,
                      **result})
    summary = {"bench": "format_loss_summary", "steps": steps, "seeds": args.seeds,
               "machine": machine()}
    for source in runs:
        values = list(runs[source].values())
        summary[f"{source}_mean"] = statistics.fmean(values)
        summary[f"{source}_spread"] = statistics.stdev(values) if len(values) > 1 else None
    diffs = [runs["shards"][s] - runs["raw"][s] for s in args.seeds]
    summary["shards_minus_raw_same_seed"] = diffs
    summary["shards_minus_raw_mean"] = statistics.fmean(diffs)
    spreads = [summary[f"{s}_spread"] for s in runs if summary[f"{s}_spread"] is not None]
    if spreads:
        unit = max(spreads)
        summary["within_spread"] = abs(summary["shards_minus_raw_mean"]) <= unit
        summary["difference_in_spreads"] = summary["shards_minus_raw_mean"] / unit if unit else None
    emit(summary)


if __name__ == "__main__":
    main()
