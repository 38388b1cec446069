"""Generate the Scenic test vectors that tests/test_scenic_import.py compares avmae against.

Runs the OFFICIAL model code (google-research/scenic, `scenic/projects/av_mae`) on CPU, so that
avmae is checked against what that code computes, not against a reading of it. Not run by CI and
never imported by the package: it needs jax, flax, optax, ml_collections, immutabledict, absl and
clu, which avmae does not depend on. Use a throwaway environment:

    python3 -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax flax optax ml_collections \
        immutabledict absl-py clu msgpack numpy
    /tmp/jaxenv/bin/python tools/scenic_vectors.py /path/to/scenic-checkout tests/data/scenic

For each tiny model (the official configs with small widths and depths) it gives every parameter
random non-zero values, saves a checkpoint in the legacy Flax msgpack format (both layouts Scenic
wrote: `optimizer: {target, state}` of the old trainer and `params` + `opt_state` + `global_step`
of scenic.train_lib's TrainState, each with real Adam moments), and records in NAME.npz the inputs,
the masks the official code drew, and its outputs (fp32).

Scenic HEAD needs three run-time patches, all made here and nowhere in the checkout:
`tensorflow.io.gfile` is stubbed (only the trainers use it), `tokenize_input` learns the 'rgb' key
it rejects (it knows only 'RGB'), and the finetune configs' stray uncommented 'NB:' line is
commented out before the config is loaded.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import sys
import types

import numpy as np

B = 2
VIDEO_SHAPE = (B, 4, 32, 48, 3)        # (batch, frames, height, width, channels): 2 x 2 x 3 = 12 tubelets
SPEC_SHAPE = (B, 40, 128, 1)           # (batch, time, mel, 1): 2 x 8 = 16 patches, 8 frames dropped
TINY = dict(hidden_size=16, num_heads=2, mlp_dim=48, num_layers=4)
TINY_DECODER = dict(hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32)


def import_scenic(root: str):
    """Import the official model modules from a checkout, with the run-time patches above."""
    sys.path.insert(0, root)
    tf = types.ModuleType("tensorflow")
    tf.io = types.ModuleType("tensorflow.io")
    tf.io.gfile = types.ModuleType("tensorflow.io.gfile")
    sys.modules.update({"tensorflow": tf, "tensorflow.io": tf.io, "tensorflow.io.gfile": tf.io.gfile})
    from scenic.projects.av_mae import mbt, model_utils, vivit_multimodal

    source = inspect.getsource(vivit_multimodal.tokenize_input)
    if "'rgb'" not in source.split("temporal_encode =")[1].split("}")[0]:
        source = source.replace("temporal_encode = {'RGB',", "temporal_encode = {'RGB', 'rgb',")
        exec(compile(source, vivit_multimodal.__file__, "exec"), vivit_multimodal.__dict__)
    return vivit_multimodal, mbt, model_utils


def load_config(root: str, dataset: str, stage: str):
    path = os.path.join(root, "scenic/projects/av_mae/configs", dataset, f"{stage}.py")
    with open(path) as f:
        text = f.read()
    text = "\n".join(("# " + line if line.strip().startswith("NB:") else line) for line in text.split("\n"))
    module = types.ModuleType(f"cfg_{dataset}_{stage}")
    exec(compile(text, path, "exec"), module.__dict__)
    return module.get_config()


def randomise(params, rng: np.random.Generator):
    """Every leaf random and non-zero: zero-initialised mask tokens, biases and heads included."""
    import jax

    def leaf(x):
        x = np.asarray(x, dtype=np.float32)
        spread = float(x.std()) if x.std() > 0 else 0.1
        return (x + rng.normal(0.0, 0.5 * spread, x.shape)).astype(np.float32)

    return jax.tree_util.tree_map(leaf, params)


def save_layouts(out_dir: str, name: str, params, layouts: tuple[str, ...]):
    """The checkpoint in each requested layout, with real Adam moments, as Scenic saved them."""
    import flax
    import jax
    import optax

    params = flax.core.unfreeze(params)
    opt_state = optax.adamw(1e-3).init(params)
    grads = jax.tree_util.tree_map(lambda p: 0.01 * p, params)
    _, opt_state = optax.adamw(1e-3).update(grads, opt_state, params)
    state = flax.serialization.to_state_dict(opt_state)
    for layout in layouts:
        if layout == "optimizer":  # the old flax.optim trainer used for AV-MAE pretraining
            tree = {"optimizer": {"target": params,
                                  "state": {"step": np.int32(7),
                                            "param_states": {"mu": state["0"]["mu"], "nu": state["0"]["nu"]}}},
                    "model_state": {}, "global_step": np.int32(7), "accum_train_time": np.float32(1.5),
                    "rng": np.zeros(2, np.uint32)}
        else:  # scenic.train_lib TrainState
            tree = {"global_step": np.int32(7), "opt_state": state, "params": params, "state": {},
                    "rng": np.zeros(2, np.uint32), "metadata": {"chrono": {}}}
        with open(os.path.join(out_dir, f"{name}.{layout}.msgpack"), "wb") as f:
            f.write(flax.serialization.to_bytes(tree))


def pretraining_model(vm, mu, cfg, name: str, out_dir: str, seed: int,
                      modalities: tuple[str, ...] = ("rgb", "spectrogram"),
                      layouts: tuple[str, ...] = ("optimizer", "params")):
    import jax
    import jax.numpy as jnp

    cfg.model.update(TINY)
    cfg.model.decoder_config.update(TINY_DECODER)
    if cfg.model.encoder_strategy == "separate_encoders_and_concat":
        cfg.model.fusion_layers = 2
    model = vm.ViViTMultiMaskedAutoencoderModel(cfg, {"input_dtype": jnp.float32})
    rng = np.random.default_rng(seed)
    inputs = {"rgb": rng.uniform(-1, 1, VIDEO_SHAPE).astype(np.float32),
              "spectrogram": rng.normal(0, 1, SPEC_SHAPE).astype(np.float32)}
    inputs = {m: inputs[m] for m in modalities}
    key = jax.random.PRNGKey(seed)
    variables = model.flax_model.init({"params": key, "dropout": key}, dict(inputs), train=True)
    params = randomise(variables["params"], rng)

    drawn = []  # the official masks, recorded as the official code draws them
    original = mu.get_mask_indices

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        drawn.append(out)
        return out

    mu.get_mask_indices = recording
    try:
        (recon, token_mask), inter = model.flax_model.apply(
            {"params": params}, dict(inputs), train=True, rngs={"dropout": jax.random.PRNGKey(seed + 1)},
            capture_intermediates=True, mutable=["intermediates"])
    finally:
        mu.get_mask_indices = original
    features, _ = model.flax_model.apply({"params": params}, dict(inputs), train=False)

    record = {f"input_{k}": v for k, v in inputs.items()}
    for key_name, (masked, unmasked, binary) in zip(inputs, drawn):  # mask_tokens walks the inputs
        record[f"masked_{key_name}"] = np.asarray(masked)
        record[f"unmasked_{key_name}"] = np.asarray(unmasked)
        record[f"token_mask_{key_name}"] = np.asarray(token_mask[key_name])
        assert np.array_equal(np.asarray(binary), record[f"token_mask_{key_name}"])
        record[f"encoded_{key_name}"] = np.asarray(
            inter["intermediates"][f"encoder_output_{key_name}"]["__call__"][0])
        record[f"recon_{key_name}"] = np.asarray(recon[key_name])
        record[f"features_{key_name}"] = np.asarray(features[key_name])
    np.savez_compressed(os.path.join(out_dir, f"{name}.npz"), **record)
    save_layouts(out_dir, name, params, layouts)
    return params


def classifier_model(mbt, cfg, name: str, out_dir: str, seed: int, modalities: tuple[str, ...],
                     num_classes: int, fusion_layer: int, multilabel: bool):
    import jax
    import jax.numpy as jnp

    cfg.model.update(TINY)
    cfg.model.modality_fusion = modalities
    cfg.model.fusion_layer = fusion_layer
    cfg.model.stochastic_droplayer_rate = 0.0
    cls = mbt.MBTMultilabelClassificationModel if multilabel else mbt.MBTClassificationModel
    model = cls(cfg, {"num_classes": num_classes, "input_dtype": jnp.float32,
                      "target_is_onehot": True})
    rng = np.random.default_rng(seed)
    inputs = {"rgb": rng.uniform(-1, 1, VIDEO_SHAPE).astype(np.float32),
              "spectrogram": rng.normal(0, 1, SPEC_SHAPE).astype(np.float32)}
    inputs = {m: inputs[m] for m in modalities}
    key = jax.random.PRNGKey(seed)
    variables = model.flax_model.init({"params": key, "dropout": key}, dict(inputs), train=False)
    params = randomise(variables["params"], rng)
    logits = model.flax_model.apply({"params": params}, dict(inputs), train=False)
    per_modality = model.flax_model.apply({"params": params}, dict(inputs), train=True,
                                          rngs={"dropout": key})
    record = {f"input_{k}": v for k, v in inputs.items()}
    record["logits"] = np.asarray(logits)
    if isinstance(per_modality, dict):
        record.update({f"logits_{m}": np.asarray(v) for m, v in per_modality.items()})
    np.savez_compressed(os.path.join(out_dir, f"{name}.npz"), **record)
    save_layouts(out_dir, name, params, ("params",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenic", help="a checkout of google-research/scenic")
    parser.add_argument("out", help="folder for the vectors (tests/data/scenic)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    vm, mbt, mu = import_scenic(os.path.abspath(args.scenic))

    # AudioSet pretraining: separate encoders then 2 shared layers, same decoder, audio mask 0.7.
    pretraining_model(vm, mu, load_config(args.scenic, "audioset", "pretrain"), "audioset_pretrain",
                      args.out, seed=1)
    # VGGSound pretraining: separate encoders, audio mask 0.5.
    pretraining_model(vm, mu, load_config(args.scenic, "vggsound", "pretrain"), "vggsound_pretrain",
                      args.out, seed=2)
    # AudioSet audio-only pretraining (the released as2m_selfsup_audio): the same config with the
    # spectrogram as the only target, so its encoder is the audio stream then 2 "shared" layers.
    cfg = load_config(args.scenic, "audioset", "pretrain")
    cfg.masked_feature_loss.target = {"spectrogram"}
    pretraining_model(vm, mu, cfg, "audioset_audio_pretrain", args.out, seed=7,
                      modalities=("spectrogram",), layouts=("optimizer",))
    # MBT classifiers (finetune configs): fusion 18/24 (AudioSet) and 16/24 (VGGSound), scaled to 4
    # layers; the official class counts (527 multi-label, 309 single-label), as the importer infers.
    classifier_model(mbt, load_config(args.scenic, "audioset", "finetune"), "audioset_mbt", args.out,
                     seed=3, modalities=("rgb", "spectrogram"), num_classes=527, fusion_layer=3,
                     multilabel=True)
    classifier_model(mbt, load_config(args.scenic, "vggsound", "finetune"), "vggsound_mbt", args.out,
                     seed=4, modalities=("rgb", "spectrogram"), num_classes=309, fusion_layer=2,
                     multilabel=False)
    classifier_model(mbt, load_config(args.scenic, "vggsound", "finetune"), "vggsound_audio", args.out,
                     seed=5, modalities=("spectrogram",), num_classes=309, fusion_layer=2, multilabel=False)
    classifier_model(mbt, load_config(args.scenic, "vggsound", "finetune"), "vggsound_video", args.out,
                     seed=6, modalities=("rgb",), num_classes=309, fusion_layer=2, multilabel=False)
    for f in sorted(os.listdir(args.out)):
        print(f"{os.path.getsize(os.path.join(args.out, f)):>9}  {f}")


if __name__ == "__main__":
    main()
