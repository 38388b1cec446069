"""Initialising MBT / AST / ViViT and the pretraining-encoder classifier from AV-MAE weights (Sec. 4.1)."""

import copy

import pytest
import torch

from avmae.checkpoint import load_weights, save_checkpoint
from avmae.config import ConfigError, build_config
from avmae.models import AVMAE, build_classifier, init_classifier_from_avmae

ENCODERS = ["early", "separate", "mid", "shared"]
L, S = 4, 1                       # tiny depth; mid fusion: 3 separate layers + 1 joint layer
BLOCK_PARAMS = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                "mlp.fc2.weight", "mlp.fc2.bias"]


def tiny_cfg(*overrides):
    return build_config("tiny", [f"model.depth={L}", "model.embed_dim=32", "model.num_heads=2",
                                 f"model.fusion_layers={S}", "model.decoder_depth=1",
                                 "model.decoder_embed_dim=16", "model.decoder_num_heads=2",
                                 "model.decoder_mlp_dim=32", "finetune.fusion_layer=2",
                                 "finetune.drop_path=0", *overrides])


def pretrained(*overrides):
    cfg = tiny_cfg(*overrides)
    torch.manual_seed(0)
    return AVMAE(cfg.model), cfg


def expected_block_source(encoder, stream, i, pretrained_modality=None):
    """Where block i of MBT stream `stream` comes from (the rules of Sec. 4.1), written out."""
    src = pretrained_modality or stream
    if encoder in ("early", "shared"):
        return f"encoder.transformer.blocks.{i}."
    if encoder == "separate":
        return f"encoder.streams.{src}.blocks.{i}."
    return f"encoder.streams.{src}.blocks.{i}." if i < L - S else f"encoder.joint.blocks.{i - (L - S)}."


def expected_norm_source(encoder, stream, pretrained_modality=None):
    src = pretrained_modality or stream
    return {"early": "encoder.transformer.norm.", "shared": "encoder.transformer.norm.",
            "separate": f"encoder.streams.{src}.norm.", "mid": "encoder.joint.norm."}[encoder]


def assert_stream_equals_checkpoint(clf, sd, encoder, pretrained_modality=None):
    cs = clf.state_dict()
    for m in ("audio", "video"):
        for i in range(L):
            src = expected_block_source(encoder, m, i, pretrained_modality)
            for p in BLOCK_PARAMS:
                assert torch.equal(cs[f"streams.{m}.blocks.{i}.{p}"], sd[src + p]), (m, i, p)
        for p in ("weight", "bias"):
            assert torch.equal(cs[f"streams.{m}.norm.{p}"],
                               sd[expected_norm_source(encoder, m, pretrained_modality) + p])


@pytest.mark.parametrize("encoder", ENCODERS)
def test_mbt_from_audiovisual_avmae(encoder):
    avmae, cfg = pretrained(f"model.encoder={encoder}")
    sd = avmae.state_dict()
    clf = build_classifier(cfg, 5)
    report = init_classifier_from_avmae(clf, sd, cfg, kind="avmae_pretrain")
    assert_stream_equals_checkpoint(clf, sd, encoder)
    cs = clf.state_dict()
    for m in ("audio", "video"):
        for p in ("weight", "bias"):
            assert torch.equal(cs[f"patch_embed.{m}.proj.{p}"], sd[f"patch_embed.{m}.proj.{p}"])
    assert report.missing == ["bottleneck", "head.weight", "head.bias"]
    assert report.unexpected == []
    decoder = [k for k in sd if k.startswith(("decoder", "mask_token"))]
    mid_norms = [k for k in sd if encoder == "mid" and k.startswith("encoder.streams.") and ".norm." in k]
    assert sorted(report.dropped) == sorted(decoder + mid_norms)
    assert len(report.loaded) + len(report.missing) == len(cs)


@pytest.mark.parametrize("encoder", ["early", "shared", "mid"])
def test_streams_initialised_from_the_same_weights_are_untied(encoder):
    avmae, cfg = pretrained(f"model.encoder={encoder}")
    sd = avmae.state_dict()
    before = {k: v.clone() for k, v in sd.items()}
    clf = build_classifier(cfg, 5)
    init_classifier_from_avmae(clf, sd, cfg)
    i = L - 1                                    # shared by both streams in all three strategies
    a = clf.streams["audio"].blocks[i].attn.qkv.weight
    v = clf.streams["video"].blocks[i].attn.qkv.weight
    assert torch.equal(a, v) and a.data_ptr() != v.data_ptr()
    with torch.no_grad():
        a.add_(1.0)
    assert not torch.equal(a, v)
    assert all(torch.equal(sd[k], before[k]) for k in sd)   # the checkpoint is not written to


@pytest.mark.parametrize("modality", ["audio", "video"])
@pytest.mark.parametrize("encoder", ["separate", "mid", "early"])
def test_mbt_from_unimodal_avmae_initialises_both_streams(modality, encoder):
    avmae, cfg = pretrained(f"model.modalities={modality}", f"model.encoder={encoder}")
    sd = avmae.state_dict()
    ft_cfg = copy.deepcopy(cfg)
    ft_cfg.finetune.modality = "av"
    clf = build_classifier(ft_cfg, 5)
    fresh = {k: v.clone() for k, v in clf.state_dict().items()}
    report = init_classifier_from_avmae(clf, sd, cfg)
    assert_stream_equals_checkpoint(clf, sd, encoder, pretrained_modality=modality)
    other = {"audio": "video", "video": "audio"}[modality]
    cs = clf.state_dict()
    assert torch.equal(cs[f"patch_embed.{modality}.proj.weight"], sd[f"patch_embed.{modality}.proj.weight"])
    assert torch.equal(cs[f"patch_embed.{other}.proj.weight"], fresh[f"patch_embed.{other}.proj.weight"])
    assert sorted(report.missing) == sorted(["bottleneck", "head.weight", "head.bias",
                                             f"patch_embed.{other}.proj.weight",
                                             f"patch_embed.{other}.proj.bias"])
    assert report.unexpected == []


@pytest.mark.parametrize("encoder", ["separate", "shared"])
def test_unfused_mbt_from_separate_or_shared_computes_the_pretrained_encoder(encoder):
    """Without fusion, each initialised stream is exactly the AV-MAE encoder's path for it."""
    avmae, cfg = pretrained(f"model.encoder={encoder}", f"finetune.fusion_layer={L}")
    clf = build_classifier(cfg, 5)
    init_classifier_from_avmae(clf, avmae.state_dict(), cfg)
    g = torch.Generator().manual_seed(0)
    a, v = torch.randn(2, 1, 64, 128, generator=g), torch.randn(2, 3, 4, 32, 32, generator=g)
    want, got = avmae.eval().forward_features(a, v), clf.eval().forward_features(a, v)
    for m in ("audio", "video"):
        torch.testing.assert_close(got[m], want[m])


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("modality", ["av", "audio"])
def test_pretraining_encoder_classifier_is_the_pretrained_encoder(encoder, modality):
    avmae, cfg = pretrained(f"model.encoder={encoder}", "finetune.architecture=pretraining_encoder",
                            f"finetune.modality={modality}")
    clf = build_classifier(cfg, 5)
    report = init_classifier_from_avmae(clf, avmae.state_dict(), cfg)
    assert report.missing == ["head.weight", "head.bias"] and report.unexpected == []
    g = torch.Generator().manual_seed(0)
    a, v = torch.randn(2, 1, 64, 128, generator=g), torch.randn(2, 3, 4, 32, 32, generator=g)
    if modality == "av":
        want, got = avmae.eval().forward_features(a, v), clf.eval().forward_features(a, v)
    else:
        want, got = avmae.eval().forward_features(audio=a), clf.eval().forward_features(audio=a)
    assert set(got) == set(want)
    for m in got:
        torch.testing.assert_close(got[m], want[m])


def test_unimodal_finetuning_from_audiovisual_avmae_drops_the_other_modality():
    avmae, cfg = pretrained("model.encoder=mid", "finetune.modality=video")
    sd = avmae.state_dict()
    clf = build_classifier(cfg, 5)
    report = init_classifier_from_avmae(clf, sd, cfg)
    assert report.missing == ["head.weight", "head.bias"] and report.unexpected == []
    assert "patch_embed.audio.proj.weight" in report.dropped
    assert "encoder.streams.audio.blocks.0.attn.qkv.weight" in report.dropped
    assert torch.equal(clf.state_dict()["streams.video.blocks.3.attn.qkv.weight"],
                       sd["encoder.joint.blocks.0.attn.qkv.weight"])


def test_roundtrip_through_a_checkpoint_file_and_wrapper_prefixes(tmp_path):
    avmae, cfg = pretrained("model.encoder=separate")
    save_checkpoint(tmp_path, 10, avmae.state_dict(), cfg, "avmae_pretrain")
    sd, ckpt_cfg, kind, _ = load_weights(tmp_path)
    wrapped = {f"module._orig_mod.{k}": v for k, v in sd.items()}   # DDP + torch.compile names
    clf = build_classifier(ckpt_cfg, 5)
    report = init_classifier_from_avmae(clf, wrapped, ckpt_cfg, kind)
    assert report.unexpected == [] and len(report.loaded) > 0
    assert_stream_equals_checkpoint(clf, sd, "separate")
    assert "loaded" in report.summary() and "bottleneck" in report.summary()


def test_from_scratch_changes_nothing():
    _, cfg = pretrained()
    clf = build_classifier(cfg, 5)
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    report = init_classifier_from_avmae(clf, None, None)
    assert report.from_scratch and report.loaded == [] and len(report.missing) == len(before)
    assert all(torch.equal(v, before[k]) for k, v in clf.state_dict().items())


def test_wrong_kind_of_checkpoint_is_refused():
    avmae, cfg = pretrained()
    clf = build_classifier(cfg, 5)
    with pytest.raises(ConfigError, match="finetuned"):          # a finetuned classifier's weights
        init_classifier_from_avmae(build_classifier(cfg, 5), clf.state_dict(), cfg)
    with pytest.raises(ConfigError, match="kind 'avmae_finetune'"):
        init_classifier_from_avmae(clf, avmae.state_dict(), cfg, kind="avmae_finetune")
    with pytest.raises(ConfigError, match="no 'encoder"):
        init_classifier_from_avmae(clf, {"patch_embed.audio.proj.weight": torch.zeros(1)}, cfg)


@pytest.mark.parametrize("override,what", [("model.depth=6", "depth"), ("model.embed_dim=48", "embed_dim"),
                                           ("model.num_heads=4", "num_heads"),
                                           ("model.patch_size=8", "patch_size")])
def test_size_mismatch_is_refused(override, what):
    avmae, cfg = pretrained(override)
    _, small = pretrained()
    clf = build_classifier(small, 5)
    with pytest.raises(ConfigError, match=what):
        init_classifier_from_avmae(clf, avmae.state_dict(), cfg)


def test_pretraining_encoder_with_another_strategy_is_refused():
    avmae, cfg = pretrained("model.encoder=separate")
    _, other = pretrained("model.encoder=early", "finetune.architecture=pretraining_encoder")
    with pytest.raises(ConfigError, match="encoder=separate"):
        init_classifier_from_avmae(build_classifier(other, 5), avmae.state_dict(), cfg)


def test_shape_mismatch_not_covered_by_the_config_is_refused():
    avmae, cfg = pretrained()
    sd = dict(avmae.state_dict())
    sd["patch_embed.video.proj.weight"] = torch.zeros(32, 3, 4, 16, 16)   # tubelets of 4 frames
    with pytest.raises(ConfigError, match="shape"):
        init_classifier_from_avmae(build_classifier(cfg, 5), sd, cfg)


def test_pretraining_encoder_classifier_from_unimodal_avmae_reuses_its_stream():
    avmae, cfg = pretrained("model.modalities=audio", "model.encoder=separate")
    sd = avmae.state_dict()
    ft = copy.deepcopy(cfg)
    ft.finetune.architecture, ft.finetune.modality = "pretraining_encoder", "av"
    clf = build_classifier(ft, 5)
    report = init_classifier_from_avmae(clf, sd, cfg)
    cs = clf.state_dict()
    for k in ("blocks.0.attn.qkv.weight", "blocks.3.mlp.fc2.bias", "norm.weight"):
        assert torch.equal(cs[f"encoder.streams.video.{k}"], sd[f"encoder.streams.audio.{k}"])
    assert "patch_embed.video.proj.weight" in report.missing and report.unexpected == []
