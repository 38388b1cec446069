"""`avmae init-from`: public unimodal MAEs into avmae's encoders, checked against their own code.

tests/data/unimodal/ holds tiny random models run by transformers (VideoMAE, ViTMAE) and by
AudioMAE's repository code (tools/unimodal_vectors.py, in a throwaway venv): their state dicts,
an input and the encoder's output. avmae's encoder on the converted weights and the same input
must give those outputs within 1e-4 of their largest magnitude. The original repositories' .pth
layouts are written here from the same weights under the names their model code uses
(MCG-NJU/VideoMAE modeling_pretrain.py / modeling_finetune.py; facebookresearch/mae models_mae.py).
"""

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from avmae.checkpoint import PRETRAIN_KIND, load_weights
from avmae.cli import main
from avmae.interop import init_from
from avmae.interop.unimodal import IMAGENET_MEAN, IMAGENET_STD
from avmae.models import load_model
from avmae.run_dir import read_metrics

DATA = Path(__file__).parent / "data" / "unimodal"
PRESET = "tiny-4l-cpu"


def vectors(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the source's state dict, the other tensors: input, output, ...) of one vectors file."""
    with safe_open(str(DATA / f"{name}.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    return state, {k: v for k, v in tensors.items() if not k.startswith("state.")}


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    err = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    assert err <= 1e-4 * scale, f"{what}: max |diff| {err:.3g} vs 1e-4 x {scale:.3g}"


def save_pth(state: dict, path: Path, wrapper: str = "model") -> Path:
    """As the original repositories save: the weights under `model` (or `module`), their
    argparse arguments beside them."""
    torch.save({wrapper: state, "epoch": 3, "args": argparse.Namespace(model="tiny", lr=1e-3)}, path)
    return path


def save_hf(state: dict, folder: Path, config: dict | None = None) -> Path:
    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def hf_config(name: str) -> dict:
    with safe_open(str(DATA / f"{name}.safetensors"), framework="pt") as f:
        return json.loads(f.metadata()["config"])


def convert(source: str, checkpoint: Path, tmp_path: Path, *extra: str, pixel_norm: str = "none"):
    """init-from into a fresh run; returns the written model (eval mode) and its config."""
    run = tmp_path / f"run-{source}"
    init_from(source, checkpoint, run, preset=PRESET, overrides=list(extra), pixel_norm=pixel_norm,
              overwrite=True, log=lambda line: None)
    loaded = load_model(run)
    return loaded.model.eval(), loaded.cfg


# --- The original repositories' names, from transformers' (exactly as their model code names them)
HF_TO_TIMM = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.output.dense": "attn.proj",
              "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
              "attention.o_proj": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def videomae_original(hf: dict, prefix: str) -> dict:
    """transformers' VideoMAEForPreTraining -> MCG-NJU/VideoMAE: `encoder.` (pretraining model) or
    no prefix (finetuning model); fused qkv without bias, q_bias / v_bias."""
    out = {f"{prefix}patch_embed.proj.{t}": hf[f"videomae.embeddings.patch_embeddings.projection.{t}"]
           for t in ("weight", "bias")}
    for i in range(2):
        a = f"videomae.encoder.layer.{i}.attention.attention"
        b = f"{prefix}blocks.{i}"
        out[f"{b}.attn.qkv.weight"] = torch.cat([hf[f"{a}.{n}.weight"] for n in ("query", "key", "value")])
        out[f"{b}.attn.q_bias"], out[f"{b}.attn.v_bias"] = hf[f"{a}.query.bias"], hf[f"{a}.value.bias"]
        for theirs, ours in HF_TO_TIMM.items():
            for t in ("weight", "bias"):
                key = f"videomae.encoder.layer.{i}.{theirs}.{t}"
                if key in hf:
                    out[f"{b}.{ours}.{t}"] = hf[key]
    out[f"{prefix}norm.weight"], out[f"{prefix}norm.bias"] = hf["videomae.layernorm.weight"], hf["videomae.layernorm.bias"]
    if prefix:  # the pretraining model's decoder side (not loaded)
        out["encoder_to_decoder.weight"] = torch.zeros(16, 64)
        out["mask_token"] = hf["mask_token"]
    return out


def mae_original(hf: dict) -> dict:
    """transformers' ViTMAEForPreTraining (>= 5 names) -> facebookresearch/mae models_mae.py."""
    out = {"cls_token": hf["vit.embeddings.cls_token"], "pos_embed": hf["vit.embeddings.position_embeddings"],
           "patch_embed.proj.weight": hf["vit.embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": hf["vit.embeddings.patch_embeddings.projection.bias"],
           "norm.weight": hf["vit.layernorm.weight"], "norm.bias": hf["vit.layernorm.bias"],
           "decoder_embed.weight": hf["decoder.decoder_embed.weight"], "mask_token": hf["decoder.mask_token"]}
    for i in range(2):
        a, b = f"vit.layers.{i}", f"blocks.{i}"
        for t in ("weight", "bias"):
            out[f"{b}.attn.qkv.{t}"] = torch.cat([hf[f"{a}.attention.{n}.{t}"] for n in ("q_proj", "k_proj", "v_proj")])
            for theirs, ours in HF_TO_TIMM.items():
                if f"{a}.{theirs}.{t}" in hf:
                    out[f"{b}.{ours}.{t}"] = hf[f"{a}.{theirs}.{t}"]
    return out


# --- VideoMAE -> the video encoder ---------------------------------------------------------------
def videomae_checkpoint(layout: str, tmp_path: Path) -> tuple[Path, list[str]]:
    """(checkpoint, --set) of one layout of the same VideoMAE weights."""
    hf, _ = vectors("videomae_hf")
    if layout in ("transformers", "transformers-hub"):
        name = "videomae_hf" if layout == "transformers" else "videomae_hf_legacy"
        return save_hf(vectors(name)[0], tmp_path / layout, hf_config(name)), []
    heads = ["model.num_heads=4", "model.layer_norm_eps=1e-12"]  # a .pth says neither (HF's eps here)
    if layout == "original-pretrain":
        return save_pth(videomae_original(hf, "encoder."), tmp_path / "videomae.pth"), heads
    return save_pth(videomae_original(hf, ""), tmp_path / "videomae_ft.pth", "module"), heads


@pytest.mark.parametrize("layout", ["transformers", "transformers-hub", "original-pretrain", "original-finetune"])
def test_videomae_video_encoder_equals_transformers(layout, tmp_path):
    checkpoint, extra = videomae_checkpoint(layout, tmp_path)
    model, cfg = convert("videomae", checkpoint, tmp_path, *extra)
    _, t = vectors("videomae_hf")
    video = t["input"].permute(0, 2, 1, 3, 4)  # transformers' (B, T, C, H, W) -> avmae's (B, C, T, H, W)
    with torch.no_grad():
        ours = model.forward_features(video=video)["video"]
    assert_close(ours, t["output"], f"VideoMAE ({layout})")
    assert (cfg.model.pos_embed, cfg.model.sincos_layout, cfg.model.cls_token) == ("sincos_1d", "interleaved", False)
    assert (cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads, cfg.model.mlp_ratio) == (64, 2, 4, 2.0)


def test_videomae_pixel_normalisation_is_folded_into_the_kernel(tmp_path):
    """With --pixel-norm imagenet, avmae's RGB in [-1, 1] gives the source's output on the same
    frames normalised as VideoMAE normalises them."""
    checkpoint, extra = videomae_checkpoint("transformers", tmp_path)
    model, _ = convert("videomae", checkpoint, tmp_path, *extra, pixel_norm="imagenet")
    _, t = vectors("videomae_hf")
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    normalised = t["input"].permute(0, 2, 1, 3, 4)
    rgb = 2 * (normalised * std + mean) - 1  # the frames in avmae's [-1, 1]
    with torch.no_grad():
        ours = model.forward_features(video=rgb)["video"]
    assert_close(ours, t["output"], "VideoMAE, folded pixel normalisation")


# --- ImageNet MAE -> both encoders ---------------------------------------------------------------
def mae_checkpoint(layout: str, tmp_path: Path) -> Path:
    if layout == "original":
        return save_pth(mae_original(vectors("vitmae_hf")[0]), tmp_path / "mae.pth")
    name = "vitmae_hf" if layout == "transformers" else "vitmae_hf_legacy"
    return save_hf(vectors(name)[0], tmp_path / layout, hf_config(name))


@pytest.mark.parametrize("layout", ["transformers", "transformers-hub", "original"])
def test_mae_encoders_equal_transformers(layout, tmp_path):
    """Video: a clip of one tubelet whose frames repeat the image gives the image's tokens (the
    kernel repeated over time and divided by 2). Audio: a spectrogram gives the tokens of the grey
    image whose channels are the spectrogram / 3 (the kernel averaged over RGB), with MAE's 2-D
    table on (time, frequency) and the [CLS] token in front."""
    extra = ["model.num_heads=4", "model.layer_norm_eps=1e-12"] if layout == "original" else []
    model, cfg = convert("mae", mae_checkpoint(layout, tmp_path), tmp_path, *extra)
    assert (cfg.model.pos_embed, cfg.model.cls_token, cfg.model.encoder) == ("sincos_2d", True, "separate")
    _, t = vectors("vitmae_hf")
    video = t["input"][:, :, None].expand(-1, -1, cfg.model.tubelet_frames, -1, -1)
    with torch.no_grad():
        out = model.forward_features(audio=t["spectrogram"], video=video)
    assert_close(out["video"], t["output"][:, 1:], f"MAE -> video ({layout})")
    assert_close(out["audio"], t["output_spectrogram"][:, 1:], f"MAE -> audio ({layout})")


def test_mae_pixel_normalisation_folded_for_video_only(tmp_path):
    model, _ = convert("mae", mae_checkpoint("transformers", tmp_path), tmp_path, pixel_norm="imagenet")
    _, t = vectors("vitmae_hf")
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = 2 * (t["input"] * std + mean) - 1
    with torch.no_grad():
        out = model.forward_features(audio=t["spectrogram"], video=rgb[:, :, None].expand(-1, -1, 2, -1, -1))
    assert_close(out["video"], t["output"][:, 1:], "MAE -> video, folded pixel normalisation")
    assert_close(out["audio"], t["output_spectrogram"][:, 1:], "MAE -> audio (never folded)")


# --- AudioMAE -> the audio encoder ---------------------------------------------------------------
def test_audiomae_audio_encoder_equals_its_repository_code(tmp_path):
    """AudioMAE's own models_mae.py (run by tools/unimodal_vectors.py): its table reads the
    spectrogram grid as (frequency, time), which avmae reproduces as sincos_2d_audiomae."""
    state, t = vectors("audiomae_orig")
    model, cfg = convert("audiomae", save_pth(state, tmp_path / "audiomae.pth"), tmp_path, "model.num_heads=4")
    assert (cfg.model.pos_embed, cfg.model.cls_token) == ("sincos_2d_audiomae", True)
    with torch.no_grad():
        ours = model.forward_features(audio=t["input"])["audio"]
    assert_close(ours, t["output"][:, 1:], "AudioMAE")


# --- The run folder, the report, the command --------------------------------------------------------
def test_run_folder_lists_what_was_not_loaded_and_initialises_the_rest_from_scratch(tmp_path):
    checkpoint, extra = videomae_checkpoint("original-pretrain", tmp_path)
    run = tmp_path / "run"
    lines = []
    init_from("videomae", checkpoint, run, preset=PRESET, overrides=extra, log=lines.append)
    weights, cfg, kind, _ = load_weights(run)
    assert kind == PRETRAIN_KIND and cfg.model.modalities == "audio_video"
    record = [r for r in read_metrics(run) if r.get("event") == "init_from"][0]
    assert any(k.startswith("encoder.streams.audio.") for k in record["not_loaded"])
    assert any(k.startswith("decoder.") for k in record["not_loaded"])
    assert "patch_embed.audio.proj.weight" in record["not_loaded"]
    assert set(record["unused_checkpoint_keys"]) == {"encoder_to_decoder.weight", "mask_token"}
    assert not any(k.startswith("encoder.streams.video.") for k in record["not_loaded"])
    assert any("not loaded" in line and "encoder.streams.audio" in line for line in lines)
    # the rest is exactly a from-scratch model of the same config and seed
    from avmae.models import AVMAE
    torch.manual_seed(cfg.train.seed)
    scratch = AVMAE(cfg.model).state_dict()
    for k in record["not_loaded"]:
        assert torch.equal(weights[k], scratch[k]), k


def test_cli_init_from_then_pretrain_init(tiny_synth, tmp_path, capsys):
    checkpoint, extra = videomae_checkpoint("transformers", tmp_path)
    run = tmp_path / "init"
    assert main(["init-from", "videomae", str(checkpoint), "--preset", PRESET, "--out", str(run)]) == 0
    assert "avmae pretrain --init" in capsys.readouterr().out
    out = tmp_path / "continued"
    args = ["pretrain", "--init", str(run), "--data", str(tiny_synth / "train.csv"), "--out", str(out),
            "--set", "train.steps=1", "--set", "train.base_lr=0", "--set", "train.batch_size=2",
            "--set", "data.num_workers=0", "--set", "train.figure_clips=0", "--set", "data.audio_seconds=0.64",
            "--set", "data.num_frames=4", "--set", "data.frame_stride=1", "--set", "data.short_side=32",
            "--set", "data.crop_size=32"]
    assert main(args) == 0
    before, after = load_weights(run)[0], load_weights(out)[0]
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("case", ["wrong_source", "missing", "mid_fusion", "not_a_checkpoint"])
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    videomae = str(videomae_checkpoint("transformers", tmp_path)[0])
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all" * 10)
    args = {"wrong_source": ["mae", videomae], "missing": ["videomae", str(tmp_path / "nope.pth")],
            "mid_fusion": ["videomae", videomae, "--set", "model.encoder=mid"],
            "not_a_checkpoint": ["audiomae", str(junk)]}[case]
    assert main(["init-from", *args, "--preset", PRESET, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
