"""Behaviour of the finetuning classifiers (AST, ViViT, MBT, the AV-MAE encoder; Sec. 4.1, Table 12)."""

import pytest
import torch

from avmae.config import ConfigError, build_config
from avmae.models import EncoderClassifier, StreamClassifier, build_classifier, param_groups_lrd

ENCODERS = ["early", "separate", "mid", "shared"]
MODALITIES = ["audio", "video", "av"]
AUDIO_TOKENS, VIDEO_TOKENS = 4 * 8, 2 * 2 * 2   # (64 frames x 128 bins)/16^2; (4x32x32)/(2x16x16)


def tiny_cfg(*overrides):
    # 4 layers 32 wide; MBT fuses from layer 2; mid-fusion pretraining encoder: 3 separate + 1 joint.
    return build_config("tiny", ["model.depth=4", "model.embed_dim=32", "model.num_heads=2",
                                 "model.fusion_layers=1", "finetune.fusion_layer=2", *overrides])


def inputs(seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 64, 128, generator=g), torch.randn(batch, 3, 4, 32, 32, generator=g)


def randomise_heads(model):
    """The heads start at zero (ViViT / MBT); give them values so that gradients reach the trunk."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for head in model.heads():
            head.weight.copy_(torch.randn(head.weight.shape, generator=g))


ARCHS = [("mbt", None)] + [("pretraining_encoder", e) for e in ENCODERS]


@pytest.mark.parametrize("arch,encoder", ARCHS)
@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize("num_classes", [7, (5, 3)])
def test_forward_shapes_and_every_parameter_gets_a_gradient(arch, encoder, modality, num_classes):
    # (no stochastic depth here: a dropped branch gets no gradient)
    over = [f"finetune.architecture={arch}", f"finetune.modality={modality}", "finetune.drop_path=0"]
    if encoder:
        over.append(f"model.encoder={encoder}")
    model = build_classifier(tiny_cfg(*over), num_classes)
    randomise_heads(model)
    a, v = inputs()
    feats = model.forward_features(a, v)
    expected = {"audio": AUDIO_TOKENS, "video": VIDEO_TOKENS}
    assert {m: x.shape for m, x in feats.items()} == {
        m: (2, expected[m], 32) for m in {"audio": ["audio"], "video": ["video"], "av": ["audio", "video"]}[modality]}
    out = model(a, v)
    if isinstance(num_classes, int):
        assert out.shape == (2, 7)
        loss = out.sum()
    else:
        assert isinstance(out, tuple) and [o.shape for o in out] == [(2, 5), (2, 3)]
        loss = out[0].sum() + out[1].sum()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_mbt_unimodal_is_a_plain_vit_and_av_has_a_bottleneck():
    audio = build_classifier(tiny_cfg("finetune.modality=audio"), 3)
    assert isinstance(audio, StreamClassifier) and not hasattr(audio, "bottleneck")
    assert set(audio.patch_embed) == {"audio"} and set(audio.streams) == {"audio"}
    av = build_classifier(tiny_cfg("finetune.modality=av", "finetune.bottlenecks=3"), 3)
    assert av.bottleneck.shape == (1, 3, 32)
    assert 0.005 < av.bottleneck.std().item() < 0.05  # normal(0.02) init (MBT release)
    # 32 frames (Tables 16-18) work: the position embeddings are computed for the actual grid.
    video = build_classifier(tiny_cfg("finetune.modality=video"), 3)
    assert video.forward_features(video=torch.randn(1, 3, 32, 32, 32))["video"].shape == (1, 64, 32)


def test_heads_start_at_zero_and_logits_are_the_mean_over_modalities_of_one_shared_head():
    model = build_classifier(tiny_cfg(), 4).eval()
    a, v = inputs()
    assert torch.equal(model(a, v), torch.zeros(2, 4))
    randomise_heads(model)
    feats = model.forward_features(a, v)
    by_hand = (model.head(feats["audio"].mean(1)) + model.head(feats["video"].mean(1))) / 2
    torch.testing.assert_close(model(a, v), by_hand)


def capture(blocks):
    """Record the output of each block in `blocks` on the next forward pass."""
    seen, handles = {}, []
    for i, blk in enumerate(blocks):
        handles.append(blk.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, (inp[0], out))))
    return seen, handles


def test_mbt_bottleneck_is_the_mean_of_the_streams_updated_bottlenecks():
    model = build_classifier(tiny_cfg(), 4).eval()  # depth 4, fusion from layer 2, 4 bottlenecks
    n = model.finetune_cfg.bottlenecks
    a, v = inputs()
    seen_a, ha = capture(model.streams["audio"].blocks)
    seen_v, hv = capture(model.streams["video"].blocks)
    model.forward_features(a, v)
    for h in ha + hv:
        h.remove()
    # Layer 2 (the first fusion layer) gets the learned bottleneck tiled over the batch, after each
    # stream's tokens: [x_m ; b].
    for seen, tokens in ((seen_a, AUDIO_TOKENS), (seen_v, VIDEO_TOKENS)):
        inp, _ = seen[2]
        assert inp.shape == (2, tokens + n, 32)
        torch.testing.assert_close(inp[:, tokens:], model.bottleneck.expand(2, -1, -1))
    # Layer 3 gets the mean of the two streams' updated bottlenecks from layer 2.
    mean = (seen_a[2][1][:, AUDIO_TOKENS:] + seen_v[2][1][:, VIDEO_TOKENS:]) / 2
    torch.testing.assert_close(seen_a[3][0][:, AUDIO_TOKENS:], mean)
    torch.testing.assert_close(seen_v[3][0][:, VIDEO_TOKENS:], mean)
    # ... and its stream tokens are that stream's own layer-2 outputs.
    torch.testing.assert_close(seen_a[3][0][:, :AUDIO_TOKENS], seen_a[2][1][:, :AUDIO_TOKENS])
    # forward_fusion_layer recomputed by hand on fresh tensors
    x = {"audio": torch.randn(2, 5, 32), "video": torch.randn(2, 3, 32)}
    b = torch.randn(2, n, 32)
    out, new_b = model.forward_fusion_layer(3, x, b)
    ya = model.streams["audio"].blocks[3](torch.cat([x["audio"], b], 1))
    yv = model.streams["video"].blocks[3](torch.cat([x["video"], b], 1))
    torch.testing.assert_close(out["audio"], ya[:, :5])
    torch.testing.assert_close(out["video"], yv[:, :3])
    torch.testing.assert_close(new_b, (ya[:, 5:] + yv[:, 3:]) / 2)


def test_layers_before_fusion_layer_do_not_mix_modalities_and_later_ones_do():
    model = build_classifier(tiny_cfg(), 4).eval()
    a, v = inputs()
    runs = []
    for video in (v, v + torch.randn_like(v)):
        seen, handles = capture(model.streams["audio"].blocks)
        model.forward_features(a, video)
        for h in handles:
            h.remove()
        runs.append({i: out[:, :AUDIO_TOKENS] for i, (_, out) in seen.items()})
    # Unimodal layers 0, 1: audio tokens untouched by the video. Layer 2 (the first fusion layer)
    # still sees only the learned bottleneck; the mean it writes carries the video into layer 3.
    for i in range(3):
        assert torch.equal(runs[0][i], runs[1][i])
    assert not torch.allclose(runs[0][3], runs[1][3])


def test_fusion_layer_equal_to_depth_is_late_fusion():
    model = build_classifier(tiny_cfg("finetune.fusion_layer=4"), 4).eval()
    assert not hasattr(model, "bottleneck")
    a, v = inputs()
    f1 = model.forward_features(a, v)
    f2 = model.forward_features(a, torch.randn_like(v))
    assert torch.equal(f1["audio"], f2["audio"]) and not torch.equal(f1["video"], f2["video"])


def test_bad_fusion_layer_and_missing_inputs():
    with pytest.raises(ConfigError, match="fusion_layer"):
        build_classifier(tiny_cfg("finetune.fusion_layer=5"), 4)
    model = build_classifier(tiny_cfg(), 4)
    a, v = inputs()
    with pytest.raises(ValueError, match="zeros"):
        model(audio=a)
    assert model(a, torch.zeros_like(v)).shape == (2, 4)    # a clip without video: zeros
    audio_only = build_classifier(tiny_cfg("finetune.modality=audio"), 4)
    assert audio_only(a, v).shape == (2, 4)                 # other modalities are ignored


@pytest.mark.parametrize("arch", ["mbt", "pretraining_encoder"])
def test_stochastic_depth_is_linear_in_depth(arch):
    model = build_classifier(tiny_cfg(f"finetune.architecture={arch}", "finetune.drop_path=0.3"), 4)
    rates = sorted({round(m.p, 6) for m in model.modules() if type(m).__name__ == "DropPath"})
    assert rates == [0.0, 0.1, 0.2, 0.3]


def test_layer_wise_lr_decay_groups_mbt():
    model = build_classifier(tiny_cfg(), 4)
    groups = param_groups_lrd(model, base_lr=1.0, weight_decay=0.05, layer_decay=0.5)
    names = [n for g in groups for n in g["names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # each exactly once
    assert all(len(g["names"]) == len(g["params"]) for g in groups)
    info = {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["names"]}
    L = 4
    assert info["head.weight"] == (1.0, 0.05) and info["head.bias"] == (1.0, 0.0)
    assert info["streams.audio.norm.weight"] == (1.0, 0.0)
    assert info["patch_embed.video.proj.weight"] == (0.5 ** (L + 1), 0.05)
    for i in range(L):
        assert info[f"streams.audio.blocks.{i}.attn.qkv.weight"] == (0.5 ** (L - i), 0.05)
        assert info[f"streams.video.blocks.{i}.norm1.weight"] == (0.5 ** (L - i), 0.0)
    # The bottleneck tokens take the top group: the head's full rate, no layer decay and no weight
    # decay (official optimizer_utils._get_layer_id), although they enter at block 2.
    assert info["bottleneck"] == (1.0, 0.0)


def test_layer_wise_lr_decay_groups_mid_fusion_encoder():
    model = build_classifier(tiny_cfg("finetune.architecture=pretraining_encoder", "model.encoder=mid",
                                      "model.fusion_layers=2"), 4)
    assert isinstance(model, EncoderClassifier)
    info = {n: g["layer_id"] for g in param_groups_lrd(model, 1.0, 0.0, 0.75) for n in g["names"]}
    assert info["encoder.streams.audio.blocks.1.mlp.fc1.weight"] == 2
    assert info["encoder.streams.audio.norm.weight"] == 2      # ends the 2 separate layers
    assert info["encoder.joint.blocks.0.attn.proj.weight"] == 3
    assert info["encoder.joint.blocks.1.attn.proj.weight"] == 4
    assert info["encoder.joint.norm.weight"] == 5 and info["head.weight"] == 5


@pytest.mark.parametrize("arch,encoder", [("mbt", None), ("pretraining_encoder", "mid")])
@pytest.mark.parametrize("num_classes", [7, (5, 3)])
def test_per_modality_logits_are_what_forward_averages(arch, encoder, num_classes):
    """MBT trains on each modality's logits (official mbt.py) and evaluates on their mean: the
    per-modality output differs between modalities and `forward` stays the mean."""
    over = [f"finetune.architecture={arch}", "finetune.modality=av"]
    model = build_classifier(tiny_cfg(*over, *([f"model.encoder={encoder}"] if encoder else [])),
                             num_classes).eval()
    randomise_heads(model)
    a, v = inputs()
    per = model(a, v, per_modality=True)
    assert set(per) == {"audio", "video"}
    mean = model(a, v)
    if isinstance(num_classes, int):
        assert per["audio"].shape == (2, 7) and not torch.allclose(per["audio"], per["video"])
        torch.testing.assert_close(mean, (per["audio"] + per["video"]) / 2)
    else:
        for i, c in enumerate(num_classes):
            assert per["audio"][i].shape == (2, c)
            torch.testing.assert_close(mean[i], (per["audio"][i] + per["video"][i]) / 2)
    single = build_classifier(tiny_cfg("finetune.modality=audio"), 4).eval()
    randomise_heads(single)
    torch.testing.assert_close(single(a, v, per_modality=True)["audio"], single(a, v))
