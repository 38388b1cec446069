"""Behaviour of the AV-MAE pretraining model (paper Sec. 3) at tiny sizes."""

import itertools

import pytest
import torch

from avmae.config import ConfigError, build_config
from avmae.models import AVMAE, patchify_audio, patchify_video, unpatchify_audio, unpatchify_video

ENCODERS = ["early", "separate", "mid", "shared"]
DECODERS = ["shared", "separate", "joint"]
OBJECTIVES = ["joint", "inpaint_video_from_audio", "inpaint_audio_from_video", "inpaint_both",
              "joint_and_inpaint"]
CROSS_MODAL = {"early", "mid"}


def tiny_cfg(*overrides):
    # 4 layers (mid: 3 separate + 1 joint), video 4x48x48 -> 2x3x3 = 18 tubelets, audio 64x32 -> 4x2 = 8
    # patches. With video 0.8 / audio 0.5 masking: 3 and 4 visible, so inpainting has tokens to fill.
    return build_config("tiny", ["model.depth=4", "model.decoder_depth=1", "model.fusion_layers=1",
                                 "model.embed_dim=32", "model.num_heads=2", "model.decoder_embed_dim=16",
                                 "model.decoder_num_heads=2", "model.decoder_mlp_dim=32",
                                 "model.mask_ratio_video=0.8", "data.mel_bins=32", *overrides])


def inputs(seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 64, 32, generator=g), torch.randn(batch, 3, 4, 48, 48, generator=g)


COMBOS = [c for c in itertools.product(ENCODERS, DECODERS, OBJECTIVES)
          if c[2] == "joint" or c[0] in CROSS_MODAL]


@pytest.mark.parametrize("encoder,decoder,objective", COMBOS)
def test_forward_backward_and_every_parameter_gets_a_gradient(encoder, decoder, objective):
    cfg = tiny_cfg(f"model.encoder={encoder}", f"model.decoder={decoder}", f"model.objective={objective}")
    model = AVMAE(cfg.model)
    a, v = inputs()
    out = model(a, v, torch.Generator().manual_seed(0))
    decoded = {"inpaint_video_from_audio": ["video"], "inpaint_audio_from_video": ["audio"]}.get(
        objective, ["audio", "video"])
    shapes = {"audio": (2, 8, 256), "video": (2, 18, 1536)}
    assert {k[5:] for k in out if k.startswith("pred_")} == set(decoded)
    assert all(out[f"pred_{m}"].shape == shapes[m] for m in decoded)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


@pytest.mark.parametrize("encoder,decoder,objective", COMBOS)
def test_loss_sees_only_the_tokens_it_should(encoder, decoder, objective):
    """Perturbing a target patch outside the loss mask leaves the loss unchanged; inside, it changes.

    The model is evaluated with the perturbation applied to the *target only* (the input stays), so
    that only the loss term is probed.
    """
    cfg = tiny_cfg(f"model.encoder={encoder}", f"model.decoder={decoder}", f"model.objective={objective}")
    model = AVMAE(cfg.model).eval()
    a, v = inputs()
    out = model(a, v, torch.Generator().manual_seed(1))
    from avmae.models import masked_mse
    for m in ("audio", "video"):
        if f"loss_mask_{m}" not in out:
            continue
        lm, pred, target = out[f"loss_mask_{m}"], out[f"pred_{m}"], out[f"target_{m}"]
        base = masked_mse(pred, target, lm)
        assert torch.allclose(base, out[f"loss_{m}"])
        outside, inside = target.clone(), target.clone()
        outside[lm == 0] += 10.0
        inside[lm == 1] += 10.0
        assert torch.allclose(masked_mse(pred, outside, lm), base)
        assert not torch.allclose(masked_mse(pred, inside, lm), base)


def test_joint_loss_mask_equals_encoder_mask_and_is_exact():
    cfg = tiny_cfg("model.mask_ratio_video=0.9", "model.mask_ratio_audio=0.5")
    model = AVMAE(cfg.model)
    out = model(*inputs(), generator=torch.Generator().manual_seed(0))
    # 18 video tokens -> 18 - floor(0.9 * 18) = 2 visible (the official rule; MAE's would keep 1);
    # 8 audio -> 4 visible
    assert (out["mask_video"].sum(1) == 16).all() and (out["mask_audio"].sum(1) == 4).all()
    assert torch.equal(out["loss_mask_video"], out["mask_video"])
    # masks differ between the samples of a batch (per-sample masking)
    assert not torch.equal(out["mask_audio"][0], out["mask_audio"][1])


def test_loss_changes_with_masked_input_but_not_visible_target_pixels():
    """End to end through the input: changing the pixels of a masked patch changes the loss only via
    the target; a visible patch's pixels change the encoder input, so its loss changes too."""
    cfg = tiny_cfg()
    model = AVMAE(cfg.model).eval()
    a, v = inputs()
    out = model(a, v, torch.Generator().manual_seed(3))
    mask = out["mask_audio"][0]
    masked_idx = int(mask.argmax())
    patches = patchify_audio(a)
    patches[0, masked_idx] += 5.0
    a2 = unpatchify_audio(patches, out["grid_audio"])
    out2 = model(a2, v, torch.Generator().manual_seed(3))
    assert not torch.allclose(out2["loss_audio"], out["loss_audio"])
    assert torch.allclose(out2["pred_audio"], out["pred_audio"])  # encoder never saw the masked patch


def test_patchify_round_trip():
    a, v = inputs()
    pa, pv = patchify_audio(a), patchify_video(v)
    assert pa.shape == (2, 8, 256) and pv.shape == (2, 18, 1536)
    assert torch.equal(unpatchify_audio(pa, (4, 2)), a)
    assert torch.equal(unpatchify_video(pv, (2, 3, 3)), v)
    # token order matches the convolutional tokeniser's: token i of patchify is the patch that
    # conv position i sees (checked with an identity-like convolution on one channel)
    conv = torch.nn.Conv2d(1, 256, 16, 16, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(256).reshape(256, 1, 16, 16))
    assert torch.allclose(conv(a).flatten(2).transpose(1, 2), pa, atol=1e-5)


def test_audio_frames_that_do_not_fill_a_patch_are_dropped():
    a = torch.randn(1, 1, 70, 32)
    assert patchify_audio(a).shape == (1, 8, 256)
    model = AVMAE(tiny_cfg("model.modalities=audio").model)
    assert model(audio=a)["pred_audio"].shape == (1, 8, 256)


def test_shared_encoder_weights_are_one_tensor():
    model = AVMAE(tiny_cfg("model.encoder=shared").model)
    a_params = model.encoder.stream_modules("audio")[0]
    v_params = model.encoder.stream_modules("video")[0]
    assert a_params is v_params
    names = [n for n, _ in model.named_parameters() if n.startswith("encoder.")]
    assert all(n.startswith("encoder.transformer.") for n in names)
    # changing one weight changes both modalities' encodings
    a, v = inputs()
    before = model.forward_features(a, v)
    with torch.no_grad():
        model.encoder.transformer.blocks[0].mlp.fc1.weight.add_(0.5)
    after = model.forward_features(a, v)
    assert not torch.allclose(before["audio"], after["audio"])
    assert not torch.allclose(before["video"], after["video"])


def test_separate_encoders_do_not_interact_and_early_fusion_does():
    a, v = inputs()
    v2 = v + 1.0
    sep = AVMAE(tiny_cfg("model.encoder=separate").model).eval()
    assert torch.allclose(sep.forward_features(a, v)["audio"], sep.forward_features(a, v2)["audio"])
    early = AVMAE(tiny_cfg("model.encoder=early").model).eval()
    assert not torch.allclose(early.forward_features(a, v)["audio"], early.forward_features(a, v2)["audio"])


@pytest.mark.parametrize("fusion", [1, 2, 3])
def test_mid_fusion_layer_counts(fusion):
    cfg = tiny_cfg("model.encoder=mid", f"model.fusion_layers={fusion}")
    model = AVMAE(cfg.model)
    assert len(model.encoder.streams["audio"].blocks) == 4 - fusion
    assert len(model.encoder.streams["video"].blocks) == 4 - fusion
    assert len(model.encoder.joint.blocks) == fusion
    # the separate part ends in its own LayerNorm (official release)
    assert isinstance(model.encoder.streams["audio"].norm, torch.nn.LayerNorm)
    a, v = inputs()
    feats = model.forward_features(a, v)
    assert not torch.allclose(feats["audio"], model.forward_features(a, v + 1)["audio"])


def test_inpainting_decodes_other_modality_then_mask_tokens():
    """z_v = [e_a || m_v ...]: the decoder's video sequence starts with the projected encoded audio."""
    cfg = tiny_cfg("model.encoder=early", "model.objective=inpaint_video_from_audio")
    model = AVMAE(cfg.model).eval()
    seen = {}
    model.decoder.register_forward_pre_hook(lambda mod, args: seen.update(seqs=args[0]))
    a, v = inputs()
    out = model(a, v, torch.Generator().manual_seed(0))
    z = seen["seqs"]["video"]
    assert z.shape == (2, 18, 16)
    n_vis_audio = 4  # 8 audio patches at ratio 0.5
    lm = out["loss_mask_video"]
    assert (lm[:, :n_vis_audio] == 0).all() and (lm[:, n_vis_audio:] == 1).all()
    # the tail is the video mask token plus position embeddings: identical across the batch
    assert torch.allclose(z[0, n_vis_audio:], z[1, n_vis_audio:])
    assert not torch.allclose(z[0, :n_vis_audio], z[1, :n_vis_audio])
    assert set(seen["seqs"]) == {"video"} and "pred_audio" not in out


@pytest.mark.parametrize("encoder", ["separate", "shared"])
@pytest.mark.parametrize("objective", OBJECTIVES[1:])
def test_inpainting_without_cross_modal_encoding_is_refused(encoder, objective):
    with pytest.raises(ConfigError, match="cross-modal"):
        tiny_cfg(f"model.encoder={encoder}", f"model.objective={objective}")


def test_inpainting_refused_for_unimodal_models():
    with pytest.raises(ConfigError, match="audio_video"):
        tiny_cfg("model.modalities=audio", "model.objective=inpaint_both")


def test_seeded_runs_repeat_and_seeds_differ():
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = AVMAE(cfg.model)
    a, v = inputs()
    o1 = model(a, v, torch.Generator().manual_seed(7))
    o2 = model(a, v, torch.Generator().manual_seed(7))
    o3 = model(a, v, torch.Generator().manual_seed(8))
    assert torch.equal(o1["loss"], o2["loss"]) and torch.equal(o1["mask_video"], o2["mask_video"])
    assert not torch.equal(o1["mask_video"], o3["mask_video"])
    torch.manual_seed(0)
    again = AVMAE(cfg.model)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))


@pytest.mark.parametrize("modalities,present", [("audio", {"audio"}), ("video", {"video"})])
def test_unimodal_mae(modalities, present):
    model = AVMAE(tiny_cfg(f"model.modalities={modalities}").model)
    a, v = inputs()
    out = model(audio=a if "audio" in present else None, video=v if "video" in present else None)
    assert {k[5:] for k in out if k.startswith("pred_")} == present
    assert not any(k.startswith(("patch_embed.video" if modalities == "audio" else "patch_embed.audio"))
                   for k, _ in model.named_parameters())
    out["loss"].backward()


def test_other_input_lengths_work():
    """5 s of audio and 32 frames: position embeddings follow the actual token grid."""
    model = AVMAE(tiny_cfg().model)
    out = model(torch.randn(1, 1, 500, 32), torch.randn(1, 3, 32, 48, 48))
    assert out["pred_audio"].shape[1] == 31 * 2 and out["pred_video"].shape[1] == 16 * 9


def test_norm_targets_are_normalised_per_patch():
    model = AVMAE(tiny_cfg("model.norm_targets=true").model)
    out = model(*inputs())
    t = out["target_video"]
    assert torch.allclose(t.mean(-1), torch.zeros(t.shape[:2]), atol=1e-4)


def test_joint_and_inpaint_is_the_weighted_sum():
    model = AVMAE(tiny_cfg("model.encoder=early", "model.objective=joint_and_inpaint",
                           "model.joint_weight=1.0", "model.inpaint_weight=0.25").model)
    out = model(*inputs(), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out["loss"], out["loss_joint"] + 0.25 * out["loss_inpaint"])
    assert torch.allclose(out["loss_joint"], 0.5 * out["loss_audio"] + 0.5 * out["loss_video"])


def test_forward_features_without_masking():
    model = AVMAE(tiny_cfg().model)
    a, v = inputs()
    feats = model.forward_features(audio=a)
    assert set(feats) == {"audio"} and feats["audio"].shape == (2, 8, 32)
    both = model.forward_features(a, v)
    assert both["video"].shape == (2, 18, 32)


def test_filled_modality_is_not_a_reconstruction_target():
    model = AVMAE(tiny_cfg().model)
    a, v = inputs()
    present = {"audio": torch.tensor([True, False]), "video": torch.tensor([True, True])}
    out = model(a, v, torch.Generator().manual_seed(0), present=present)
    a2 = a.clone()
    a2[1] = 0.0  # what the second clip's audio is does not matter to the loss ...
    out2 = model(a2, v, torch.Generator().manual_seed(0), present=present)
    from avmae.models import masked_mse
    only_first = masked_mse(out2["pred_audio"][:1], out2["target_audio"][:1], out2["mask_audio"][:1])
    assert torch.allclose(out2["loss_audio"], only_first)  # ... beyond its effect as encoder input
    assert torch.isfinite(out["loss"])


def test_sample_noise_masks_a_clip_the_same_in_any_batch():
    from avmae.models import sample_noise
    n8 = sample_noise([(0, 5, i) for i in range(8)], 18)
    n4 = sample_noise([(0, 5, i) for i in (4, 5, 6, 7)], 18)
    assert torch.equal(n8[4:], n4)
    assert not torch.equal(n8[0], n8[1])


def test_modality_loss_weights_weigh_their_own_modality():
    model = AVMAE(tiny_cfg("model.loss_weight_audio=3.0", "model.loss_weight_video=1.0").model)
    out = model(*inputs(), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(out["loss_audio"], out["loss_video"])
    torch.testing.assert_close(out["loss"], (3.0 * out["loss_audio"] + out["loss_video"]) / 4.0)


def test_tubelets_by_matmul_equal_the_conv3d():
    """The GPU form of the tubelet embedding (one matmul) computes the CPU form (Conv3d),
    leftover frames and pixels dropped alike."""
    from avmae.models.patch_embed import VideoPatchEmbed, tubelets_by_matmul
    torch.manual_seed(0)
    embed = VideoPatchEmbed(24)
    video = torch.randn(2, 3, 5, 35, 50)
    conv = embed(video)  # on the CPU: the Conv3d
    torch.testing.assert_close(tubelets_by_matmul(video, embed.proj.weight, embed.proj.bias,
                                                  embed.tubelet), conv, rtol=1e-5, atol=1e-5)
