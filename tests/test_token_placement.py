"""Which value every token and every head sees (paper Sec. 3, Fig. 1-3): pinned by value, not shape.

A bug that puts a token in the wrong place keeps every shape, every gradient and a finite, falling
loss; only the model gets worse. These tests therefore rebuild each sequence by hand from the
model's own parameters and its public pieces (patch embeddings, position tables, masking rule,
sub-transformers) and compare it with what the model really computes, captured with hooks:

- the encoder input: each visible token is its own patch's embedding plus its own position code;
- the joint layers (mid and early fusion): the concatenation of both modalities, split back so
  that each modality gets its own tokens' outputs;
- the decoder input, at every position, for joint reconstruction and each inpainting direction,
  with mask tokens made distinguishable (they start at zero, so a fresh model cannot tell them
  apart) and the position tables checked non-zero;
- the decoder outputs each prediction head reads;
- MBT: each stream pools its own tokens only, never the bottleneck tokens.
"""

import math

import pytest
import torch

from avmae.config import build_config
from avmae.models import build_classifier, num_visible, sincos_pos_embed
from avmae.models.avmae import AVMAE, OTHER

ENCODERS = ["early", "separate", "mid", "shared"]
DECODERS = ["shared", "separate", "joint"]
INPAINT_DIRECTIONS = {"inpaint_video_from_audio": [("video", "audio")],
                      "inpaint_audio_from_video": [("audio", "video")],
                      "inpaint_both": [("audio", "video"), ("video", "audio")],
                      "joint_and_inpaint": [("audio", "video"), ("video", "audio")]}


def tiny_cfg(*overrides):
    # Video 4x48x48 -> 2x3x3 = 18 tubelets at ratio 0.8, audio 64x32 -> 4x2 = 8 patches at 0.5: the
    # two modalities keep different numbers of tokens, so a split in the wrong place or order
    # cannot go unnoticed, and inpainting has positions to fill.
    return build_config("tiny", ["model.depth=3", "model.fusion_layers=1", "model.embed_dim=32",
                                 "model.num_heads=2", "model.decoder_embed_dim=16",
                                 "model.decoder_num_heads=2", "model.decoder_depth=1",
                                 "model.decoder_mlp_dim=32", "model.mask_ratio_video=0.9",
                                 "model.mask_ratio_audio=0.5", "data.mel_bins=32", *overrides])


def inputs(batch=2):
    g = torch.Generator().manual_seed(0)
    return {"audio": torch.randn(batch, 1, 64, 32, generator=g),
            "video": torch.randn(batch, 3, 4, 48, 48, generator=g)}


def build(*overrides) -> AVMAE:
    """A tiny model in eval mode whose mask tokens are non-zero and differ between modalities."""
    model = AVMAE(tiny_cfg(*overrides).model).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for i, token in enumerate(model.mask_token.values()):
            token.copy_(torch.randn(token.shape, generator=g) + 3.0 * (i + 1))
    return model


def position_table(model: AVMAE, grid, dim: int) -> torch.Tensor:
    """The fixed position table (N, dim) the model's config asks for, from the public function."""
    table = sincos_pos_embed(tuple(grid), dim, model.cfg.pos_embed == "sincos_factorised",
                             layout=model.cfg.sincos_layout)[0]
    assert table.abs().sum(dim=1).min() > 0  # every position's code is non-zero
    return table


def noise_for(model: AVMAE, x: dict, seed: int = 11) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.rand(v.shape[0], math.prod(model.patch_embed[m].grid(v)), generator=g)
            for m, v in x.items()}


class Recorder:
    """Inputs and outputs of modules during one forward pass (a list per module: several calls)."""

    def __init__(self, **modules):
        self.calls = {name: [] for name in modules}
        self.handles = [mod.register_forward_hook(
            lambda mod, args, out, name=name: self.calls[name].append((args[0], out)))
            for name, mod in modules.items()]

    def __enter__(self):
        return self.calls

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def kept_positions(model: AVMAE, out: dict, noise: dict, m: str) -> torch.Tensor:
    """(B, keep): the positions of the visible tokens in encoder order. The rule (MAE; kept by the
    official release): tokens sorted ascending by noise, the first `num_visible` kept."""
    ratio = {"audio": model.cfg.mask_ratio_audio, "video": model.cfg.mask_ratio_video}[m]
    keep = num_visible(noise[m].shape[1], ratio)
    ids = torch.argsort(noise[m], dim=1)[:, :keep]
    expected_mask = torch.ones_like(noise[m])
    expected_mask.scatter_(1, ids, 0.0)
    assert torch.equal(out[f"mask_{m}"], expected_mask)
    return ids


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, ids[:, :, None].expand(-1, -1, x.shape[-1]))


@pytest.mark.parametrize("modality_embed", [False, True])
def test_encoder_input_is_each_kept_patch_with_its_own_position_code(modality_embed):
    model = build("model.encoder=separate", f"model.modality_embed={str(modality_embed).lower()}")
    x = inputs()
    noise = noise_for(model, x)
    with torch.no_grad(), Recorder(encoder=model.encoder) as seen:
        out = model(**x, noise=noise)
    visible = seen["encoder"][0][0]
    assert list(visible) == model.modalities
    for m in model.modalities:
        grid = model.patch_embed[m].grid(x[m])
        with torch.no_grad():
            every = model.patch_embed[m](x[m]) + position_table(model, grid, model.cfg.embed_dim)
            if modality_embed:
                every = every + model.modality_embed[m]
        ids = kept_positions(model, out, noise, m)
        torch.testing.assert_close(visible[m], gather_tokens(every, ids))


def joint_by_hand(transformer, parts: dict) -> dict:
    """A joint transformer over [audio ; video], split back by each modality's token count."""
    n_a = parts["audio"].shape[1]
    y = transformer(torch.cat([parts["audio"], parts["video"]], dim=1))
    return {"audio": y[:, :n_a], "video": y[:, n_a:]}


def assert_is_a_concatenation(joint_input: torch.Tensor, parts: dict) -> None:
    """The joint layers see both modalities' tokens, concatenated along the token axis."""
    assert any(torch.equal(joint_input, torch.cat([parts[a], parts[b]], dim=1))
               for a, b in (("audio", "video"), ("video", "audio")))


def test_mid_fusion_concatenates_the_stream_outputs_and_splits_each_modality_back():
    model = build("model.encoder=mid")
    x = inputs()
    with torch.no_grad(), Recorder(encoder=model.encoder, joint=model.encoder.joint) as seen:
        model(**x, noise=noise_for(model, x))
        visible, encoded = seen["encoder"][0]
        streams = {m: model.encoder.streams[m](visible[m]) for m in model.modalities}
        by_hand = joint_by_hand(model.encoder.joint, streams)
    assert visible["audio"].shape[1] != visible["video"].shape[1]
    assert_is_a_concatenation(seen["joint"][0][0], streams)
    for m in model.modalities:
        torch.testing.assert_close(encoded[m], by_hand[m])


def test_early_fusion_concatenates_the_visible_tokens_and_splits_each_modality_back():
    model = build("model.encoder=early")
    x = inputs()
    with torch.no_grad(), Recorder(encoder=model.encoder, joint=model.encoder.transformer) as seen:
        model(**x, noise=noise_for(model, x))
        visible, encoded = seen["encoder"][0]
        by_hand = joint_by_hand(model.encoder.transformer, visible)
    assert_is_a_concatenation(seen["joint"][0][0], visible)
    for m in model.modalities:
        torch.testing.assert_close(encoded[m], by_hand[m])


def expected_joint_sequence(model: AVMAE, m: str, encoded: torch.Tensor, ids: torch.Tensor,
                            grid) -> torch.Tensor:
    """z_m = Unshuffle(e_m, m_m) + p_m, position by position (Eq. 1, Sec. 3.1)."""
    with torch.no_grad():
        projected = model.decoder_embed[m](encoded)                     # (B, keep, Dd)
    table = position_table(model, grid, model.cfg.decoder_embed_dim)    # (N, Dd)
    B, N = ids.shape[0], table.shape[0]
    z = model.mask_token[m].detach().expand(B, N, -1).clone()
    for b in range(B):
        for j, i in enumerate(ids[b].tolist()):
            z[b, i] = projected[b, j]                                   # kept token j sits at i
    return z + table


def expected_inpaint_sequence(model: AVMAE, target: str, encoded_other: torch.Tensor, grid):
    """z_A = [e_B || m_A, ..., m_A] + p_A (Fig. 3): the other modality's tokens, then A's mask token."""
    with torch.no_grad():
        projected = model.decoder_embed[OTHER[target]](encoded_other)   # (B, u_B, Dd)
    table = position_table(model, grid, model.cfg.decoder_embed_dim)    # (N_A, Dd)
    B, u = projected.shape[:2]
    tail = model.mask_token[target].detach().expand(B, table.shape[0] - u, -1)
    return torch.cat([projected, tail], dim=1) + table


@pytest.mark.parametrize("objective", ["joint", *INPAINT_DIRECTIONS])
def test_decoder_input_at_every_position(objective):
    encoder = "mid" if objective == "joint" else "early"
    model = build(f"model.encoder={encoder}", f"model.objective={objective}")
    if len(model.mask_token) == 2:
        assert not torch.allclose(model.mask_token["audio"], model.mask_token["video"])
    x = inputs()
    noise = noise_for(model, x)
    with torch.no_grad(), Recorder(encoder=model.encoder, decoder=model.decoder) as seen:
        out = model(**x, noise=noise)
    encoded = seen["encoder"][0][1]
    grids = {m: model.patch_embed[m].grid(x[m]) for m in model.modalities}
    decoder_calls = [args for args, _ in seen["decoder"]]
    if objective in ("joint", "joint_and_inpaint"):
        seqs = decoder_calls.pop(0)
        assert list(seqs) == model.modalities
        for m in model.modalities:
            ids = kept_positions(model, out, noise, m)
            torch.testing.assert_close(seqs[m], expected_joint_sequence(model, m, encoded[m], ids, grids[m]))
    if objective != "joint":
        seqs = decoder_calls.pop(0)
        assert sorted(seqs) == sorted(t for t, _ in INPAINT_DIRECTIONS[objective])
        for target, other in INPAINT_DIRECTIONS[objective]:
            torch.testing.assert_close(seqs[target],
                                       expected_inpaint_sequence(model, target, encoded[other], grids[target]))
            if objective != "joint_and_inpaint":  # exactly the mask-token positions are reconstructed
                u, loss_mask = encoded[other].shape[1], out[f"loss_mask_{target}"]
                assert (loss_mask[:, :u] == 0).all() and (loss_mask[:, u:] == 1).all()
    assert decoder_calls == []


def decoder_by_hand(decoder, seqs: dict) -> dict:
    """What each modality's head must read: its own positions of its decoder's output."""
    if decoder.strategy == "separate":
        hidden = {m: decoder.streams[m](z) for m, z in seqs.items()}
    elif decoder.strategy == "shared":
        hidden = {m: decoder.transformer(z) for m, z in seqs.items()}
    else:
        hidden = joint_by_hand(decoder.transformer, seqs)
    return {m: decoder.pred[m](h) for m, h in hidden.items()}


@pytest.mark.parametrize("decoder", DECODERS)
def test_each_head_reads_its_own_modality_of_the_decoder_output(decoder):
    model = build("model.encoder=separate", f"model.decoder={decoder}")
    x = inputs()
    with torch.no_grad(), Recorder(decoder=model.decoder) as seen:
        out = model(**x, noise=noise_for(model, x))
        seqs, preds = seen["decoder"][0]
        by_hand = decoder_by_hand(model.decoder, seqs)
    for m in model.modalities:
        torch.testing.assert_close(preds[m], by_hand[m])
        assert out[f"pred_{m}"] is preds[m]


def test_inpainting_head_reads_the_decoded_target_sequence():
    model = build("model.encoder=early", "model.decoder=joint", "model.objective=inpaint_both")
    x = inputs()
    with torch.no_grad(), Recorder(decoder=model.decoder) as seen:
        out = model(**x, noise=noise_for(model, x))
        seqs, _ = seen["decoder"][0]
        by_hand = decoder_by_hand(model.decoder, seqs)
    for m in model.modalities:
        torch.testing.assert_close(out[f"pred_{m}"], by_hand[m])


def test_mbt_pools_each_streams_own_tokens_and_never_the_bottlenecks():
    """MBT (Nagrani et al.; Sec. 4.1) by hand: unimodal layers, then each stream's layer over
    [x_m ; b] with b the mean of the streams' updated bottlenecks; each stream's final norm and
    global average pool over ITS OWN tokens; one shared head, logits averaged over modalities."""
    cfg = build_config("tiny", ["model.depth=3", "model.embed_dim=32", "model.num_heads=2",
                                "finetune.fusion_layer=1", "finetune.bottlenecks=2",
                                "finetune.drop_path=0"])
    model = build_classifier(cfg, 5).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # heads start at zero (MBT); the bottleneck is made large so it would show
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=g))
        model.head.bias.copy_(torch.randn(model.head.bias.shape, generator=g))
        model.bottleneck.mul_(100.0)
    a, v = torch.randn(2, 1, 48, 128, generator=g), torch.randn(2, 3, 4, 32, 32, generator=g)
    with torch.no_grad():
        x = model.tokenise({"audio": a, "video": v})
        n = {m: t.shape[1] for m, t in x.items()}
        b = model.bottleneck.expand(2, -1, -1)
        for i in range(cfg.model.depth):
            if i < cfg.finetune.fusion_layer:
                x = {m: model.streams[m].blocks[i](t) for m, t in x.items()}
                continue
            y = {m: model.streams[m].blocks[i](torch.cat([t, b], dim=1)) for m, t in x.items()}
            x = {m: y[m][:, :n[m]] for m in y}
            b = (y["audio"][:, n["audio"]:] + y["video"][:, n["video"]:]) / 2
        own = {m: model.streams[m].norm(t) for m, t in x.items()}
        logits = (model.head(own["audio"].mean(1)) + model.head(own["video"].mean(1))) / 2
        feats = model.forward_features(a, v)
        got = model(a, v)
    for m in ("audio", "video"):
        torch.testing.assert_close(feats[m], own[m])
    torch.testing.assert_close(got, logits)
