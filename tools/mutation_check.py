#!/usr/bin/env python3
"""Mutation check: do the fast tests fail when the model is wrong?

Each entry of MUTATIONS below is one deliberate, small bug: an exact piece of source text in a file
under src/avmae and what to put in its place. For every mutation, one at a time, this script copies
the repository into a temporary folder, applies the bug there, and runs the fast tests
(`pytest -m "not slow" -x`) against that copy. A mutation the tests catch is "killed"; one they
miss "survived". The working tree is never modified, so Ctrl-C leaves nothing behind, and several
checks (or `--jobs N`) can run at once.

Every mutation's original text must occur exactly once in its file: when the source changes so
that a mutation no longer applies, the script stops with an error naming it (exit status 2) before
running anything. Update the mutation then, do not delete it.

A survivor is either a gap in the tests (add a test that kills it) or a bug that cannot change any
result: then its `why` says so in one sentence and the run reports it as explained.

    python tools/mutation_check.py                # every mutation (about 6 min on 2 cores)
    python tools/mutation_check.py --list         # names only (also checks that all apply)
    python tools/mutation_check.py --only unshuffle-no-gather mbt-pools-a-bottleneck
    python tools/mutation_check.py --jobs 2       # two mutations at a time

Exit status: 0 when every mutation is killed or explained, 1 when one survives unexplained, 2
when a mutation no longer applies. Not run by CI: run it before resolving an issue that touches
the model or the training loops, and list the survivors in the issue's note.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "avmae"
# The fast tests most likely to catch a mutation run first (-x stops at the first failure); every
# other test file follows, so a survivor has passed the whole fast suite.
FIRST = ["test_token_placement.py", "test_model.py", "test_classifier.py", "test_metrics.py",
         "test_augment.py", "test_logmel.py", "test_pretrain.py", "test_finetune.py"]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str            # relative to src/avmae
    original: str        # must occur exactly once in the file
    replacement: str
    why: str = ""        # for a survivor that cannot matter: one sentence saying why


MUTATIONS = [
    # --- masking (masking.py; paper Sec. 3.1) -----------------------------------------------------
    Mutation("unshuffle-no-gather", "models/masking.py",
             "return torch.gather(x, 1, ids_restore", "return x if True else torch.gather(x, 1, ids_restore"),
    Mutation("mask-not-put-back-in-token-order", "models/masking.py",
             "mask = torch.gather(mask, 1, ids_restore)", "mask = mask"),
    Mutation("kept-tokens-are-the-first-ones", "models/masking.py",
             "x_kept = torch.gather(x, 1, ids_keep", "x_kept = x[:, :keep] if True else torch.gather(x, 1, ids_keep"),
    Mutation("largest-noise-kept", "models/masking.py",
             "ids_shuffle = torch.argsort(noise, dim=1)", "ids_shuffle = torch.argsort(noise, dim=1, descending=True)"),
    Mutation("same-mask-at-every-step", "training/pretrain.py",
             "keys = [(seed, step, int(i)", "keys = [(seed, 0, int(i)"),
    Mutation("one-noise-stream-for-both-modalities", "training/pretrain.py",
             "int(i), MODALITY_SEED[m])", "int(i), 1)"),
    # --- encoder input and encoders (models/avmae.py, encoders.py; Sec. 3.2, Fig. 2) ---------------------
    Mutation("encoder-input-without-position", "models/avmae.py",
             "v = v + self._pos(grids[m]", "v = v + 0 * self._pos(grids[m]"),
    Mutation("other-modality-embedding", "models/avmae.py",
             "v = v + self.modality_embed[m]", "v = v + self.modality_embed[OTHER[m]]"),
    Mutation("joint-layers-concatenate-in-reverse", "models/encoders.py",
             "return torch.cat(list(tokens.values()), dim=1)", "return torch.cat(list(tokens.values())[::-1], dim=1)"),
    Mutation("joint-layers-split-in-reverse", "models/encoders.py",
             "zip(order, parts)", "zip(order, parts[::-1])"),
    Mutation("mid-fusion-joint-layers-skipped", "models/encoders.py",
             "return split_tokens(self.joint(x), order)", "return split_tokens(x, order)"),
    Mutation("separate-encoder-one-stream", "models/encoders.py",
             "return {m: self.streams[m](x) for m, x in tokens.items()}",
             "return {m: self.streams[list(self.streams)[0]](x) for m, x in tokens.items()}"),
    # --- decoder input and decoders (models/avmae.py, objectives.py, decoders.py; Sec. 3.3-3.4) ---------
    Mutation("decoder-embed-of-the-other-modality", "models/avmae.py",
             "projected = {m: self.decoder_embed[m](e)", "projected = {m: self.decoder_embed[OTHER[m] if OTHER[m] in self.decoder_embed else m](e)"),
    Mutation("joint-decoder-sequence-without-position", "models/avmae.py",
             "seqs[m] = z + self._pos(grids[m]", "seqs[m] = z + 0 * self._pos(grids[m]"),
    Mutation("inpainting-with-the-other-mask-token", "models/avmae.py",
             "self.mask_token[a], n_a)", "self.mask_token[OTHER[a] if OTHER[a] in self.mask_token else a], n_a)"),
    Mutation("inpainting-without-target-position", "models/avmae.py",
             "seqs[a] = z + self._pos(grids[a]", "seqs[a] = z + 0 * self._pos(grids[a]"),
    Mutation("inpainting-mask-tokens-before-the-other-modality", "models/objectives.py",
             "seq = torch.cat([encoded_other, mask_token",
             "seq = torch.cat([mask_token.to(encoded_other.dtype).expand(B, n_target - u, D), encoded_other]"
             " if True else [encoded_other, mask_token"),
    Mutation("joint-decoder-split-in-reverse", "models/decoders.py",
             "out = split_tokens(self.transformer(z), order)", "out = split_tokens(self.transformer(z), order[::-1])"),
    Mutation("heads-read-the-decoder-input", "models/decoders.py",
             "return {m: self.pred[m](z) for m, z in out.items()}", "return {m: self.pred[m](z) for m, z in seqs.items()}"),
    # --- objectives (models/objectives.py, avmae.py; Eq. 1) -----------------------------------------------
    Mutation("loss-over-every-token", "models/objectives.py",
             "return (per_token * loss_mask).sum() / loss_mask.sum().clamp(min=1.0)", "return per_token.mean()"),
    Mutation("loss-on-the-visible-tokens", "models/avmae.py",
             "losses = {m: loss_of(m, preds[m], masks[m])", "losses = {m: loss_of(m, preds[m], 1 - masks[m])"),
    Mutation("inpainting-loss-mask-off-by-one", "models/objectives.py",
             "loss_mask[:, u:] = 1.0", "loss_mask[:, u - 1:] = 1.0"),
    Mutation("norm-targets-ignored", "models/objectives.py",
             "if not norm_targets:", "if True:"),
    Mutation("filled-modality-still-a-target", "models/avmae.py",
             "if present is not None and m in present:", "if False:"),
    Mutation("modality-loss-weights-swapped", "models/avmae.py",
             'w = {"audio": self.cfg.loss_weight_audio, "video": self.cfg.loss_weight_video}',
             'w = {"audio": self.cfg.loss_weight_video, "video": self.cfg.loss_weight_audio}'),
    # --- MBT and the classifiers (classifier.py; Sec. 4.1) ----------------------------------------
    Mutation("mbt-pools-a-bottleneck", "models/classifier.py",
             "out[m] = y[:, : xm.shape[1]]", "out[m] = y[:, 1: xm.shape[1] + 1]"),
    Mutation("mbt-bottleneck-not-averaged", "models/classifier.py",
             "torch.stack(updated).mean(dim=0)", "updated[0]"),
    Mutation("mbt-bottleneck-before-the-tokens", "models/classifier.py",
             "torch.cat([xm, bottleneck], dim=1)", "torch.cat([bottleneck, xm], dim=1)"),
    Mutation("logits-summed-over-modalities", "models/classifier.py",
             "return torch.stack(list(per.values())).mean(dim=0)", "return torch.stack(list(per.values())).sum(dim=0)"),
    Mutation("max-pooling", "models/classifier.py",
             "return {m: x.mean(dim=1) for m, x in features.items()}", "return {m: x.amax(dim=1) for m, x in features.items()}"),
    # --- the log-mel front end (data/logmel.py; Kaldi fbank) --------------------------------------
    Mutation("preemphasis-0.95", "data/logmel.py", "PREEMPHASIS = 0.97", "PREEMPHASIS = 0.95"),
    Mutation("no-dc-offset-removal", "data/logmel.py",
             "frames = frames - frames.mean(dim=-1, keepdim=True)", "frames = frames"),
    Mutation("mel-scale-factor", "data/logmel.py", "return 1127.0 * np.log", "return 1125.0 * np.log",
             why="the filters are equally spaced on the mel scale and evaluated on it, so a constant "
                 "factor on mel(f) scales every filter edge, centre and FFT bin alike and leaves every "
                 "weight unchanged"),
    Mutation("mel-scale-break-frequency", "data/logmel.py", "np.float64) / 700.0)", "np.float64) / 720.0)"),
    Mutation("log-floor-1e-10", "data/logmel.py", "clamp_min(FLOAT_EPS)", "clamp_min(1e-10)"),
    Mutation("fft-bin-frequencies-shifted", "data/logmel.py",
             "mel = mel_scale(np.arange(n_fft // 2) *", "mel = mel_scale(np.arange(1, n_fft // 2 + 1) *"),
    # --- metrics (metrics.py) ----------------------------------------------------------------------
    Mutation("ap-ties-not-one-threshold", "evaluation/metrics.py",
             "last = np.r_[s[1:] != s[:-1], True]", "last = np.ones(len(s), dtype=bool)"),
    Mutation("top-k-class-order-reversed", "evaluation/metrics.py",
             'top = np.argsort(-scores, axis=1, kind="stable")', 'top = np.argsort(-scores[:, ::-1], axis=1, kind="stable")'),
    Mutation("map-over-every-class", "evaluation/metrics.py",
             "for c in np.flatnonzero(present)]", "for c in range(scores.shape[1])]"),
    Mutation("auc-ties-count-one", "evaluation/metrics.py",
             "mean_rank = (first + last) / 2.0 + 1.0", "mean_rank = last + 1.0"),
    Mutation("d-prime-without-sqrt2", "evaluation/metrics.py", "return math.sqrt(2.0) * NormalDist()", "return NormalDist()"),
    # --- mixup and label smoothing (augment.py; B.2) -----------------------------------------------
    Mutation("mixup-targets-not-mixed", "training/augment.py",
             "{m: mix_targets(targets, lams[m], perm) for m in inputs}", "{m: targets for m in inputs}"),
    Mutation("mixup-lambda-on-the-partner", "training/augment.py",
             "return lam * x + (1.0 - lam) * x[perm", "return (1.0 - lam) * x + lam * x[perm"),
    Mutation("label-smoothing-over-c-minus-one", "training/augment.py",
             "smoothing / targets.shape[-1]", "smoothing / (targets.shape[-1] - 1)"),
    # --- resume and the data order (pretrain.py, finetune.py, dataset.py) --------------------------
    Mutation("pretrain-resume-restarts-the-epoch", "training/pretrain.py",
             "start=step * t.accum_steps,", "start=(step - step % budget.steps_per_epoch) * t.accum_steps,"),
    Mutation("pretrain-resume-without-optimiser-state", "training/pretrain.py",
             'optimizer.load_state_dict(state["optimizer"])', '(lambda s: None)(state["optimizer"])'),
    Mutation("finetune-resume-restarts-the-epoch", "training/finetune.py",
             "start=step * t.accum_steps,", "start=(step - step % budget.steps_per_epoch) * t.accum_steps,"),
    Mutation("finetune-resume-without-optimiser-state", "training/finetune.py",
             'optimizer.load_state_dict(state["optimizer"])', '(lambda s: None)(state["optimizer"])'),
    Mutation("same-data-order-every-epoch", "data/dataset.py",
             "order = sample_rng(seed, epoch).permutation", "order = sample_rng(seed, 0).permutation"),
    # --- the official release's details (issue 10; tests/test_scenic_import.py) --------------------
    Mutation("kept-tokens-mae-rule", "models/masking.py",
             "return max(1, num_tokens - int(mask_ratio * num_tokens))",
             "return max(1, int(num_tokens * (1.0 - mask_ratio)))"),
    Mutation("sincos-interleaved-as-halves", "models/pos_embed.py",
             'if layout == "interleaved":', 'if layout == "never":'),
    Mutation("tanh-gelu-as-exact", "models/transformer.py",
             'GELUS = {"exact": "none", "tanh": "tanh"}', 'GELUS = {"exact": "none", "tanh": "none"}'),
    Mutation("imported-fusion-layer-one-late", "interop/scenic.py",
             "f.fusion_layer = official_fusion * arch.depth // OFFICIAL_DEPTH",
             "f.fusion_layer = official_fusion * arch.depth // OFFICIAL_DEPTH + 1"),
    Mutation("attention-out-heads-transposed", "interop/scenic.py",
             "np.ascontiguousarray(kernel.reshape(-1, kernel.shape[-1]).T)",
             "np.ascontiguousarray(kernel.transpose(1, 0, 2).reshape(-1, kernel.shape[-1]).T)"),
    Mutation("video-patch-kernel-h-w-swapped", "interop/scenic.py",
             "kernel.transpose(4, 3, 0, 1, 2)", "kernel.transpose(4, 3, 0, 2, 1)"),
]


def check_applies(mutations: list[Mutation]) -> list[str]:
    """Problems: an original text not exactly once in its file, a mutated file that does not
    compile, a name used twice."""
    problems, names = [], set()
    for mu in mutations:
        if mu.name in names:
            problems.append(f"{mu.name}: the name is used twice")
        names.add(mu.name)
        path = PACKAGE / mu.file
        if not path.is_file():
            problems.append(f"{mu.name}: src/avmae/{mu.file} does not exist")
            continue
        text = path.read_text()
        count = text.count(mu.original)
        if count != 1:
            problems.append(f"{mu.name}: {'not found' if count == 0 else f'found {count} times'} "
                            f"in src/avmae/{mu.file}: {mu.original!r}")
            continue
        try:  # a mutation that does not even compile would be "killed" for nothing
            compile(text.replace(mu.original, mu.replacement), str(path), "exec")
        except SyntaxError as err:
            problems.append(f"{mu.name}: the mutated src/avmae/{mu.file} does not compile ({err.msg})")
    return problems


def copy_tree(dest: Path) -> Path:
    """The working tree as git sees it (tracked and untracked files, not the ignored ones: no
    venv, no run outputs), with its current edits, under dest/repo."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode()
    repo = dest / "repo"
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree but still in the index
            continue
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, repo / rel)
    return repo


def ordered_test_files(repo: Path) -> list[str]:
    """Every test file of the copy, the likeliest killers first."""
    found = sorted(p.name for p in (repo / "tests").glob("test_*.py"))
    ordered = [f for f in FIRST if f in found] + [f for f in found if f not in FIRST]
    return [f"tests/{f}" for f in ordered]


def run_tests(repo: Path, pytest_args: list[str], timeout: float) -> tuple[str, str]:
    """(outcome, detail): "pass", "fail" (the first failing test) or "timeout"."""
    pytest_args = pytest_args or ordered_test_files(repo)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), str(repo / "tests")]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider",
           "-rfE", f"--basetemp={repo.parent / 'pytest-tmp'}", *pytest_args]
    try:
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", f"no result within {timeout:.0f} s"
    if proc.returncode == 0:
        return "pass", ""
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, flags=re.M)
    if failed:
        return "fail", failed[0]
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    return "fail", tail[-1] if tail else f"pytest exit status {proc.returncode}"


def imported_from(repo: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    return subprocess.run([sys.executable, "-c", "import avmae; print(avmae.__file__)"], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()


def check_one(mu: Mutation | None, pytest_args: list[str], timeout: float) -> tuple[str, str, float]:
    """Apply `mu` (None: no mutation) to a fresh copy and run the fast tests on it."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="avmae-mutation-") as scratch:
        repo = copy_tree(Path(scratch))
        if not imported_from(repo).startswith(str(repo)):
            raise SystemExit("error: the copy's avmae is not the one imported; is PYTHONPATH overridden?")
        if mu is not None:
            path = repo / "src" / "avmae" / mu.file
            text = path.read_text()
            assert text.count(mu.original) == 1, mu.name
            path.write_text(text.replace(mu.original, mu.replacement))
        outcome, detail = run_tests(repo, pytest_args, timeout)
    return outcome, detail, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    parser.add_argument("--jobs", type=int, default=1, help="mutations checked at once (default 1)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per test run (default 900)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the check that the unmutated tree passes the fast tests")
    parser.add_argument("pytest_args", nargs="*",
                        help="pytest arguments (after --) run instead of the whole fast suite, e.g. a test file")
    args = parser.parse_args(argv)
    # `kill` as well as Ctrl-C unwinds, so that the temporary copies are removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))

    problems = check_applies(MUTATIONS)
    if problems:
        for p in problems:
            print(f"error: mutation {p}; update it in tools/mutation_check.py", file=sys.stderr)
        return 2
    chosen = MUTATIONS
    if args.only:
        unknown = sorted(set(args.only) - {mu.name for mu in MUTATIONS})
        if unknown:
            print(f"error: unknown mutation(s): {', '.join(unknown)} (see --list)", file=sys.stderr)
            return 2
        chosen = [mu for mu in MUTATIONS if mu.name in args.only]
    if args.list:
        for mu in chosen:
            print(f"{mu.name:50s} src/avmae/{mu.file}" + ("   [explained]" if mu.why else ""))
        return 0

    if not args.no_baseline:
        outcome, detail, secs = check_one(None, args.pytest_args, args.timeout)
        if outcome != "pass":
            print(f"error: the unmutated tree does not pass the fast tests ({detail}); fix that first",
                  file=sys.stderr)
            return 2
        print(f"baseline: the fast tests pass on the unmutated tree ({secs:.0f} s)", flush=True)

    def one(mu: Mutation):
        outcome, detail, secs = check_one(mu, args.pytest_args, args.timeout)
        status = {"fail": "killed", "timeout": "killed"}.get(outcome, "SURVIVED")
        print(f"{status:9s} {mu.name:50s} {secs:4.0f} s  {detail}", flush=True)
        return mu, status

    try:
        if args.jobs <= 1:
            results = [one(mu) for mu in chosen]
        else:
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                results = list(pool.map(one, chosen))
    except KeyboardInterrupt:  # the temporary copies are removed by their context managers
        print("interrupted", file=sys.stderr)
        return 130
    survivors = [mu for mu, status in results if status == "SURVIVED"]
    explained = [mu for mu in survivors if mu.why]
    unexplained = [mu for mu in survivors if not mu.why]
    print(f"\n{len(results)} mutations: {len(results) - len(survivors)} killed, "
          f"{len(explained)} survived but cannot matter, {len(unexplained)} survived unexplained")
    for mu in explained:
        print(f"  survived (cannot matter) {mu.name}: {mu.why}")
    for mu in unexplained:
        print(f"  SURVIVED {mu.name} (src/avmae/{mu.file}): add a test that fails on it")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
