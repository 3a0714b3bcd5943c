"""The model card (README.md) of a model folder, fine-tuned here or a QA checkpoint evaluated as it is, as the Hub
reads it: metadata (base model by Hub id, license, datasets, widget example, a `model-index` with the evaluation
figures) and a body saying what the model was trained (if it was) and evaluated on, the settings its pipeline uses
and how to load it. Rendered offline; the Hub is asked for the base model's license only when the base model is
neither a local folder with a card nor known here."""

import json
import logging
import os
import re
from dataclasses import dataclass

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

logger = logging.getLogger(__name__)

# Licenses of base models whose cards users may not have at hand.
KNOWN_LICENSES = {
    "SpanBERT/spanbert-base-cased": "cc-by-nc-4.0",
    "SpanBERT/spanbert-large-cased": "cc-by-nc-4.0",
}
HYPERPARAMETERS = (
    "learning_rate", "head_learning_rate", "crf_learning_rate", "per_device_train_batch_size",
    "per_device_eval_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_steps", "warmup_steps",
    "weight_decay", "lr_scheduler_type", "optim", "seed", "bf16", "fp16", "metric_for_best_model",
    "load_best_model_at_end",
)
# How the card names a decoding other than by its name.
HEAD_WORDS = {"multi_span": "crf head, answers of several spans"}
REPORTED_METRICS = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1",
                    "exact_match", "em_precision", "em_recall", "em_f1", "overlap_precision", "overlap_recall",
                    "overlap_f1")
# The settings the saved pipeline reads from the config's `qa_settings`, as the card names them.
PIPELINE_SETTINGS = {
    "null_score_diff_threshold": "no-answer threshold (answer \"\" when null score - best span score exceeds it)",
    "max_seq_length": "window length, tokens", "doc_stride": "window overlap, tokens",
    "head": "answer decoder (span: start/end logits; crf: BIO tag paths)",
    "max_answer_length": "longest answer, tokens", "n_best_size": "answers listed per question in the n-best file",
    "version_2_with_negative": "may answer \"\" (SQuAD v2)",
}
QUOTED_REPO_ID = re.compile(r"""["']([\w.-]+/[\w.-]+)["']""")


def is_repo_id(name):
    """Whether `name` is a Hub repo id (`namespace/name`) rather than a path on this machine."""
    if not name or os.path.exists(name) or name.count("/") != 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def local_model_id(folder):
    """The Hub id of a model kept in a local folder, from what the folder says of itself: a repo id quoted in its
    card whose name is the card's title (`# all-MiniLM-L6-v2` ... `from_pretrained('org/all-MiniLM-L6-v2')`), else
    its config's `_name_or_path` when that is a repo id; None when neither names one."""
    readme = os.path.join(folder, "README.md")
    if os.path.isfile(readme):
        text = ModelCard.load(readme).text
        title = re.search(r"^# (\S+)\s*$", text, re.MULTILINE)
        for repo_id in QUOTED_REPO_ID.findall(text):
            if title and repo_id.split("/")[1] == title.group(1):
                return repo_id
    config = os.path.join(folder, "config.json")
    if os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            name = json.load(f).get("_name_or_path")
        if is_repo_id(name):
            return name
    return None


def base_model_id(name_or_path):
    """The base model's Hub id: the name given, or for a local folder what the folder says (None if nothing)."""
    return local_model_id(name_or_path) if os.path.isdir(name_or_path) else name_or_path


def base_model_license(name_or_path, token=None):
    """License id of the base model: from a local folder's card, a known model or the Hub; "unknown" otherwise."""
    readme = os.path.join(name_or_path, "README.md")
    if os.path.isfile(readme):
        return ModelCard.load(readme).data.license or "unknown"
    if os.path.isdir(name_or_path):  # a local folder without a card says nothing of its license
        return "unknown"
    if name_or_path in KNOWN_LICENSES:
        return KNOWN_LICENSES[name_or_path]
    try:
        from huggingface_hub import model_info

        return model_info(name_or_path, token=token).card_data.license or "unknown"
    except Exception as err:  # offline, private or missing: the card says so instead of failing the run
        logger.warning(f"Could not look up the license of {name_or_path}: {err}")
        return "unknown"


@dataclass(frozen=True)
class DataSource:
    """A split's data as a card names it: a file, or a split of a Hub dataset (and configuration)."""

    file: str | None
    dataset_name: str | None
    dataset_config_name: str | None
    split: str

    @property
    def label(self):
        """The file's name, else the Hub dataset (configuration) and split."""
        if self.file:
            return os.path.basename(self.file)
        config = f" ({self.dataset_config_name})" if self.dataset_config_name else ""
        return f"{self.dataset_name}{config}, {self.split} split"


@dataclass(frozen=True)
class RunFacts:
    """What a card says of the run behind a model folder.

    base_model: the checkpoint the run started from (`--model_name_or_path`); token: to look up its license.
    model_id: the Hub repo id the folder is pushed to, or the folder's name.
    fine_tuned: whether the run trained the model (else it evaluated or packaged a QA checkpoint as it is).
    train_data, eval_data: the splits' data; hub_dataset: the Hub dataset the run read, or None.
    hyperparameters: (name, value) pairs of the training run.
    """

    base_model: str
    token: str | None
    model_id: str
    fine_tuned: bool
    train_data: DataSource
    eval_data: DataSource
    hub_dataset: str | None
    hyperparameters: tuple


def eval_results(data, metrics):
    """Hub `model-index` entries for the evaluation metrics on `data` (a `DataSource`), at full precision (they parse
    back to the run's figures)."""
    hub = data.file is None
    return [
        EvalResult(
            task_type="question-answering", task_name="Extractive question answering",
            dataset_type=data.dataset_name if hub else data.label, dataset_name=data.label,
            dataset_config=data.dataset_config_name if hub else None, dataset_split="validation",
            metric_type=metric, metric_name=metric, metric_value=float(metrics[f"eval_{metric}"]),
        )
        for metric in REPORTED_METRICS if f"eval_{metric}" in metrics
    ]


def table(header, rows):
    return f"| {header[0]} | {header[1]} |\n|---|---|\n" + "\n".join(f"| {key} | {value} |" for key, value in rows)


def render(run, settings, eval_metrics, widget=None):
    """README.md text for a model folder: a model fine-tuned here, or a QA checkpoint evaluated or packaged as it is.

    run: `RunFacts`; settings: the `QASettings` saved in the model's config (the pipeline's windows, no-answer
    threshold and calibrator); eval_metrics: evaluation's metrics (`eval_*`), empty when there are none yet.
    widget: {"text": question, "context": context} for the Hub's inference widget, or None.
    """
    given_base = run.base_model
    base = base_model_id(given_base)
    license_id = base_model_license(given_base, run.token)
    head_name = settings.decoder
    scoring = ("multispanqa" if "eval_em_f1" in eval_metrics else
               "squad_v2" if settings.version_2_with_negative else "squad")
    data = ModelCardData(
        base_model=base,
        datasets=[run.hub_dataset] if run.hub_dataset else None,
        license=license_id,
        library_name="transformers",
        pipeline_tag="question-answering",
        tags=["question-answering", scoring, head_name, "spanbert-qa"],
        metrics=[scoring],
        model_name=run.model_id.split("/")[-1],
        eval_results=eval_results(run.eval_data, eval_metrics) or None,
        widget=[widget] if widget else None,
    )
    base_line = (f"`{base}`" if base else
                 f"a local model folder (`{os.path.basename(os.path.normpath(given_base))}`) whose Hub id is not known, "
                 "so the metadata names no base model")
    if run.fine_tuned:
        origin = f"fine-tuned from {base_line} with spanbert-qa on {run.train_data.label}."
    else:  # a QA checkpoint written as a model folder by an evaluation-only run: its weights are the checkpoint's
        origin = (f"the QA checkpoint {base_line} as it is, not fine-tuned here: spanbert-qa "
                  f"{'evaluated it and ' if eval_metrics else ''}added the pipeline below (its code and settings) "
                  "and this card.")
    results = [(name, round(float(eval_metrics[f"eval_{name}"]), 2)) for name in REPORTED_METRICS
               if f"eval_{name}" in eval_metrics]
    evaluation = (
        f"On {run.eval_data.label} "
        f"({eval_metrics.get('eval_questions', 'n/a')} questions, {scoring} scoring):\n\n"
        + table(("metric", "value"), results) if results else "No evaluation results yet."
    )
    stored = settings.to_config()
    setting_rows = [(f"`{name}`: {meaning}", stored[name]) for name, meaning in PIPELINE_SETTINGS.items()]
    training = (f"\n## Training hyperparameters\n\n{table(('hyperparameter', 'value'), run.hyperparameters)}\n"
                if run.fine_tuned else "")
    calibrator = settings.calibrator
    calibration = (f"\nEvery answer also carries `probability`, the chance that it is right, from a calibrator "
                   f"fitted on {calibrator.questions} evaluation questions (spanbert-qa `--calibrate`; "
                   f"expected calibration error {eval_metrics['eval_calibrated_ece']:.3f} by cross-validation, "
                   f"{eval_metrics['eval_raw_ece']:.3f} for the raw n-best probability).\n"
                   if calibrator and "eval_calibrated_ece" in eval_metrics else "")
    old_pipeline = ("\nOn transformers < 5.3 the library's own `question-answering` pipeline also serves this model "
                    "(without `trust_remote_code`).\n" if head_name == "span" else "")
    body = f"""
# {run.model_id.split("/")[-1]}

Extractive question answering ({HEAD_WORDS.get(head_name, f"{head_name} head")}), {origin}

## Use

```python
from transformers import pipeline

qa = pipeline("question-answering", model="{run.model_id}", trust_remote_code=True)
qa(question="...", context="...")
```

The pipeline's code (`qa_pipeline.py` and the modules it imports) is part of this repo: transformers 5 runs it with
`trust_remote_code=True`, and reads its settings from `config.json`:

{table(("setting", "value"), setting_rows)}
{calibration}{old_pipeline}
## Serving

The Hub's hosted inference widget and serverless inference run no custom code, so they cannot answer with this
model. An [Inference Endpoint](https://huggingface.co/docs/inference-endpoints) can: this repo's `handler.py`
(`EndpointHandler`) is the custom handler it loads, and it answers
`{{"inputs": {{"question": "...", "context": "..."}}, "parameters": {{"top_k": 3}}}}` (or a list of inputs) as the
pipeline does. Anywhere else, run the pipeline above.

## Evaluation

{evaluation}
{training}
## License

The base model is licensed `{license_id}`; this fine-tuned model inherits its terms.
"""
    return f"---\n{data.to_yaml()}\n---\n{body}"
