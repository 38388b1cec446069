"""The official weights: `avmae import-scenic` against the official Scenic code's own outputs.

tests/data/scenic holds vectors that tools/scenic_vectors.py made by running the OFFICIAL model
modules (google-research/scenic, jax + flax on CPU) on tiny versions of the released setups with
random non-zero weights: the inputs, the masks the official code drew, and its outputs. Each test
imports a checkpoint exactly as a user would and compares in fp32; the tolerance is the issue's:
maximum absolute error at most 1e-4 of the output's largest magnitude.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch

from avmae.checkpoint import load_weights
from avmae.cli import main
from avmae.evaluation import load_finetuned
from avmae.interop import import_scenic
from avmae.models import AVMAE

DATA = Path(__file__).parent / "data" / "scenic"
PRETRAINING = ["audioset_pretrain.optimizer", "audioset_pretrain.params",
               "vggsound_pretrain.optimizer", "vggsound_pretrain.params",
               "audioset_audio_pretrain.optimizer"]   # the audio-only release: audio stream + 2 layers
CLASSIFIERS = ["audioset_mbt.params", "vggsound_mbt.params", "vggsound_audio.params",
               "vggsound_video.params"]
KEY = {"audio": "spectrogram", "video": "rgb"}


def assert_close(ours: torch.Tensor, official: np.ndarray, what: str) -> None:
    ours = ours.detach().float().numpy()
    assert ours.shape == official.shape, f"{what}: shape {ours.shape} vs official {official.shape}"
    err, scale = np.abs(ours - official).max(), np.abs(official).max()
    assert scale > 0.0, f"{what}: official output is all zero, the test would prove nothing"
    assert err <= 1e-4 * scale, f"{what}: max abs error {err:.3g} > 1e-4 x {scale:.3g}"


def imported(name: str, tmp_path: Path, **kw) -> Path:
    out = tmp_path / name
    import_scenic(DATA / f"{name}.msgpack", out, log=lambda *_: None, **kw)
    return out


def model_inputs(vectors) -> dict[str, torch.Tensor]:
    """Official layouts (B, T, H, W, 3) / (B, time, mel, 1) -> avmae's (B, 3, T, H, W) / (B, 1, time, mel)."""
    out = {}
    if "input_rgb" in vectors:
        out["video"] = torch.from_numpy(vectors["input_rgb"]).permute(0, 4, 1, 2, 3).contiguous()
    if "input_spectrogram" in vectors:
        out["audio"] = torch.from_numpy(vectors["input_spectrogram"]).permute(0, 3, 1, 2).contiguous()
    return out


def official_noise(vectors, modality: str) -> torch.Tensor:
    """Masking noise whose ascending sort is the official permutation: the kept tokens first, in the
    official (shuffled) order the encoder saw them, then the masked ones."""
    unmasked = vectors[f"unmasked_{KEY[modality]}"]
    masked = vectors[f"masked_{KEY[modality]}"]
    order = np.concatenate([unmasked, masked], axis=1)          # (B, N)
    noise = np.empty(order.shape, np.float32)
    for b in range(order.shape[0]):
        noise[b, order[b]] = np.arange(order.shape[1])
    return torch.from_numpy(noise)


@pytest.mark.parametrize("name", PRETRAINING)
def test_pretraining_outputs_equal_official(name, tmp_path):
    run = imported(name, tmp_path)
    weights, cfg, kind, _ = load_weights(run)
    assert kind == "avmae_pretrain"
    model = AVMAE(cfg.model).eval()
    model.load_state_dict(weights)
    vectors = np.load(DATA / f"{name.split('.')[0]}.npz")
    inputs = model_inputs(vectors)
    noise = {m: official_noise(vectors, m) for m in inputs}
    with torch.no_grad():
        # Encoder over every token (the official model at train=False).
        features = model.forward_features(**inputs)
        # The visible tokens the official masks kept, in the order the official encoder saw them.
        tokens, _ = model.tokenise(inputs)
        encoded, masks, _ = model.forward_encoder(tokens, None, noise)
        out = model(**inputs, noise=noise)
    for m in inputs:
        k = KEY[m]
        assert_close(features[m], vectors[f"features_{k}"], f"{name} encoder features ({m})")
        assert_close(encoded[m], vectors[f"encoded_{k}"], f"{name} encoder, visible tokens ({m})")
        assert torch.equal(masks[m], torch.from_numpy(vectors[f"token_mask_{k}"]).float())
        assert torch.equal(out[f"mask_{m}"], masks[m])
        # Every token's reconstruction, masked and visible, in the official patch-vector order.
        assert_close(out[f"pred_{m}"], vectors[f"recon_{k}"], f"{name} reconstruction ({m})")


def test_both_checkpoint_layouts_give_the_same_weights(tmp_path):
    a, _, _, _ = load_weights(imported("audioset_pretrain.optimizer", tmp_path))
    b, _, _, _ = load_weights(imported("audioset_pretrain.params", tmp_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_inferred_configs_are_the_official_setups(tmp_path):
    _, audioset, _, _ = load_weights(imported("audioset_pretrain.optimizer", tmp_path))
    m = audioset.model
    assert (m.encoder, m.fusion_layers, m.decoder, m.mask_ratio_audio, m.mask_ratio_video) == ("mid", 2, "shared", 0.7, 0.9)
    assert (m.embed_dim, m.depth, m.num_heads, int(m.embed_dim * m.mlp_ratio)) == (16, 4, 2, 48)
    assert (m.gelu, m.sincos_layout, m.layer_norm_eps) == ("tanh", "interleaved", 1e-6)
    assert audioset.data.audio_seconds == 10.0
    _, vgg, _, _ = load_weights(imported("vggsound_pretrain.params", tmp_path))
    assert (vgg.model.encoder, vgg.model.mask_ratio_audio, vgg.data.audio_seconds) == ("separate", 0.5, 8.0)
    _, mbt, _, meta = load_weights(imported("audioset_mbt.params", tmp_path))
    f = mbt.finetune
    assert (f.modality, f.fusion_layer, f.shared_norm, f.bottlenecks, f.label_column) == ("av", 3, True, 4, "labels")
    assert (mbt.data.num_frames, mbt.data.frame_stride) == (32, 2)
    assert json.loads(meta["num_classes"]) == [527] and meta["task"] == "multi"


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_logits_equal_official(name, tmp_path):
    run = imported(name, tmp_path)
    model, cfg, labels, _ = load_finetuned(run)
    model.eval()
    vectors = np.load(DATA / f"{name.split('.')[0]}.npz")
    inputs = model_inputs(vectors)
    with torch.no_grad():
        logits = model(**inputs)
        per_modality = model(**inputs, per_modality=True)
    assert_close(logits, vectors["logits"], f"{name} logits")
    # Training returns each modality's logits (the official loss averages their losses).
    for m in inputs:
        assert_close(per_modality[m], vectors[f"logits_{KEY[m]}"], f"{name} {m} logits")


def test_finetuning_from_an_imported_checkpoint_copies_the_official_layout(tmp_path):
    """Joint layers into both streams, the joint norm into MBT's one norm, mid-fusion stream norms
    dropped, bottleneck and head fresh; the spectrogram patch embedding IS restored (the official
    init code skips it: a bug avmae does not copy)."""
    from avmae.config import build_config
    from avmae.models import build_classifier, init_classifier_from_avmae

    weights, cfg, kind, _ = load_weights(imported("audioset_pretrain.optimizer", tmp_path))
    ft = build_config(None, ["finetune.modality=av", "finetune.fusion_layer=3"], base=cfg)
    clf = build_classifier(ft, 5)
    report = init_classifier_from_avmae(clf, weights, cfg, kind)
    sd = clf.state_dict()
    for m in ("audio", "video"):
        assert torch.equal(sd[f"streams.{m}.blocks.3.attn.qkv.weight"], weights["encoder.joint.blocks.1.attn.qkv.weight"])
        assert torch.equal(sd[f"patch_embed.{m}.proj.weight"], weights[f"patch_embed.{m}.proj.weight"])
    assert torch.equal(sd["norm.weight"], weights["encoder.joint.norm.weight"])
    assert "bottleneck" in report.missing and "head.weight" in report.missing
    assert "encoder.streams.audio.norm.weight" in report.dropped and not report.unexpected


def test_cli_import_embed_and_visualize(tmp_path):
    from media import write_clip

    clip = write_clip(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48))
    run = tmp_path / "run"
    assert main(["import-scenic", str(DATA / "vggsound_pretrain.params.msgpack"), "--out", str(run),
                 "--set", "data.audio_seconds=1.0", "--set", "data.num_frames=4",
                 "--set", "data.short_side=48", "--set", "data.crop_size=48"]) == 0
    assert main(["embed", str(run), str(clip), "--out", str(tmp_path / "f.npz"), "--workers", "0"]) == 0
    features = np.load(tmp_path / "f.npz")
    assert any(k.startswith("audio") for k in features.files) and any(k.startswith("video") for k in features.files)
    assert main(["visualize", str(run), str(clip), "--out", str(tmp_path / "fig.png")]) == 0
    assert (tmp_path / "fig.png").stat().st_size > 1000


def test_cli_evaluate_an_imported_classifier(tmp_path):
    """The imported VGGSound-style classifier evaluates on a user's manifest with its label names."""
    from media import write_clip

    names = [f"sound {i}" for i in range(309)]
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
    for i in range(2):
        write_clip(tmp_path / f"c{i}.mp4", seconds=1.0, size=(64, 48))
    (tmp_path / "test.csv").write_text("path,label\nc0.mp4,sound 3\nc1.mp4,sound 7\n")
    run = tmp_path / "run"
    assert main(["import-scenic", str(DATA / "vggsound_mbt.params.msgpack"), "--out", str(run),
                 "--labels", str(tmp_path / "labels.txt"), "--set", "data.audio_seconds=1.0",
                 "--set", "data.num_frames=4", "--set", "data.short_side=48", "--set", "data.crop_size=48",
                 "--set", "data.num_workers=0"]) == 0
    assert main(["evaluate", str(run), "--data", str(tmp_path / "test.csv"), "--views", "1"]) == 0


def _bad(tmp_path, name: str, payload: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(payload)
    return p


@pytest.mark.parametrize("case", ["not_flax", "truncated", "not_avmae", "preset_contradicts",
                                  "labels_count", "existing_out"])
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    src = DATA / "audioset_pretrain.optimizer.msgpack"
    args = {"not_flax": [str(_bad(tmp_path, "x.msgpack", b"PK\x03\x04 this is a zip, not msgpack" * 10))],
            "truncated": [str(_bad(tmp_path, "t.msgpack", src.read_bytes()[: src.stat().st_size // 2]))],
            "not_avmae": [str(_bad(tmp_path, "o.msgpack", msgpack.packb(
                {"params": {"conv": {"kernel": msgpack.ExtType(1, msgpack.packb(((2,), "float32", b"\0" * 8)))}}})))],
            "preset_contradicts": [str(src), "--preset", "vggsound-large"],
            "labels_count": [str(DATA / "vggsound_mbt.params.msgpack"),
                             "--labels", str(_bad(tmp_path, "l.txt", b"a\nb\n"))],
            "existing_out": [str(src)]}[case]
    out = tmp_path / "run"
    if case == "existing_out":  # an earlier import (a run) is never written over silently
        assert main(["import-scenic", str(DATA / "vggsound_video.params.msgpack"), "--out", str(out)]) == 0
        earlier = load_weights(out)[0]
        capsys.readouterr()
    assert main(["import-scenic", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    if case == "existing_out":
        assert "--overwrite" in err
        kept = load_weights(out)[0]
        assert kept.keys() == earlier.keys() and all(torch.equal(kept[k], earlier[k]) for k in kept)
        assert main(["import-scenic", *args, "--out", str(out), "--overwrite"]) == 0
        assert load_weights(out)[1].model.encoder == "mid"


def test_pretraining_continues_from_an_imported_checkpoint(tiny_synth, tmp_path):
    """`avmae pretrain --init RUN`: the imported weights are where training starts (at lr 0 one
    step leaves them unchanged), with the imported config; --preset is refused beside --init."""
    run = tmp_path / "imported"
    assert main(["import-scenic", str(DATA / "vggsound_pretrain.params.msgpack"), "--out", str(run)]) == 0
    out = tmp_path / "continued"
    args = ["pretrain", "--init", str(run), "--data", str(tiny_synth / "train.csv"), "--out", str(out),
            "--set", "train.steps=1", "--set", "train.base_lr=0", "--set", "train.batch_size=2",
            "--set", "data.num_workers=0", "--set", "train.figure_clips=0", "--set", "data.audio_seconds=1.0",
            "--set", "data.num_frames=4", "--set", "data.frame_stride=1", "--set", "data.short_side=48",
            "--set", "data.crop_size=48"]
    assert main(args) == 0
    before, _, _, _ = load_weights(run)
    after, cfg, _, _ = load_weights(out)
    assert (cfg.model.encoder, cfg.model.gelu) == ("separate", "tanh")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert main(args[:1] + ["--preset", "tiny"] + args[1:]) == 2


def test_python_api_load_and_load_clip(tmp_path):
    """The README's library example: load the imported official model, embed one video."""
    from media import write_clip

    import avmae

    clip = write_clip(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48))
    run = tmp_path / "run"
    assert main(["import-scenic", str(DATA / "audioset_pretrain.optimizer.msgpack"), "--out", str(run),
                 "--set", "data.audio_seconds=1.0", "--set", "data.num_frames=4",
                 "--set", "data.short_side=48", "--set", "data.crop_size=48"]) == 0
    model = avmae.load(run)
    assert not model.training and model.config.model.encoder == "mid"
    x = avmae.load_clip(clip, model.config)
    assert x["audio"].shape == (1, 1, 100, 128) and x["video"].shape == (1, 3, 4, 48, 48)
    with torch.no_grad():
        tokens = model.forward_features(**x)
    assert tokens["audio"].shape == (1, 6 * 8, 16) and tokens["video"].shape == (1, 2 * 3 * 3, 16)
    classifier = avmae.load(imported("vggsound_video.params", tmp_path))
    with torch.no_grad():
        assert classifier(video=x["video"]).shape == (1, 309)
