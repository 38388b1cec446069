"""Regenerate tests/data/unimodal/: tiny random VideoMAE, ViTMAE and AudioMAE models run by their
own code, with their weights, an input and the encoder's output (tests/test_init_from.py).

Runs only in a throwaway virtual environment, never avmae's (transformers and timm are not
dependencies of avmae):

    python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch transformers safetensors timm torchvision
    git clone https://github.com/facebookresearch/AudioMAE /tmp/AudioMAE   # its model code, run as is
    /tmp/hfvenv/bin/python tools/unimodal_vectors.py --audiomae /tmp/AudioMAE

Each file holds the state dict as the source writes it (`state.*`), the input (`input`, in the
source's own layout) and the output (`output`: every token after the final norm, [CLS] first where
the model has one); the ViTMAE files also a spectrogram and the output for the grey image that the
RGB-averaged kernel sees in it. transformers >= 5 writes VideoMAE's q/v biases
as query.bias / value.bias and ViTMAE's blocks as layers.N.*; the checkpoints on the Hugging Face
hub use the older names (q_bias / v_bias, encoder.layer.N.attention.attention.query, ...). The
older layout is written too and checked here to load through transformers' own conversion to the
same outputs, so the test's older-layout files are transformers' own, not our reading of them.

AudioMAE's repository code needs three shims to import on current torch / numpy / timm, none of
which touches what the encoder computes: `np.float` (removed from numpy) is set to float;
`torch._six` (removed from torch; util/misc.py imports `inf` from it) is stubbed; timm's Block no
longer takes `qk_scale` (AudioMAE passes None, the default scale), so the argument is dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "unimodal"


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random (biases and norms too, so a wrong mapping cannot hide behind zeros
    and ones); the sin-cos tables (buffers or frozen parameters named *pos*) are kept."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "position" in name or "pos_embed" in name:
                continue
            base = 1.0 if name.endswith("weight") and p.ndim == 1 else 0.0
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))


def save(name: str, state: dict, inputs: torch.Tensor, output: torch.Tensor, meta: dict,
         extra: dict | None = None) -> None:
    tensors = {f"state.{k}": v.detach().contiguous() for k, v in state.items()}
    tensors.update({k: v.detach().contiguous() for k, v in (extra or {}).items()})
    tensors["input"], tensors["output"] = inputs.contiguous(), output.detach().contiguous()
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT / f"{name}.safetensors"),
              metadata={k: json.dumps(v) for k, v in meta.items()})
    print(f"wrote {name}: {len(state)} tensors, input {tuple(inputs.shape)}, output {tuple(output.shape)}")


def legacy_videomae(state: dict) -> dict:
    """transformers >= 5 VideoMAE keys -> the hub's (q_bias / v_bias)."""
    return {k.replace("attention.attention.query.bias", "attention.attention.q_bias")
             .replace("attention.attention.value.bias", "attention.attention.v_bias"): v
            for k, v in state.items()}


def legacy_vitmae(state: dict) -> dict:
    """transformers >= 5 ViTMAE keys -> the hub's (encoder.layer.N.attention.attention.query, ...)."""
    out = {}
    for k, v in state.items():
        if ".layers." in f".{k}":
            head, rest = k.split("layers.", 1)
            i, name = rest.split(".", 1)
            name = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
                    "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense",
                    "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}.get(name.rsplit(".", 1)[0], name.rsplit(".", 1)[0]) \
                + "." + name.rsplit(".", 1)[1]
            k = f"{head}encoder.layer.{i}.{name}"
        out[k] = v
    return out


def check_legacy_loads(cls, config, legacy: dict, run, expected: torch.Tensor) -> None:
    """The older layout, loaded by transformers' from_pretrained, gives the same output."""
    with tempfile.TemporaryDirectory() as d:
        config.save_pretrained(d)
        save_file({k: v.contiguous() for k, v in legacy.items()}, f"{d}/model.safetensors",
                  metadata={"format": "pt"})
        model = cls.from_pretrained(d).eval()
    with torch.no_grad():
        got = run(model)
    assert torch.allclose(got, expected, atol=1e-6), f"{cls.__name__}: the older layout does not load the same"


def videomae() -> None:
    from transformers import VideoMAEConfig, VideoMAEForPreTraining
    config = VideoMAEConfig(image_size=32, patch_size=16, num_channels=3, num_frames=4, tubelet_size=2,
                            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                            decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                            decoder_intermediate_size=32, use_mean_pooling=False, qkv_bias=True)
    model = VideoMAEForPreTraining(config).eval()
    randomise(model, 0)
    video = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # (B, T, C, H, W)

    def run(m):
        return m.videomae(video).last_hidden_state   # no mask: every token, after the final norm

    with torch.no_grad():
        out = run(model)
    state = model.state_dict()
    check_legacy_loads(VideoMAEForPreTraining, config, legacy_videomae(state), run, out)
    meta = {"config": config.to_dict(), "input_layout": "B T C H W (transformers)"}
    save("videomae_hf", state, video, out, meta)
    save("videomae_hf_legacy", legacy_videomae(state), video, out, meta)


def vitmae() -> None:
    from transformers import ViTMAEConfig, ViTMAEForPreTraining
    config = ViTMAEConfig(image_size=64, patch_size=16, num_channels=3, hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=256, decoder_hidden_size=32,
                          decoder_num_hidden_layers=1, decoder_num_attention_heads=4,
                          decoder_intermediate_size=64, mask_ratio=0.0)
    model = ViTMAEForPreTraining(config).eval()
    emb = model.vit.embeddings  # transformers 5 may leave the table at zero when built from a config:
    emb.patch_embeddings.projection._is_hf_initialized = False  # its own initialiser writes MAE's table
    emb.initialize_weights()
    assert emb.position_embeddings[0, 1:].abs().max() > 0.5, "the sin-cos table was not written"
    randomise(model, 2)
    image = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    noise = torch.arange(16, dtype=torch.float32).expand(2, 16)  # keeps the tokens in their order

    def run(m):
        return m.vit(image, noise=noise).last_hidden_state  # [CLS] first, after the final norm

    spec = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(6))  # a spectrogram
    with torch.no_grad():
        out = run(model)
        # the grey image whose every channel is spec / 3: what the RGB-averaged kernel sees in spec
        grey = model.vit(spec.expand(-1, 3, -1, -1) / 3, noise=noise).last_hidden_state
    state = model.state_dict()
    check_legacy_loads(ViTMAEForPreTraining, config, legacy_vitmae(state), run, out)
    meta = {"config": config.to_dict(), "input_layout": "B C H W; spectrogram B 1 time mel"}
    extra = {"spectrogram": spec, "output_spectrogram": grey}
    save("vitmae_hf", state, image, out, meta, extra)
    save("vitmae_hf_legacy", legacy_vitmae(state), image, out, meta, extra)


def audiomae(repo: Path) -> None:
    import numpy as np
    np.float = float                                            # removed from numpy
    sys.modules.setdefault("torch._six", types.SimpleNamespace(inf=float("inf")))
    import timm.models.vision_transformer as vt
    block = vt.Block

    class Block(block):  # AudioMAE passes qk_scale=None (the default 1/sqrt(head_dim)); timm 1.x has no such argument
        def __init__(self, *args, qk_scale=None, **kwargs):
            assert qk_scale is None
            super().__init__(*args, **kwargs)

    vt.Block = Block
    sys.path.insert(0, str(repo))
    import models_mae
    from functools import partial
    model = models_mae.MaskedAutoencoderViT(
        img_size=(64, 32), patch_size=16, in_chans=1, embed_dim=64, depth=2, num_heads=4,
        decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4, mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), audio_exp=True).eval()
    randomise(model, 4)
    spec = torch.randn(2, 1, 64, 32, generator=torch.Generator().manual_seed(5))  # (B, 1, time, mel)
    with torch.no_grad():
        x, _, ids_restore, _ = model.forward_encoder(spec, mask_ratio=0.0)
        patches = torch.gather(x[:, 1:], 1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))  # unshuffled
        out = torch.cat([x[:, :1], patches], dim=1)
    save("audiomae_orig", model.state_dict(), spec, out,
         {"model": "AudioMAE models_mae.MaskedAutoencoderViT(img_size=(64, 32), patch 16, in_chans 1, "
                   "64 wide, 2 layers, 4 heads, audio_exp=True)", "input_layout": "B 1 time mel"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audiomae", type=Path, help="a checkout of facebookresearch/AudioMAE")
    args = parser.parse_args()
    torch.manual_seed(0)
    videomae()
    vitmae()
    if args.audiomae:
        audiomae(args.audiomae)


if __name__ == "__main__":
    main()
