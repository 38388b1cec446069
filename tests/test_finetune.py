"""`avmae finetune`: runs from an AV-MAE checkpoint and from scratch, the init really loads the
encoder, the recipe's defaults and their precedence, the losses, exact resume, and bad input."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, run_cli
from safetensors import safe_open
from safetensors.torch import load_file

from avmae.cli import main
from avmae.config import ConfigError, build_config
from avmae.training.pretrain import pretrain
from avmae.training.finetune import classification_loss, finetune_config, smooth, soft_targets

FT = ["train.batch_size=4", "train.steps=2", "train.checkpoint_every=1", "train.log_every=1",
      "data.num_workers=0"]


@pytest.fixture(scope="module")
def pretrained(tiny_synth, tmp_path_factory):
    """A one-step AV-MAE pretraining run (mid fusion, depth 2: block 0 separate, block 1 joint)."""
    run = tmp_path_factory.mktemp("pre") / "run"
    cfg = build_config("tiny-4l-cpu", TINY + ["train.steps=1", "train.batch_size=4", "train.figure_clips=0"])
    pretrain(cfg, str(tiny_synth / "train.csv"), str(run))
    return run


def finetune_args(init, data, out, modality, *sets, preset=None):
    args = ["finetune", "--init", str(init), "--modality", modality, "--data", str(data / "train.csv"),
            "--val", str(data / "test.csv"), "--out", str(out)]
    args += ["--preset", preset] if preset else []
    return args + [a for s in sets for a in ("--set", s)]


def weights(path):
    return load_file(str(path / "model.safetensors"))


def metadata(path):
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        return f.metadata()


def train_labels(data, column="label"):
    with open(data / "train.csv") as f:
        return sorted({row[column] for row in csv.DictReader(f)})


@pytest.mark.parametrize("modality", ["audio", "video", "av"])
def test_finetune_from_avmae_writes_last_and_best(modality, pretrained, tiny_synth, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(finetune_args(pretrained, tiny_synth, run, modality, *FT)) == 0
    out = capsys.readouterr().out
    assert re.search(r"init from .*: loaded \d+ tensors; new: (bottleneck, )?head", out)  # the init report

    ckpts = run / "checkpoints"
    last, best = (ckpts / "last").resolve(), (ckpts / "best").resolve()
    assert last.name == "step_0000002" and (last / "COMPLETE").exists() and (best / "COMPLETE").exists()
    meta = metadata(last)
    assert meta["kind"] == "avmae_finetune" and meta["label_column"] == "label" and meta["task"] == "single"
    vocab = json.loads(meta["vocab"])
    assert vocab == {"label": train_labels(tiny_synth)}
    assert json.loads((run / "vocab.json").read_text())["vocab"] == vocab
    assert json.loads(meta["num_classes"]) == [len(vocab["label"])]

    # The best checkpoint is the first step with the highest validation top-1.
    vals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "val_top1" in r]
    assert [r["step"] for r in vals] == [1, 2]
    top = max(r["val_top1"] for r in vals)
    best_step = next(r["step"] for r in vals if r["val_top1"] == top)
    assert json.loads((best / "val_metrics.json").read_text())["step"] == best_step
    assert vals[-1]["val_clips_evaluated"] == 8 and vals[-1]["val_clips_skipped"] == 0

    # Table 16's recipe replaced the pretraining one; mixup 0.5 in every column (Table 16).
    cfg = json.loads((run / "config.json").read_text())
    train = cfg["train"]
    assert (train["optimizer"], train["base_lr"], train["clip_grad"]) == ("sgd", 0.8, 1.0)
    assert cfg["data"]["flip"] is True and cfg["finetune"]["modality"] == modality
    assert cfg["finetune"]["mixup_alpha"] == 0.5 and cfg["finetune"]["time_shift"] is False

    sd = weights(last)
    streams = {k.split(".")[1] for k in sd if k.startswith("streams.")}
    assert streams == ({"audio", "video"} if modality == "av" else {modality})
    assert ("bottleneck" in sd) == (modality == "av")    # MBT fuses through bottleneck tokens
    assert sd["head.weight"].abs().sum() > 0             # heads start at zero: training moved them


def test_the_pretrained_encoder_is_what_finetuning_starts_from(pretrained, tiny_synth, tmp_path):
    """With lr 0 nothing moves, so the finetuned MBT must hold the pretrained encoder (mid fusion:
    the separate block per stream, the joint block copied into both streams) and zero heads;
    from scratch, it must not."""
    frozen = FT[:1] + ["train.steps=1", "train.base_lr=0", "data.num_workers=0"]
    assert main(finetune_args(pretrained, tiny_synth, tmp_path / "ft", "av", *frozen)) == 0
    assert main(finetune_args("scratch", tiny_synth, tmp_path / "scratch", "av", *TINY, *frozen,
                              preset="tiny-4l-cpu")) == 0
    pre = weights(pretrained / "checkpoints" / "last")
    ft = weights(tmp_path / "ft" / "checkpoints" / "last")
    scratch = weights(tmp_path / "scratch" / "checkpoints" / "last")
    for m in ("audio", "video"):
        assert torch.equal(ft[f"streams.{m}.blocks.0.attn.qkv.weight"],
                           pre[f"encoder.streams.{m}.blocks.0.attn.qkv.weight"])
        assert torch.equal(ft[f"streams.{m}.blocks.1.mlp.fc1.weight"],
                           pre["encoder.joint.blocks.0.mlp.fc1.weight"])
        assert torch.equal(ft[f"patch_embed.{m}.proj.weight"], pre[f"patch_embed.{m}.proj.weight"])
        assert not torch.equal(scratch[f"streams.{m}.blocks.0.attn.qkv.weight"],
                               pre[f"encoder.streams.{m}.blocks.0.attn.qkv.weight"])
    assert not ft["head.weight"].any() and not ft["head.bias"].any()
    assert metadata(tmp_path / "scratch" / "checkpoints" / "last")["init"] == "scratch"


def test_from_scratch_writes_last_and_best(tiny_synth, tmp_path):
    run = tmp_path / "run"
    assert main(finetune_args("scratch", tiny_synth, run, "audio", *TINY, *FT, preset="tiny-4l-cpu")) == 0
    assert (run / "checkpoints" / "last" / "COMPLETE").exists()
    assert (run / "checkpoints" / "best" / "model.safetensors").exists()
    assert json.loads((run / "config.json").read_text())["model"]["embed_dim"] == 32  # the preset + --set


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(pretrained, tiny_synth, tmp_path):
    """4 steps straight vs. the same run cut back to its step-2 checkpoint and resumed: mixup,
    SpecAugment, stochastic depth, data order and validation in between must not change a bit."""
    budget = [*FT[:1], "train.steps=4", "train.checkpoint_every=2", "train.keep_checkpoints=5",
              "data.num_workers=0", "finetune.label_column=verb,noun"]
    full = tmp_path / "full"
    assert main(finetune_args(pretrained, tiny_synth, full, "av", *budget)) == 0
    cut = tmp_path / "cut"
    shutil.copytree(full, cut, symlinks=True)
    shutil.rmtree(cut / "checkpoints" / "step_0000004")  # `last` now dangles: step 2 is the newest
    assert main(["finetune", "--data", str(tiny_synth / "train.csv"), "--val", str(tiny_synth / "test.csv"),
                 "--out", str(cut), "--resume"]) == 0
    a, b = weights(full / "checkpoints" / "step_0000004"), weights(cut / "checkpoints" / "step_0000004")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = torch.load(full / "checkpoints" / "step_0000004" / "train_state.pt", weights_only=True)
    sb = torch.load(cut / "checkpoints" / "step_0000004" / "train_state.pt", weights_only=True)
    for i, state in sa["optimizer"]["state"].items():  # SGD momentum buffers
        assert torch.equal(state["momentum_buffer"], sb["optimizer"]["state"][i]["momentum_buffer"])
    assert not torch.equal(a["head.0.weight"], weights(cut / "checkpoints" / "step_0000002")["head.0.weight"])


@pytest.mark.slow
def test_torchrun_two_processes_validate_and_evaluate_like_one(pretrained, tiny_synth, tmp_path):
    """DDP: sharded validation and evaluation, summed over ranks (padding deduplicated), give one
    process's numbers; with the random regularisers off, the same weights too."""
    plain = ["train.steps=3", "train.checkpoint_every=2", "finetune.label_column=labels",
             "finetune.drop_path=0", "finetune.mixup_alpha=0", "finetune.specaugment=false",
             "finetune.time_shift=false"]
    one = run_cli(finetune_args(pretrained, tiny_synth, tmp_path / "one", "av", "train.batch_size=4", *plain))
    assert one.returncode == 0, one.stderr[-3000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                "29547", "-m", "avmae.cli"]
    two = subprocess.run([*torchrun, *finetune_args(pretrained, tiny_synth, tmp_path / "two", "av",
                                                    "train.batch_size=2", *plain)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "x 2 cpu process(es)" in two.stdout  # the finetune line: global batch = b x a x 2 processes

    def vals(run):
        rows = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        return [r for r in rows if "val_mAP" in r]
    assert vals(tmp_path / "one") == vals(tmp_path / "two") and len(vals(tmp_path / "one")) == 2
    a = weights(tmp_path / "one" / "checkpoints" / "last")
    b = weights(tmp_path / "two" / "checkpoints" / "last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)

    header, *rows = (tiny_synth / "test.csv").read_text().splitlines()
    odd = tmp_path / "seven.csv"  # 7 clips x 3 views = 21 samples: one rank gets a padded duplicate
    odd.write_text("\n".join([header] + [f"{tiny_synth}/{r}" for r in rows[:7]]) + "\n")
    evaluate = ["evaluate", str(tmp_path / "one"), "--data", str(odd), "--views", "3"]
    single = run_cli(evaluate)
    sharded = subprocess.run([*torchrun, *evaluate], env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0 and sharded.returncode == 0, single.stderr[-2000:] + sharded.stderr[-2000:]
    result = json.loads(single.stdout)
    assert result == json.loads(sharded.stdout)  # printed once, by rank 0
    assert result["clips_evaluated"] == 7


# ---- the recipe -------------------------------------------------------------------------------

def test_finetune_defaults_replace_pretraining_and_set_wins():
    base = build_config("tiny-4l-cpu", ["train.steps=7", "train.warmup_steps=3", "data.num_frames=8"])
    cfg = finetune_config(base, "audio")
    t = cfg.train
    assert (t.optimizer, t.base_lr, t.warmup_epochs, t.epochs) == ("sgd", 0.8, 2.5, 50)
    assert (cfg.train.steps, cfg.train.warmup_steps) == (0, -1)   # pretraining budgets do not carry over
    assert cfg.data.num_frames == 8 and cfg.data.flip and cfg.finetune.mixup_alpha == 0.5  # Table 16
    assert finetune_config(base, "audio", recipe="audioset").finetune.mixup_alpha == 1.25  # Table 18
    assert finetune_config(base, "av").finetune.mixup_alpha == 0.5
    cfg = finetune_config(base, None, ["finetune.modality=audio", "finetune.mixup_alpha=0.1",
                                       "train.base_lr=1.6", "finetune.label_column=labels"])
    assert (cfg.finetune.mixup_alpha, cfg.train.base_lr, cfg.finetune.label_column) == (0.1, 1.6, "labels")
    assert base.train.optimizer == "adamw"  # the base is not modified
    with pytest.raises(ConfigError, match="contradicts"):
        finetune_config(base, "video", ["finetune.modality=audio"])


def test_losses_match_torch_and_the_task_definitions():
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 7), torch.tensor([0, 3, 6, 2, 2])
    targets = smooth(soft_targets(labels, "single", [7]), 0.3)
    loss, _ = classification_loss(logits, targets, "single")
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels, label_smoothing=0.3))

    multi = (torch.rand(5, 7) > 0.5).float()
    loss, _ = classification_loss(logits, multi, "multi")  # summed over classes, mean over clips
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, multi) * 7)

    verb, noun = torch.randn(5, 3), torch.randn(5, 4)
    pairs = torch.tensor([[0, 1], [2, 3], [1, 0], [0, 0], [2, 2]])
    loss, parts = classification_loss((verb, noun), soft_targets(pairs, "verb_noun", [3, 4]), "verb_noun")
    torch.testing.assert_close(parts["loss_verb"], F.cross_entropy(verb, pairs[:, 0]))
    # Epic Kitchens: the two heads' losses averaged (equal weights, official mbt.py), not summed.
    torch.testing.assert_close(loss, (F.cross_entropy(verb, pairs[:, 0]) + F.cross_entropy(noun, pairs[:, 1])) / 2)


# ---- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["missing_init", "unknown_modality", "val_label_not_in_vocab",
                                  "scratch_without_preset", "init_is_a_finetune_run", "no_init"])
def test_bad_arguments_exit_2_with_one_line(case, pretrained, tiny_synth, tmp_path, capsys):
    run = tmp_path / "run"
    if case == "missing_init":
        argv = finetune_args(tmp_path / "nope", tiny_synth, run, "av")
    elif case == "unknown_modality":
        argv = finetune_args(pretrained, tiny_synth, run, "smell")
    elif case == "val_label_not_in_vocab":
        bad = tmp_path / "bad_val.csv"
        rows = (tiny_synth / "test.csv").read_text().splitlines()
        path = tiny_synth / rows[1].split(",")[0]
        bad.write_text(rows[0] + "\n" + f"{path},zebra_moo,zebra,moo,zebra\n")
        argv = finetune_args(pretrained, tiny_synth, run, "av")
        argv[argv.index("--val") + 1] = str(bad)
    elif case == "scratch_without_preset":
        argv = finetune_args("scratch", tiny_synth, run, "av")
    elif case == "init_is_a_finetune_run":
        fake = tmp_path / "ft" / "checkpoints" / "step_0000001"
        from avmae.checkpoint import save_checkpoint
        save_checkpoint(tmp_path / "ft", 1, {"head.weight": torch.zeros(2, 2)}, build_config(),
                        "avmae_finetune")
        assert fake.exists()
        argv = finetune_args(tmp_path / "ft", tiny_synth, run, "av")
    else:
        argv = finetune_args(pretrained, tiny_synth, run, "av")
        i = argv.index("--init")
        del argv[i:i + 2]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0], err
    if case == "val_label_not_in_vocab":
        assert "zebra_moo" in err[0] and "vocabulary" in err[0]
    assert not (run / "checkpoints").exists()


# ---- the paper's recipe, in the loop (issue 11) ---------------------------------------------------

def test_training_takes_a_loss_per_modality_against_its_own_mixed_targets(pretrained, tiny_synth,
                                                                           tmp_path, monkeypatch):
    """MBT: the loss is computed on each modality's logits against that modality's mixed targets
    (one mixup lambda per modality) and averaged; validation still sees the averaged logits."""
    import avmae.training.finetune as ft
    seen = []
    real = ft.per_modality_loss

    def spy(logits, targets, task):
        seen.append((logits, targets))
        return real(logits, targets, task)

    monkeypatch.setattr(ft, "per_modality_loss", spy)
    assert main(finetune_args(pretrained, tiny_synth, tmp_path / "run", "av", *FT,
                              "finetune.label_smoothing=0")) == 0
    assert len(seen) == 2                                    # two training steps
    logits, targets = seen[0]
    assert set(logits) == set(targets) == {"audio", "video"}
    assert logits["audio"].shape == targets["audio"].shape
    # Different lambdas per modality (a step whose pairing happens to be the identity mixes nothing).
    assert any(not torch.allclose(t["audio"], t["video"]) for _, t in seen)
    for t in targets.values():
        torch.testing.assert_close(t.sum(1), torch.ones(len(t)))   # still distributions
    logits, targets = seen[1]                 # after one step the heads are no longer zero
    assert not torch.allclose(logits["audio"], logits["video"])
    loss, _ = real(logits, targets, "single")
    torch.testing.assert_close(loss, (classification_loss(logits["audio"], targets["audio"], "single")[0]
                                      + classification_loss(logits["video"], targets["video"], "single")[0]) / 2)


def test_learning_rates_are_the_papers_at_its_batch_scaled_to_ours(pretrained, tiny_synth, tmp_path,
                                                                    capsys):
    """Sec. B.1 gives each rate at the reported batch: finetuning 0.8 at 64, pretraining 3e-4 at
    512; a global batch of 4 trains at 4/64 and 4/512 of them (not x 4/256)."""
    run = tmp_path / "ft"
    assert main(finetune_args(pretrained, tiny_synth, run, "av", *FT, "train.warmup_steps=0")) == 0
    assert "peak lr 0.05 = train.base_lr 0.8 x global batch 4 / train.lr_batch 64" in capsys.readouterr().out
    rows = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    assert rows[0]["step"] == 1 and rows[0]["lr"] == pytest.approx(0.8 * 4 / 64)

    pre = tmp_path / "pre"
    assert main(["pretrain", "--preset", "tiny-4l-cpu", "--recipe", "vggsound", "--data",
                 str(tiny_synth / "train.csv"), "--out", str(pre),
                 *[a for s in TINY + ["train.steps=1", "train.batch_size=4", "train.figure_clips=0",
                                      "train.warmup_steps=0"] for a in ("--set", s)]]) == 0
    assert "train.lr_batch 512" in capsys.readouterr().out
    rows = [r for r in map(json.loads, (pre / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    assert rows[0]["lr"] == pytest.approx(3e-4 * 4 / 512)


def test_a_finetune_from_a_batch_64_pretraining_run_prints_its_own_global_batch_and_lr(
        tiny_synth, tmp_path, capsys):
    """Issue #21: the batch is the recipe's (here --set train.global_batch=16 on a 16-clip tiny
    set), never the pretraining run's 64, and the global batch and peak lr are printed first."""
    from avmae.checkpoint import save_checkpoint
    from avmae.models import AVMAE
    cfg = build_config("tiny-4l-cpu", TINY + ["train.batch_size=64"])
    save_checkpoint(tmp_path / "pre", 1, AVMAE(cfg.model).state_dict(), cfg, "avmae_pretrain")
    run = tmp_path / "ft"
    assert main(finetune_args(tmp_path / "pre", tiny_synth, run, "audio", "train.global_batch=16",
                              "train.steps=1", "data.num_workers=0")) == 0
    out = capsys.readouterr().out
    assert "global batch 16 = 8 x 2 accumulated x 1 cpu process(es) (train.global_batch 16)" in out
    assert "peak lr 0.2 = train.base_lr 0.8 x global batch 16 / train.lr_batch 64" in out
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["batch_size"], train["accum_steps"], train["global_batch"]) == (8, 2, 16)
