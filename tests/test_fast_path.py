"""The GPU-scale training path, checked on CPU: activation checkpointing gives the gradients of the
plain backward, torch.compile has no graph breaks in the step and trains like eager, the loops read
nothing from the device between log steps, the fused optimiser is chosen only for CUDA parameters,
and a non-finite loss found late still names its step and keeps the last good checkpoint."""

import sys
import types

import pytest
import torch
from conftest import TINY
from torch.utils._python_dispatch import TorchDispatchMode

from avmae.config import RunError, build_config
from avmae.models import AVMAE, Block, build_classifier, set_grad_checkpointing
from avmae.training.optim import use_fused

torch.set_num_threads(1)


def tiny_cfg(*extra):
    return build_config("tiny-4l-cpu", TINY + list(extra))


def tiny_inputs(cfg, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = cfg.data
    return {"audio": torch.randn(batch, 1, d.audio_frames, d.mel_bins, generator=g),
            "video": torch.randn(batch, 3, d.num_frames, d.crop_size, d.crop_size, generator=g)}


def count_block_forwards(model):
    calls = {"n": 0}

    def hook(module, args):  # a pre-hook: the recomputation stops early, after the last tensor it needs
        calls["n"] += 1
    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, Block)]
    return calls, handles


def grads_of(model, loss_fn, checkpointing, amp=False):
    set_grad_checkpointing(model, checkpointing)
    model.zero_grad(set_to_none=True)
    calls, handles = count_block_forwards(model)
    torch.manual_seed(123)  # stochastic depth draws from the global RNG
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss = loss_fn(model)
    loss.backward()  # outside autocast, as in the loops: the recomputation restores it
    for h in handles:
        h.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return grads, calls["n"]


def assert_checkpointing_equal(model, loss_fn, amp=False):
    plain, n_plain = grads_of(model, loss_fn, False, amp)
    ckpt, n_ckpt = grads_of(model, loss_fn, True, amp)
    assert n_plain > 0
    # Each block runs once in the forward and once more in the backward: checkpointing is in use.
    assert n_ckpt == 2 * n_plain
    assert plain.keys() == ckpt.keys() and len(plain) == len(list(model.parameters()))
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-6, atol=1e-7, msg=k)


@pytest.mark.parametrize("encoder,decoder", [("mid", "shared"), ("early", "joint"),
                                             ("separate", "separate"), ("shared", "shared")])
def test_grad_checkpointing_pretraining_gradients_equal(encoder, decoder):
    cfg = tiny_cfg(f"model.encoder={encoder}", f"model.decoder={decoder}", "model.drop_path=0.2")
    torch.manual_seed(0)
    model = AVMAE(cfg.model).train()
    inputs = tiny_inputs(cfg)

    def loss(m):
        return m(**inputs, generator=torch.Generator().manual_seed(7))["loss"]
    assert_checkpointing_equal(model, loss)


@pytest.mark.parametrize("modality,architecture,amp", [("av", "mbt", False), ("audio", "mbt", False),
                                                       ("av", "pretraining_encoder", False),
                                                       ("av", "mbt", True)])
def test_grad_checkpointing_finetuning_gradients_equal(modality, architecture, amp):
    """MBT's fusion layers (bottleneck tokens through each stream's block) included; stochastic
    depth on, so the recomputation must drop the same samples as the forward."""
    cfg = tiny_cfg(f"finetune.modality={modality}", f"finetune.architecture={architecture}",
                   "finetune.drop_path=0.3", "finetune.fusion_layer=1")
    torch.manual_seed(0)
    model = build_classifier(cfg, 5).train()
    for head in model.heads():  # zero-initialised heads would give the trunk no gradient
        torch.nn.init.normal_(head.weight, std=0.1)
    if architecture == "mbt" and modality == "av":
        assert model.fused
    inputs = tiny_inputs(cfg, batch=3)

    def loss(m):
        return sum(x.float().square().mean() for x in m(**inputs, per_modality=True).values())
    assert_checkpointing_equal(model, loss, amp)  # bf16 autocast: the same bf16 ops twice


def test_grad_checkpointing_is_set_from_the_config(tiny_synth, tmp_path, monkeypatch):
    """train.grad_checkpointing reaches every Transformer of the trained model."""
    from avmae.training import pretrain as pt
    seen = []
    real = pt.AVMAE.forward

    def forward(self, *a, **k):
        seen.append([t.grad_checkpointing for t in self.modules() if hasattr(t, "grad_checkpointing")])
        return real(self, *a, **k)
    monkeypatch.setattr(pt.AVMAE, "forward", forward)
    cfg = tiny_cfg("train.steps=1", "train.batch_size=4", "train.grad_checkpointing=true",
                   "train.figure_clips=0")
    pt.pretrain(cfg, str(tiny_synth / "train.csv"), str(tmp_path / "run"))
    assert seen and all(seen[0]) and len(seen[0]) >= 3  # two encoder stacks + joint, decoder


def test_step_has_no_graph_breaks():
    """torch.compile sees the whole pretraining forward and the classifier's as one graph each."""
    import torch._dynamo
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = AVMAE(cfg.model).train()
    inputs = tiny_inputs(cfg)
    noise = {m: torch.rand(2, n) for m, n in
             (("audio", model.patch_embed["audio"].grid(inputs["audio"])[0]
               * model.patch_embed["audio"].grid(inputs["audio"])[1]),
              ("video", int(torch.tensor(model.patch_embed["video"].grid(inputs["video"])).prod())))}
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(**inputs, noise=noise)
    assert explained.graph_break_count == 0, explained.break_reasons
    classifier = build_classifier(tiny_cfg("finetune.fusion_layer=1"), 5).train()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(classifier)(**inputs, per_modality=True)
    assert explained.graph_break_count == 0, explained.break_reasons


@pytest.mark.slow
def test_compiled_pretraining_trains_like_eager(tiny_synth, tmp_path):
    """train.compile=true (inductor on CPU) runs the real loop and gives eager's weights."""
    from safetensors.torch import load_file

    from avmae.training.pretrain import pretrain
    runs = {}
    for compiled in (False, True):
        cfg = tiny_cfg("train.steps=2", "train.batch_size=4", f"train.compile={compiled}",
                       "train.figure_clips=0")
        run = pretrain(cfg, str(tiny_synth / "train.csv"), str(tmp_path / str(compiled)))
        runs[compiled] = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
    assert runs[True].keys() == runs[False].keys()
    for k in runs[False]:
        torch.testing.assert_close(runs[True][k], runs[False][k], rtol=1e-4, atol=1e-5, msg=k)


# Reads that are not the loop's: CPU Adam reads its step count (CUDA's fused step does not), and
# the loader's own work on host data.
NOT_THE_LOOP = ("/torch/optim/", "/torch/utils/data/", "/avmae/data/")


def avmae_site(frame):
    """file:line of the innermost avmae frame, or None when the read is not the loop's."""
    site = None
    while frame is not None:
        name = frame.f_code.co_filename.replace("\\", "/")
        if any(part in name for part in NOT_THE_LOOP):
            return None
        if "/avmae/" in name and site is None:
            site = f"{name.rsplit('/', 1)[-1]}:{frame.f_lineno}"
        frame = frame.f_back
    return site


class ScalarReads(TorchDispatchMode):
    """Counts tensor -> Python reads made from avmae's loop and model code: .item(), float(),
    bool(), int() (aten._local_scalar_dense) and .tolist(), each a host-device synchronisation on
    a GPU. (.numpy() fails on a GPU tensor, so it can only read host data.)"""

    def __init__(self):
        super().__init__()
        self.where = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self._record(sys._getframe(1))
        return func(*args, **(kwargs or {}))

    def _record(self, frame):
        site = avmae_site(frame)
        if site is not None:
            self.where.append(site)

    def __enter__(self):
        real, reads = torch.Tensor.tolist, self

        def tolist(tensor):
            reads._record(sys._getframe(1))
            return real(tensor)
        self._real_tolist = real
        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._real_tolist
        return super().__exit__(*exc)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_loops_read_the_device_only_at_log_steps(stage, tiny_synth, tmp_path):
    """Runs of 2 and 6 steps, logged at the first and the last step only, read the same number of
    values from the device: nothing is read per step."""
    from avmae.training.finetune import finetune
    from avmae.training.pretrain import pretrain
    data = str(tiny_synth / "train.csv")
    counts = {}
    for steps in (2, 6):
        common = [f"train.steps={steps}", "train.batch_size=2", "train.log_every=1000",
                  "train.checkpoint_every=1000", "train.figure_clips=0"]
        out = tmp_path / f"{stage}{steps}"
        with ScalarReads() as reads:
            if stage == "pretrain":
                pretrain(tiny_cfg(*common), data, str(out))
            else:
                finetune("scratch", data, data, str(out), modality="av", preset="tiny-4l-cpu",
                         overrides=TINY + common + ["train.warmup_steps=1"])
        counts[steps] = reads.where
    assert len(counts[6]) == len(counts[2]), sorted(set(counts[6]) - set(counts[2])) or counts[6]


def test_fused_optimiser_only_for_cuda_parameters():
    cuda = types.SimpleNamespace(is_cuda=True)
    cpu = types.SimpleNamespace(is_cuda=False)
    assert use_fused([{"params": [cuda, cuda]}, {"params": [cuda]}])
    assert not use_fused([{"params": [cuda]}, {"params": [cpu]}])
    assert not use_fused([{"params": []}])
    from avmae.training import build_optimizer
    opt = build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(2))]}], tiny_cfg().train, 0.1)
    assert not opt.defaults.get("fused")


def test_non_finite_loss_found_at_a_later_log_step_names_its_step(tiny_synth, tmp_path, monkeypatch):
    """The loss is checked on the device every step but read only at log steps and checkpoints:
    a NaN at step 3 stops the run at the step-4 checkpoint, naming step 3, before saving it."""
    from avmae.training import pretrain as pt
    real = pt.AVMAE.forward
    calls = {"n": 0}

    def forward(self, *a, **k):
        out = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 3:
            out["loss"] = out["loss"] * float("nan")
        return out
    monkeypatch.setattr(pt.AVMAE, "forward", forward)
    cfg = tiny_cfg("train.steps=6", "train.batch_size=2", "train.checkpoint_every=2",
                   "train.log_every=1000", "train.figure_clips=0")
    with pytest.raises(RunError, match="step 3;.*last good checkpoint.*step_0000002"):
        pt.pretrain(cfg, str(tiny_synth / "train.csv"), str(tmp_path / "run"))
    assert calls["n"] == 4  # it went on to step 4 (no synchronisation), then stopped
    assert not (tmp_path / "run" / "checkpoints" / "step_0000004").exists()


@pytest.mark.parametrize("modality,architecture,fusion_layer", [
    ("av", "mbt", 1), ("av", "mbt", 3), ("video", "mbt", 1), ("av", "pretraining_encoder", 1)])
def test_analytic_finetuning_flops_match_torch_flop_counter(modality, architecture, fusion_layer,
                                                             monkeypatch):
    """finetune_flops, what the GPU benchmark's finetuning MFU divides by, against torch's count
    of one forward + backward (MBT with bottleneck tokens from fusion_layer on; 3 = no fusion)."""
    from torch.utils.flop_counter import FlopCounterMode

    from avmae.models import finetune_flops

    def math_attention(q, k, v):  # the counter does not see the CPU attention kernel
        return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1) @ v
    monkeypatch.setattr("avmae.models.transformer.F.scaled_dot_product_attention", math_attention)
    cfg = build_config("tiny", ["model.depth=3", "model.fusion_layers=1", "data.num_frames=4",
                                "data.crop_size=64", "data.short_side=64", "data.audio_seconds=1.28",
                                f"finetune.modality={modality}", f"finetune.architecture={architecture}",
                                f"finetune.fusion_layer={fusion_layer}", "finetune.bottlenecks=4"])
    model = build_classifier(cfg, 7)
    a = torch.randn(1, 1, cfg.data.audio_frames, 128)
    v = torch.randn(1, 3, 4, 64, 64)
    with FlopCounterMode(display=False) as counter:
        logits = model(a, v, per_modality=True)
        sum(x.sum() for x in logits.values()).backward()
    measured = counter.get_total_flops() / 1e9
    analytic = finetune_flops(cfg, 7)["train_gflops_per_clip"]
    assert abs(measured - analytic) / analytic < 1e-6, (measured, analytic)


@pytest.mark.slow
def test_gpu_suite_runs_end_to_end_at_tiny_sizes(tmp_path):
    """bench/gpu_suite.sh --smoke: every step of the GPU benchmark runs (on a CPU, tiny sizes)
    and writes its JSON lines, so a session with a GPU spends its minutes measuring."""
    import json
    import os
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(root / "bench" / "gpu_suite.sh"), str(tmp_path), "--smoke"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    steps = {r["step"]: r["status"] for r in rows if r["bench"] == "suite_step"}
    assert len(steps) == 15 and all(v in ("ok", "done") for v in steps.values()), steps
    kinds = {r["bench"] for r in rows}
    assert {"matmul_peak", "pretrain_step", "pretrain_largest_batch", "finetune_step",
            "finetune_largest_batch", "gpu_hours", "pretrain_end_to_end", "pretrain_loop",
            "profile_kernel", "train_loader_jpeg_decode"} <= kinds
    assert all(r["fits"] for r in rows if "fits" in r)
