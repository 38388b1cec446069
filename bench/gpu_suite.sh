#!/usr/bin/env bash
# The CUDA rows of BENCHMARKS.md (issue 12), in one run of about 8 minutes on one H100/H200-class GPU.
#
#   bench/gpu_suite.sh OUT_DIR            # on the GPU machine, from the repository root
#   bench/gpu_suite.sh OUT_DIR --smoke    # on a CPU at tiny sizes: does every step run?
#
# Every measurement is one JSON line, on stdout and appended to OUT_DIR/results.jsonl; each step's
# stderr goes to OUT_DIR/log.txt. The steps run in order of importance, each under a timeout cut to
# what is left of SUITE_BUDGET seconds (default 480); a step that fails, times out or finds no time
# left gets a {"bench": "suite_step", ...} line saying so, so nothing is lost silently.
#
#   1 base pretraining, bf16: MFU (same-run matmul peak, datasheet), largest batch, GPU-hours of
#     VGGSound 800 epochs at ViT-B, the 15 kernels of one step that take the most time
#   1b the same step with the tubelet embedding as cuDNN's Conv3d (the before row of that fix)
#   2 ViT-L pretraining (vggsound-large): the same, GPU-hours of VGGSound 800 epochs at ViT-L
#   3 MBT ViT-L finetuning at the finetuning input (32x224x224 + 8 s), activation checkpointing:
#     MFU, largest batch; then batch 8 under an 80 GiB cap (an 80 GB GPU)
#   4 end-to-end data overhead from shards at base (16 cores: 14 loader workers), and the real
#     `avmae pretrain` loop's clips/s and host-device synchronisations
#   5 torch.compile at base (on the H200 compiling took more than 135 s: give it SUITE_BUDGET)
#   6 ViT-L pretraining (audioset-large): GPU-hours of AudioSet-2M 80 epochs at ViT-L
#   7 MBT ViT-L finetuning without checkpointing: its largest batch
#   8 with and without each fast-path piece at base: SDPA's math kernel, foreach (not fused)
#     AdamW, fp32+TF32, fp32 without TF32
#   9 shards format 2's loader at base (14 workers), JPEG frames decoded in the workers
#     (data.jpeg_decode=cpu) against after the batch on the GPU (=cuda, nvJPEG): clips/s of each.
#     Needs torchvision (avmae[gpu-jpeg]) built for the machine's torch; without it the cuda row
#     says it fell back to the CPU path ("jpeg_decode": "cpu" and why). Last, so it may find no
#     time left of the default budget: run it alone with the command in BENCHMARKS.md.
#
# Needs torch with CUDA, numpy, safetensors, tqdm, msgpack, matplotlib, and PyAV (`av`, steps 4).
# The project's lent H200 (python3 3.12, torch 2.11+cu130) has all but PyAV and no network; carry
# its wheel. Here, in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl av==18.1.0
# then one device run with carry [".whl"] and timeout_s 600:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
#     export PYTHONPATH=/tmp/site; bash bench/gpu_suite.sh $OUT/suite
set -u
OUT_DIR=${1:?usage: bench/gpu_suite.sh OUT_DIR [--smoke]}
SMOKE=${2:-}
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
LOG="$OUT_DIR/log.txt"
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="$HERE/../src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
BUDGET=${SUITE_BUDGET:-480}
START=$(date +%s)

if [ "$SMOKE" = "--smoke" ]; then
  DEV=(--device cpu --smoke); DATA=(--device cpu --smoke --workers 1 --synth-workers 1)
  JPEG=(--clips 16 --size 48 --seconds 1.2 --batch 4 --epochs 1 --repeats 1 --workers 1 --synth-workers 1)
  BUDGET=${SUITE_BUDGET:-900}
else
  DEV=(--device cuda); DATA=(--device cuda --clips 160 --size 256 --seconds 8 --workers 14 --synth-workers 16)
  JPEG=(--preset base --clips 128 --size 256 --seconds 10 --batch 32 --epochs 2 --repeats 2 --workers 14 --synth-workers 16)
fi

note() {  # one JSON line about a step, on stdout and in the results
  local line="{\"bench\": \"suite_step\", \"step\": \"$1\", \"status\": \"$2\", \"seconds\": $3}"
  echo "$line"; echo "$line" >> "$RESULTS"
}

step() {  # step NAME TIMEOUT SCRIPT ARGS...
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt 20 ]; then note "$name" "skipped: no time left of SUITE_BUDGET=$BUDGET s" 0; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0; t0=$(date +%s)
  echo "== $name ($*)" >> "$LOG"
  timeout --kill-after=10 "$limit" "$PYTHON" "$HERE/$@" --out "$RESULTS" 2>> "$LOG" | grep '^{'
  local rc=${PIPESTATUS[0]}
  local took=$(( $(date +%s) - t0 ))
  case $rc in
    0) note "$name" ok "$took" ;;
    124|137) note "$name" "timed out after $limit s (rows it finished are above)" "$took" ;;
    *) note "$name" "failed with exit status $rc (see log.txt)" "$took" ;;
  esac
}

"$PYTHON" - <<'EOF' | tee -a "$RESULTS"
import json, torch
print(json.dumps({"bench": "suite_start", "torch": torch.__version__, "cuda": torch.version.cuda,
                  "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}))
EOF

step base_pretrain 90 bench_model.py "${DEV[@]}" --preset base --batch 64 --dtypes bf16 --repeats 5 --max-batch --schedules vggsound --profile 15
step base_conv_tubelets 30 bench_model.py "${DEV[@]}" --preset base --batch 64 --dtypes bf16 --repeats 5 --conv-tubelets
step large_pretrain_vggsound 90 bench_model.py "${DEV[@]}" --preset vggsound-large --batch 64 --dtypes bf16 --repeats 3 --max-batch --schedules vggsound --profile 10
step mbt_large_finetune_checkpointing 90 bench_model.py "${DEV[@]}" --stage finetune --preset vggsound-large --batch 8 --dtypes bf16 --repeats 3 --grad-checkpointing --max-batch
step mbt_large_finetune_80gib 40 bench_model.py "${DEV[@]}" --stage finetune --preset vggsound-large --batch 8 --dtypes bf16 --repeats 3 --grad-checkpointing --memory-gib 80
step data_overhead_shards 130 bench_pretrain.py "${DATA[@]}" --preset base --batch 64 --steps 10 --sources shards --loop-steps 40
step base_compile 130 bench_model.py "${DEV[@]}" --preset base --batch 64 --dtypes bf16 --repeats 5 --compile
step large_pretrain_audioset 45 bench_model.py "${DEV[@]}" --preset audioset-large --batch 64 --dtypes bf16 --repeats 3 --schedules audioset
step mbt_large_finetune_plain 60 bench_model.py "${DEV[@]}" --stage finetune --preset vggsound-large --batch 4 --dtypes bf16 --repeats 3 --max-batch
step base_math_attention 30 bench_model.py "${DEV[@]}" --preset base --batch 64 --dtypes bf16 --repeats 3 --attention math
step base_foreach_adamw 30 bench_model.py "${DEV[@]}" --preset base --batch 64 --dtypes bf16 --repeats 5 --no-fused
step base_fp32_tf32 30 bench_model.py "${DEV[@]}" --preset base --batch 64 --dtypes fp32 --repeats 3
step base_fp32_no_tf32 30 bench_model.py "${DEV[@]}" --preset base --batch 64 --dtypes fp32 --repeats 3 --no-tf32
step shards_jpeg_decode_gpu 150 bench_loader.py "${JPEG[@]}" --jpeg-decode cpu cuda
note suite_end done "$(( $(date +%s) - START ))"
