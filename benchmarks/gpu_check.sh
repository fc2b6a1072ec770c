#!/usr/bin/env bash
# The GPU check in one go: CUDA correctness, the MoE layer in bf16 and full training steps of
# the 1B models, each step under its own time limit, results as JSON and logs in OUTDIR.
#   bash benchmarks/gpu_check.sh OUTDIR            # every step, in this order
#   STEPS="tests moe_small" bash benchmarks/gpu_check.sh OUTDIR   # a subset
# Run from the repository root with the package importable (python3 -m mm15_components).
# Steps: env, tests, tiny_fit, moe_small, moe_3b, step_1b, step_1b_no_ac, step_1b_moe.
set -uo pipefail
out="${1:?usage: gpu_check.sh OUTDIR}"
mkdir -p "$out"
steps="${STEPS:-env tests tiny_fit moe_small moe_3b step_1b step_1b_no_ac step_1b_moe}"
python="${PYTHON:-python3}"

run() {  # run NAME SECONDS COMMAND...: one step, its log and exit status in OUTDIR
  local name="$1" limit="$2"
  shift 2
  case " $steps " in *" $name "*) ;; *) return 0 ;; esac
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - start))}" >>"$out/steps.jsonl"
  echo "$name: rc=$rc $((SECONDS - start))s"
}

# the 1B model with random weights and a local tokenizer, on synthetic AnyRes batches at
# 378 px tiles (up to 9 plus the overview) in the SFT stage's settings, on one GPU
one_gpu=(--trainer.accelerator=gpu --trainer.devices=1
  --trainer.strategy.init_args.data_parallel_size=1 --trainer.accumulate_grad_batches=1
  --trainer.enable_progress_bar=false --data.init_args.loader.num_workers=12
  --model.init_args.model.init_args.vision.init_args.image_size=378
  --data.init_args.encoding.splitter.init_args.tile_size=378)
step() {  # step NAME SECONDS MODEL_RECIPE EXTRA...
  local name="$1" limit="$2" model="$3"
  shift 3
  run "$name" "$limit" "$python" benchmarks/train_step.py --steps 8 --warmup 3 \
    --output "$out/$name.json" -- --config "$model" --config recipes/stages/sft.yaml \
    --config recipes/data/synthetic.yaml --config recipes/snippets/random_init.yaml \
    "${one_gpu[@]}" "$@"
}

run env 30 bash -c "nvidia-smi; $python -c 'import torch, triton, transformers; \
print(torch.__version__, triton.__version__, transformers.__version__, torch.cuda.get_device_name())'; \
git rev-parse HEAD 2>/dev/null || true"
run tests 150 "$python" -m pytest -m gpu -q -p no:cacheprovider --junitxml="$out/tests.xml" tests
run tiny_fit 90 "$python" -m mm15_components fit --config recipes/quickstart.yaml \
  --trainer.accelerator=gpu --trainer.devices=1 --trainer.max_steps=20 \
  --trainer.limit_val_batches=2 --trainer.enable_progress_bar=false \
  --trainer.default_root_dir="$out/tiny_fit"
run moe_small 45 "$python" benchmarks/moe.py --device cuda --dtype bfloat16 \
  --json "$out/moe_small.json"
run moe_3b 75 "$python" benchmarks/moe.py --device cuda --dtype bfloat16 --tokens 16384 \
  --hidden 2048 --width 11008 --rounds 5 --eager-rounds 1 --json "$out/moe_3b.json"
step step_1b 100 recipes/models/mm15_1b.yaml
step step_1b_no_ac 80 recipes/models/mm15_1b.yaml --model.init_args.activation_checkpointing=false
step step_1b_moe 100 recipes/models/mm15_1b_moe.yaml
