"""models/loading.py: the one way from a checkpoint to a model. build_model gives the model of each
checkpoint kind, load_model rebuilds a saved model exactly, and nothing else in src/ builds a
model for checkpoint weights."""

import ast
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY

import avmae
from avmae.checkpoint import FINETUNE_KIND, KINDS, PRETRAIN_KIND, save_checkpoint
from avmae.config import ConfigError, build_config
from avmae.data import fill_audio, fill_video
from avmae.models import AVMAE, Classifier, build_classifier, build_model, load_model

SRC = Path(__file__).resolve().parents[1] / "src" / "avmae"


def tiny_cfg(*extra):
    return build_config("tiny-4l-cpu", TINY + list(extra))


def inputs(cfg, batch=2, seed=0):
    """Random model inputs of the config's shapes."""
    g = torch.Generator().manual_seed(seed)
    audio, video = fill_audio(cfg.data), fill_video(cfg.data)
    return {"audio": torch.randn((batch, *audio.shape), generator=g),
            "video": torch.randn((batch, *video.shape), generator=g)}


def test_the_kinds_are_the_checkpoint_strings():
    assert (PRETRAIN_KIND, FINETUNE_KIND) == ("avmae_pretrain", "avmae_finetune") == KINDS


def test_build_model_gives_the_model_of_each_kind():
    cfg = tiny_cfg()
    assert type(build_model(cfg, PRETRAIN_KIND)) is AVMAE
    classifier = build_model(cfg, FINETUNE_KIND, 5)
    assert isinstance(classifier, Classifier) and not isinstance(classifier, AVMAE)
    assert type(classifier) is type(build_classifier(cfg, 5))
    assert [h.out_features for h in classifier.heads()] == [5]
    two = build_model(cfg, FINETUNE_KIND, (3, 4))  # verb, noun
    assert [h.out_features for h in two.heads()] == [3, 4]


@pytest.mark.parametrize("kind", ["avmae", "finetune", "", None])
def test_build_model_refuses_an_unknown_kind(kind):
    with pytest.raises(ConfigError, match="unknown checkpoint kind"):
        build_model(tiny_cfg(), kind, 5)


def test_a_classifier_needs_its_head_sizes():
    with pytest.raises(ConfigError, match="num_classes"):
        build_model(tiny_cfg(), FINETUNE_KIND)


def test_load_model_round_trips_a_pretraining_checkpoint(tmp_path):
    cfg = tiny_cfg()
    torch.manual_seed(1)
    saved = AVMAE(cfg.model).eval()
    ckpt = save_checkpoint(tmp_path / "run", 3, saved.state_dict(), cfg, PRETRAIN_KIND)
    for where in (tmp_path / "run", ckpt, ckpt / "model.safetensors"):
        model, got_cfg, kind, meta, file = load_model(where)
        assert type(model) is AVMAE and kind == PRETRAIN_KIND and got_cfg == cfg
        assert meta["step"] == "3" and file == ckpt / "model.safetensors"
        x = inputs(cfg)
        with torch.no_grad():
            want, got = saved.forward_features(**x), model.eval().forward_features(**x)
        assert set(got) == set(want) == {"audio", "video"}
        for m in want:
            torch.testing.assert_close(got[m], want[m], rtol=0, atol=0)
    assert type(avmae.load(tmp_path / "run")) is AVMAE


def test_load_model_round_trips_a_finetuned_checkpoint(tmp_path):
    cfg = tiny_cfg()
    torch.manual_seed(2)
    saved = build_classifier(cfg, 6).eval()
    labels = {"label_column": "label", "task": "single", "num_classes": json.dumps([6]),
              "vocab": json.dumps({"label": [f"c{i}" for i in range(6)]})}
    save_checkpoint(tmp_path / "run", 2, saved.state_dict(), cfg, FINETUNE_KIND, extra_metadata=labels)
    model, got_cfg, kind, meta, _ = load_model(tmp_path / "run")
    assert type(model) is type(saved) and kind == FINETUNE_KIND and got_cfg == cfg
    assert meta["label_column"] == "label" and json.loads(meta["num_classes"]) == [6]
    x = {m: v for m, v in inputs(cfg, seed=1).items() if m in saved.modalities}
    with torch.no_grad():
        want, got = saved(**x), model.eval()(**x)
    assert want.shape == (2, 6)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_load_model_refuses_another_kind_before_building(tmp_path):
    cfg = tiny_cfg()
    save_checkpoint(tmp_path / "pre", 1, AVMAE(cfg.model).state_dict(), cfg, PRETRAIN_KIND)
    with pytest.raises(ConfigError, match=r"'.*pre' is a avmae_pretrain checkpoint; not wanted"):
        load_model(tmp_path / "pre", expect=FINETUNE_KIND, refusal="'{path}' is a {kind} checkpoint; not wanted")


def test_weights_that_do_not_fit_are_one_line(tmp_path):
    cfg = tiny_cfg()
    state = AVMAE(cfg.model).state_dict()
    first = next(iter(state))
    state.pop(first)
    save_checkpoint(tmp_path / "run", 1, state, cfg, PRETRAIN_KIND)
    # What is wrong, counted, with an example (not torch's cut-off "Error(s) in loading state_dict").
    with pytest.raises(ConfigError, match=f"does not fit the model its config describes: 1 missing "
                                          f"\\(e.g. {first}\\)$"):
        load_model(tmp_path / "run")


# Where a model class may be constructed in src/: the factory, the model definitions themselves,
# the training code that builds fresh models to train, and `avmae info` (parameter counts of a
# config, no weights). Anything else that wants a model for checkpoint weights uses
# models/loading.py: add a file here only for a fresh model that never receives such weights.
ALLOWED = {
    "AVMAE": {"models/loading.py", "models/avmae.py", "training/pretrain.py", "cli/info.py"},
    "build_classifier": {"models/loading.py", "models/classifier.py", "training/finetune.py"},
}


def calls(tree: ast.AST, name: str) -> list[int]:
    """Lines that call `name` (as a bare name or an attribute)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == name) or (isinstance(f, ast.Attribute) and f.attr == name):
                found.append(node.lineno)
    return found


def test_only_the_factory_builds_models_for_checkpoints():
    files = sorted(SRC.rglob("*.py"))
    assert SRC / "models" / "loading.py" in files
    stray = []
    for path in files:
        rel = path.relative_to(SRC).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        for name, allowed in ALLOWED.items():
            if rel not in allowed:
                stray += [f"{rel}:{line}: {name}(...)" for line in calls(tree, name)]
    assert not stray, ("build models for checkpoint weights with avmae.models.loading "
                       f"(build_model / load_model): {stray}")


def test_the_kind_strings_are_written_once():
    """"avmae_pretrain" / "avmae_finetune" as string constants only in checkpoint.py."""
    stray = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in KINDS and rel != "checkpoint.py":
                stray.append(f"{rel}:{node.lineno}")
    assert not stray, f"use checkpoint.PRETRAIN_KIND / FINETUNE_KIND: {stray}"
