"""Bad input, every command: the DESIGN's error policy ("a command given a bad argument, a missing
file, a malformed manifest or an impossible config exits with status 2 and one clear line saying
what is wrong and how to fix it; no traceback"), and nothing written where nothing was produced.

Each case runs `avmae.cli.main(argv)` in-process on tiny inputs (the runs are imported from the
committed official test vectors, a few kB each) and fails before any heavy work.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from avmae.cli import main

DATA = Path(__file__).parent / "data" / "scenic"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Every input the cases name, made once: good and bad manifests, media, runs, checkpoints."""
    from media import write_clip, write_garbage, write_zero_bytes

    root = tmp_path_factory.mktemp("bad_inputs")
    f = {}
    clip = write_clip(root / "clip.mp4", seconds=1.0, size=(64, 48))
    f["clip"] = str(clip)
    f["garbage"] = str(write_garbage(root / "garbage.mp4"))
    f["zero"] = str(write_zero_bytes(root / "zero.mp4"))
    (root / "good.csv").write_text("path,label\nclip.mp4,dog\nclip.mp4,cat\n")
    f["good"] = str(root / "good.csv")
    (root / "latin1.csv").write_bytes("path,label\nclip.mp4,caf\xe9\n".encode("latin-1"))
    f["latin"] = str(root / "latin1.csv")
    (root / "binary.csv").write_bytes(bytes(range(256)) * 8)
    f["binary"] = str(root / "binary.csv")
    (root / "empty.csv").write_text("")
    f["empty"] = str(root / "empty.csv")
    (root / "nopath.csv").write_text("file,label\nclip.mp4,dog\n")
    f["nopath"] = str(root / "nopath.csv")
    (root / "gone.csv").write_text("path,label\nnot_there.mp4,dog\n")
    f["gone"] = str(root / "gone.csv")
    (root / "unreadable.csv").write_text("path\ngarbage.mp4\nzero.mp4\n")
    f["unreadable"] = str(root / "unreadable.csv")
    (root / "ragged.csv").write_text('path,label\n"clip.mp4,dog\n')
    f["ragged"] = str(root / "ragged.csv")
    (root / "notes.txt").write_text("just some notes\n")
    f["text"] = str(root / "notes.txt")
    (root / "notjson.json").write_text("{not json")
    f["notjson"] = str(root / "notjson.json")
    (root / "fake.safetensors").write_bytes(b"\x00" * 64)
    f["fake_st"] = str(root / "fake.safetensors")
    (root / "emptydir").mkdir()
    f["emptydir"] = str(root / "emptydir")
    (root / "dataset").mkdir()
    (root / "dataset" / "train.csv").write_text("path,label\n")
    f["dataset"] = str(root / "dataset")
    (root / "labels2.txt").write_text("a\nb\n")
    f["labels2"] = str(root / "labels2.txt")
    f["flax"] = str(DATA / "vggsound_pretrain.params.msgpack")
    f["flax_clf"] = str(DATA / "vggsound_audio.params.msgpack")
    assert main(["import-scenic", f["flax"], "--out", str(root / "pre")]) == 0
    assert main(["import-scenic", f["flax_clf"], "--out", str(root / "clf")]) == 0
    f["pre"], f["clf"] = str(root / "pre"), str(root / "clf")
    f["missing"] = str(root / "does_not_exist")
    f["missing_mp4"] = str(root / "does_not_exist.mp4")
    f["missing_csv"] = str(root / "does_not_exist.csv")
    return f


# (id, argv, exit status). {name} is a path from `files`; {out} a fresh path under the test's
# tmp_path that must still not exist afterwards; {tmp} the test's tmp_path.
CASES = [
    # --- the top level
    ("unknown-command", ["nosuchcommand"], 2),
    ("unknown-option", ["--bogus"], 2),
    ("no-command", [], 2),
    # --- synth
    ("synth-clips-0", ["synth", "{out}", "--clips", "0"], 2),
    ("synth-clips-negative", ["synth", "{out}", "--clips", "-3"], 2),
    ("synth-clips-word", ["synth", "{out}", "--clips", "many"], 2),
    ("synth-seconds-0", ["synth", "{out}", "--seconds", "0"], 2),
    ("synth-seconds-nan", ["synth", "{out}", "--seconds", "nan"], 2),
    ("synth-size-odd", ["synth", "{out}", "--size", "17"], 2),
    ("synth-fps-0", ["synth", "{out}", "--fps", "0"], 2),
    ("synth-test-fraction", ["synth", "{out}", "--test-fraction", "1.5"], 2),
    ("synth-workers-0", ["synth", "{out}", "--workers", "0"], 2),
    ("synth-seed-negative", ["synth", "{out}", "--seed", "-1"], 2),
    ("synth-out-is-a-file", ["synth", "{text}"], 2),
    ("synth-existing-dataset", ["synth", "{dataset}"], 2),
    # --- manifest
    ("manifest-missing", ["manifest", "vggsound", "{missing_csv}", "--videos", "{tmp}", "--out", "{out}"], 2),
    ("manifest-latin1", ["manifest", "vggsound", "{latin}", "--videos", "{tmp}", "--out", "{out}"], 2),
    ("manifest-binary", ["manifest", "vggsound", "{binary}", "--videos", "{tmp}", "--out", "{out}"], 2),
    ("manifest-empty", ["manifest", "vggsound", "{empty}", "--videos", "{tmp}", "--out", "{out}"], 2),
    ("manifest-text", ["manifest", "audioset", "{text}", "--videos", "{tmp}", "--out", "{out}"], 2),
    ("manifest-unknown-dataset", ["manifest", "kinetics", "{good}", "--videos", "{tmp}", "--out", "{out}"], 2),
    ("manifest-videos-missing", ["manifest", "vggsound", "{good}", "--videos", "{missing}", "--out", "{out}"], 2),
    # --- prepare
    ("prepare-missing", ["prepare", "{missing_csv}", "--out", "{out}"], 2),
    ("prepare-latin1", ["prepare", "{latin}", "--out", "{out}"], 2),
    ("prepare-binary", ["prepare", "{binary}", "--out", "{out}"], 2),
    ("prepare-empty", ["prepare", "{empty}", "--out", "{out}"], 2),
    ("prepare-no-path-column", ["prepare", "{nopath}", "--out", "{out}"], 2),
    ("prepare-media-missing", ["prepare", "{gone}", "--out", "{out}"], 2),
    ("prepare-clips-per-shard-0", ["prepare", "{good}", "--out", "{out}", "--clips-per-shard", "0"], 2),
    ("prepare-workers-0", ["prepare", "{good}", "--out", "{out}", "--workers", "0"], 2),
    ("prepare-views-0", ["prepare", "{good}", "--out", "{out}", "--views", "0"], 2),
    ("prepare-bad-preset", ["prepare", "{good}", "--out", "{out}", "--preset", "nosuch"], 2),
    ("prepare-bad-set", ["prepare", "{good}", "--out", "{out}", "--set", "nosuch.key=1"], 2),
    # --- stats
    ("stats-missing", ["stats", "{missing_csv}"], 2),
    ("stats-latin1", ["stats", "{latin}"], 2),
    ("stats-binary", ["stats", "{binary}"], 2),
    ("stats-empty", ["stats", "{empty}"], 2),
    ("stats-no-path-column", ["stats", "{nopath}"], 2),
    ("stats-ragged", ["stats", "{ragged}"], 2),
    ("stats-media-missing", ["stats", "{gone}"], 2),
    ("stats-max-clips-negative", ["stats", "{good}", "--max-clips", "-1"], 2),
    ("stats-bad-preset", ["stats", "{good}", "--preset", "nosuch"], 2),
    ("stats-bad-set-type", ["stats", "{good}", "--set", "data.sample_rate=abc"], 2),
    ("stats-empty-folder", ["stats", "{emptydir}"], 2),
    # --- presets / info
    ("presets-extra", ["presets", "--bogus"], 2),
    ("info-no-preset", ["info"], 2),
    ("info-bad-preset", ["info", "--preset", "nosuch"], 2),
    ("info-depth-0", ["info", "--preset", "tiny-4l-cpu", "--set", "model.depth=0"], 2),
    ("info-unknown-key", ["info", "--preset", "tiny-4l-cpu", "--set", "nosuch.key=1"], 2),
    ("info-bad-type", ["info", "--preset", "tiny-4l-cpu", "--set", "model.depth=abc"], 2),
    ("info-no-equals", ["info", "--preset", "tiny-4l-cpu", "--set", "model.depth"], 2),
    ("info-bad-recipe", ["info", "--recipe", "nosuch"], 2),
    ("info-run-missing", ["info", "{missing}"], 2),
    ("info-run-text", ["info", "{text}"], 2),
    ("info-run-flax", ["info", "{flax}"], 2),
    ("info-run-empty-folder", ["info", "{emptydir}"], 2),
    ("info-heads-do-not-divide", ["info", "--preset", "tiny-4l-cpu", "--set", "model.embed_dim=100"], 2),
    # --- pretrain
    ("pretrain-data-missing", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{missing_csv}", "--out", "{out}"], 2),
    ("pretrain-data-latin1", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{latin}", "--out", "{out}"], 2),
    ("pretrain-data-binary", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{binary}", "--out", "{out}"], 2),
    ("pretrain-data-empty", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{empty}", "--out", "{out}"], 2),
    ("pretrain-data-no-path", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{nopath}", "--out", "{out}"], 2),
    ("pretrain-data-media-missing", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{gone}", "--out", "{out}"], 2),
    ("pretrain-bad-preset", ["pretrain", "--preset", "nosuch", "--data", "{good}", "--out", "{out}"], 2),
    ("pretrain-device-cuda", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{good}", "--out", "{out}", "--device", "cuda"], 2),
    ("pretrain-device-cuda-7", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{good}", "--out", "{out}", "--device", "cuda:7"], 2),
    ("pretrain-device-tpu", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{good}", "--out", "{out}", "--device", "tpu"], 2),
    ("pretrain-device-word", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{good}", "--out", "{out}", "--device", "fast"], 2),
    ("pretrain-batch-0", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{good}", "--out", "{out}", "--set", "train.batch_size=0"], 2),
    ("pretrain-out-is-a-file", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{good}", "--out", "{text}"], 2),
    ("pretrain-init-missing", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{good}", "--out", "{out}", "--init", "{missing}"], 2),
    ("pretrain-init-text", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{good}", "--out", "{out}", "--init", "{text}"], 2),
    ("pretrain-init-flax", ["pretrain", "--data", "{good}", "--out", "{out}", "--init", "{flax}"], 2),
    ("pretrain-resume-nothing", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{good}", "--out", "{out}", "--resume"], 2),
    ("pretrain-resume-and-overwrite", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{good}", "--out", "{out}", "--resume", "--overwrite"], 2),
    ("pretrain-bad-recipe", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{good}", "--out", "{out}", "--recipe", "nosuch"], 2),
    ("pretrain-existing-run", ["pretrain", "--preset", "tiny-4l-cpu", "--data", "{good}", "--out", "{pre}"], 2),
    # --- finetune
    ("finetune-init-missing", ["finetune", "--init", "{missing}", "--modality", "audio", "--data", "{good}", "--val", "{good}", "--out", "{out}"], 2),
    ("finetune-init-classifier", ["finetune", "--init", "{clf}", "--modality", "audio", "--data", "{good}", "--val", "{good}", "--out", "{out}"], 2),
    ("finetune-init-flax", ["finetune", "--init", "{flax}", "--modality", "audio", "--data", "{good}", "--val", "{good}", "--out", "{out}"], 2),
    ("finetune-init-fake", ["finetune", "--init", "{fake_st}", "--modality", "audio", "--data", "{good}", "--val", "{good}", "--out", "{out}"], 2),
    ("finetune-data-latin1", ["finetune", "--init", "{pre}", "--modality", "audio", "--data", "{latin}", "--val", "{good}", "--out", "{out}"], 2),
    ("finetune-data-binary", ["finetune", "--init", "{pre}", "--modality", "audio", "--data", "{binary}", "--val", "{good}", "--out", "{out}"], 2),
    ("finetune-val-missing", ["finetune", "--init", "{pre}", "--modality", "audio", "--data", "{good}", "--val", "{missing_csv}", "--out", "{out}"], 2),
    ("finetune-bad-modality", ["finetune", "--init", "{pre}", "--modality", "smell", "--data", "{good}", "--val", "{good}", "--out", "{out}"], 2),
    ("finetune-device-tpu", ["finetune", "--init", "{pre}", "--modality", "audio", "--data", "{good}", "--val", "{good}", "--out", "{out}", "--device", "tpu"], 2),
    ("finetune-device-cuda", ["finetune", "--init", "{pre}", "--modality", "audio", "--data", "{good}", "--val", "{good}", "--out", "{out}", "--device", "cuda"], 2),
    ("finetune-vocab-missing", ["finetune", "--init", "{pre}", "--modality", "audio", "--data", "{good}", "--val", "{good}", "--out", "{out}", "--vocab", "{missing}"], 2),
    ("finetune-vocab-not-json", ["finetune", "--init", "{pre}", "--modality", "audio", "--data", "{good}", "--val", "{good}", "--out", "{out}", "--vocab", "{notjson}"], 2),
    ("finetune-bad-set", ["finetune", "--init", "{pre}", "--modality", "audio", "--data", "{good}", "--val", "{good}", "--out", "{out}", "--set", "train.lr=abc"], 2),
    # --- evaluate
    ("evaluate-missing", ["evaluate", "{missing}", "--data", "{good}"], 2),
    ("evaluate-pretraining-run", ["evaluate", "{pre}", "--data", "{good}"], 2),
    ("evaluate-flax", ["evaluate", "{flax_clf}", "--data", "{good}"], 2),
    ("evaluate-text", ["evaluate", "{text}", "--data", "{good}"], 2),
    ("evaluate-fake-safetensors", ["evaluate", "{fake_st}", "--data", "{good}"], 2),
    ("evaluate-empty-folder", ["evaluate", "{emptydir}", "--data", "{good}"], 2),
    ("evaluate-data-missing", ["evaluate", "{clf}", "--data", "{missing_csv}"], 2),
    ("evaluate-data-latin1", ["evaluate", "{clf}", "--data", "{latin}"], 2),
    ("evaluate-data-binary", ["evaluate", "{clf}", "--data", "{binary}"], 2),
    ("evaluate-data-empty", ["evaluate", "{clf}", "--data", "{empty}"], 2),
    ("evaluate-batch-0", ["evaluate", "{clf}", "--data", "{good}", "--batch-size", "0"], 2),
    ("evaluate-batch-negative", ["evaluate", "{clf}", "--data", "{good}", "--batch-size", "-4"], 2),
    ("evaluate-views-0", ["evaluate", "{clf}", "--data", "{good}", "--views", "0"], 2),
    ("evaluate-device-tpu", ["evaluate", "{clf}", "--data", "{good}", "--device", "tpu"], 2),
    ("evaluate-device-cuda", ["evaluate", "{clf}", "--data", "{good}", "--device", "cuda"], 2),
    # --- visualize
    ("visualize-missing-run", ["visualize", "{missing}", "{clip}", "--out", "{out}.png"], 2),
    ("visualize-classifier", ["visualize", "{clf}", "{clip}", "--out", "{out}.png"], 2),
    ("visualize-flax", ["visualize", "{flax}", "{clip}", "--out", "{out}.png"], 2),
    ("visualize-clip-missing", ["visualize", "{pre}", "{missing_mp4}", "--out", "{out}.png"], 2),
    ("visualize-clip-garbage", ["visualize", "{pre}", "{garbage}", "--out", "{out}.png"], 2),
    ("visualize-clip-zero-bytes", ["visualize", "{pre}", "{zero}", "--out", "{out}.png"], 2),
    ("visualize-seed-word", ["visualize", "{pre}", "{clip}", "--out", "{out}.png", "--seed", "x"], 2),
    # --- embed
    ("embed-missing-run", ["embed", "{missing}", "{clip}", "--out", "{out}.npz"], 2),
    ("embed-flax", ["embed", "{flax}", "{clip}", "--out", "{out}.npz"], 2),
    ("embed-text-checkpoint", ["embed", "{text}", "{clip}", "--out", "{out}.npz"], 2),
    ("embed-input-missing", ["embed", "{pre}", "{missing_mp4}", "--out", "{out}.npz"], 2),
    ("embed-out-png", ["embed", "{pre}", "{clip}", "--out", "{out}.png"], 2),
    ("embed-all-unreadable", ["embed", "{pre}", "{garbage}", "{zero}", "--out", "{out}.npz"], 2),
    ("embed-manifest-all-unreadable", ["embed", "{pre}", "{unreadable}", "--out", "{out}.npz"], 2),
    ("embed-latin1", ["embed", "{pre}", "{latin}", "--out", "{out}.npz"], 2),
    ("embed-binary", ["embed", "{pre}", "{binary}", "--out", "{out}.npz"], 2),
    ("embed-empty-manifest", ["embed", "{pre}", "{empty}", "--out", "{out}.npz"], 2),
    ("embed-mixed-inputs", ["embed", "{pre}", "{good}", "{clip}", "--out", "{out}.npz"], 2),
    ("embed-batch-0", ["embed", "{pre}", "{clip}", "--out", "{out}.npz", "--batch-size", "0"], 2),
    ("embed-batch-negative", ["embed", "{pre}", "{clip}", "--out", "{out}.npz", "--batch-size", "-2"], 2),
    ("embed-device-tpu", ["embed", "{pre}", "{clip}", "--out", "{out}.npz", "--device", "tpu"], 2),
    ("embed-device-cuda", ["embed", "{pre}", "{clip}", "--out", "{out}.npz", "--device", "cuda"], 2),
    # --- probe
    ("probe-missing-run", ["probe", "{missing}", "--data", "{good}", "--val", "{good}"], 2),
    ("probe-flax", ["probe", "{flax}", "--data", "{good}", "--val", "{good}"], 2),
    ("probe-data-missing", ["probe", "{pre}", "--data", "{missing_csv}", "--val", "{good}"], 2),
    ("probe-data-latin1", ["probe", "{pre}", "--data", "{latin}", "--val", "{good}"], 2),
    ("probe-val-binary", ["probe", "{pre}", "--data", "{good}", "--val", "{binary}"], 2),
    ("probe-data-empty", ["probe", "{pre}", "--data", "{empty}", "--val", "{good}"], 2),
    ("probe-bad-modality", ["probe", "{pre}", "--data", "{good}", "--val", "{good}", "--modality", "smell"], 2),
    ("probe-k-0", ["probe", "{pre}", "--data", "{good}", "--val", "{good}", "--k", "0"], 2),
    ("probe-batch-0", ["probe", "{pre}", "--data", "{good}", "--val", "{good}", "--batch-size", "0"], 2),
    ("probe-device-tpu", ["probe", "{pre}", "--data", "{good}", "--val", "{good}", "--device", "tpu"], 2),
    ("probe-device-cuda", ["probe", "{pre}", "--data", "{good}", "--val", "{good}", "--device", "cuda"], 2),
    # --- quickstart / reproduce (refused before any work)
    ("quickstart-clips-0", ["quickstart", "--out", "{out}", "--clips", "0"], 2),
    ("quickstart-steps-negative", ["quickstart", "--out", "{out}", "--pretrain-steps", "-1"], 2),
    ("quickstart-labelled-0", ["quickstart", "--out", "{out}", "--labelled-per-class", "0"], 2),
    ("quickstart-out-is-a-file", ["quickstart", "--out", "{text}"], 2),
    ("reproduce-unknown-table", ["reproduce", "99", "--out", "{out}"], 2),
    ("reproduce-table-word", ["reproduce", "abc", "--out", "{out}"], 2),
    ("reproduce-data-missing", ["reproduce", "1", "--data", "{missing}", "--out", "{out}"], 2),
    ("reproduce-clips-0", ["reproduce", "1", "--clips", "0", "--out", "{out}"], 2),
    # --- import-scenic
    ("import-missing", ["import-scenic", "{missing}", "--out", "{out}"], 2),
    ("import-text", ["import-scenic", "{text}", "--out", "{out}"], 2),
    ("import-empty", ["import-scenic", "{empty}", "--out", "{out}"], 2),
    ("import-safetensors", ["import-scenic", "{fake_st}", "--out", "{out}"], 2),
    ("import-bad-preset", ["import-scenic", "{flax}", "--out", "{out}", "--preset", "nosuch"], 2),
    ("import-labels-missing", ["import-scenic", "{flax_clf}", "--out", "{out}", "--labels", "{missing}"], 2),
    ("import-labels-count", ["import-scenic", "{flax_clf}", "--out", "{out}", "--labels", "{labels2}"], 2),
    ("import-labels-binary", ["import-scenic", "{flax_clf}", "--out", "{out}", "--labels", "{binary}"], 2),
    ("import-labels-bad-json", ["import-scenic", "{flax_clf}", "--out", "{out}", "--labels", "{notjson}"], 2),
    ("import-labels-on-pretraining", ["import-scenic", "{flax}", "--out", "{out}", "--labels", "{labels2}"], 2),
    ("import-set-depth", ["import-scenic", "{flax}", "--out", "{out}", "--set", "model.depth=12"], 2),
    ("import-set-width", ["import-scenic", "{flax}", "--out", "{out}", "--set", "model.embed_dim=32"], 2),
    ("import-set-unknown", ["import-scenic", "{flax}", "--out", "{out}", "--set", "nosuch.key=1"], 2),
    ("import-existing-run", ["import-scenic", "{flax}", "--out", "{pre}"], 2),
    ("import-unknown-name", ["import-scenic", "scenic/nosuch", "--out", "{out}"], 2),
    # --- weights
    ("weights-extra-argument", ["weights", "scenic/audioset-av"], 2),
    # --- check
    ("check-missing", ["check", "{missing}"], 2),
    ("check-file", ["check", "{text}"], 2),
    ("check-empty-folder", ["check", "{emptydir}"], 2),
]


def error_lines(err: str) -> list[str]:
    """The lines of stderr that report an error (warnings and progress bars are not errors)."""
    return [line for line in err.splitlines()
            if line.strip() and ("error" in line.lower() or "stopped" in line.lower())
            and "warning" not in line.lower()]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_status(case, files, tmp_path, capsys, monkeypatch):
    import torch

    name, template, status = case
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # a CPU machine, everywhere
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    out = tmp_path / "out"
    values = {**files, "out": str(out), "tmp": str(tmp_path)}
    argv = [a.format(**values) for a in template]
    before = {p: Path(p).stat().st_mtime_ns for p in (files["pre"], files["dataset"], files["text"])}
    try:
        code = main(argv)
    except SystemExit as exc:   # argparse's own refusals
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = error_lines(err)
    assert len(lines) == 1, f"{name}: expected one error line, got {len(lines)}:\n{err}"
    assert code == status, f"{name}: exit {code}, stderr:\n{err}"
    # Nothing produced, nothing written; nothing given was changed.
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith("out")]
    assert not leftovers, f"{name}: wrote {leftovers}"
    after = {p: Path(p).stat().st_mtime_ns for p in before}
    assert before == after, f"{name}: changed an input"


def test_there_are_at_least_100_cases():
    assert len(CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)
