"""The model card (README.md) of a fine-tuned model folder: base model and its license, data, metrics,
hyperparameters and how to use the model. Rendered offline; the Hub is asked for the base model's license only
when the base model is neither a local folder with a card nor known here."""

import logging
import os

from huggingface_hub import EvalResult, ModelCard, ModelCardData

logger = logging.getLogger(__name__)

# Licenses of base models whose cards users may not have at hand.
KNOWN_LICENSES = {
    "SpanBERT/spanbert-base-cased": "cc-by-nc-4.0",
    "SpanBERT/spanbert-large-cased": "cc-by-nc-4.0",
}
HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
    "num_train_epochs", "max_steps", "warmup_steps", "weight_decay", "lr_scheduler_type", "optim", "seed",
    "bf16", "fp16", "metric_for_best_model", "load_best_model_at_end",
)
DATA_SETTINGS = ("max_seq_length", "doc_stride", "max_answer_length", "n_best_size", "null_score_diff_threshold",
                 "version_2_with_negative", "max_train_samples")
REPORTED_METRICS = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1",
                    "exact_match")


def base_model_license(name_or_path, token=None):
    """License id of the base model: from a local folder's card, a known model, or the Hub; "unknown" otherwise."""
    readme = os.path.join(name_or_path, "README.md")
    if os.path.isfile(readme):
        return ModelCard.load(readme).data.license or "unknown"
    if name_or_path in KNOWN_LICENSES:
        return KNOWN_LICENSES[name_or_path]
    try:
        from huggingface_hub import model_info

        return model_info(name_or_path, token=token).card_data.license or "unknown"
    except Exception as err:  # offline, private or missing: the card says so instead of failing the run
        logger.warning(f"Could not look up the license of {name_or_path}: {err}")
        return "unknown"


def dataset_label(data_args):
    if data_args.dataset_name:
        return data_args.dataset_name
    return os.path.basename(data_args.train_file or data_args.validation_file or "local files")


def eval_results(head_name, data_args, metrics):
    """Hub `model-index` entries for the evaluation metrics."""
    return [
        EvalResult(
            task_type="question-answering", dataset_type=dataset_label(data_args), dataset_name=dataset_label(data_args),
            dataset_split="validation", metric_type=name, metric_name=name, metric_value=round(float(metrics[f"eval_{name}"]), 3),
        )
        for name in REPORTED_METRICS if f"eval_{name}" in metrics
    ]


def table(rows):
    return "| | |\n|---|---|\n" + "\n".join(f"| {key} | {value} |" for key, value in rows)


def render(head_name, model_args, data_args, training_args, all_metrics):
    """README.md text for the model folder that `training_args.output_dir` holds."""
    base = model_args.model_name_or_path
    license_id = base_model_license(base, model_args.token)
    eval_metrics = all_metrics.get("eval", {})
    model_name = os.path.basename(os.path.normpath(training_args.output_dir))
    data = ModelCardData(
        base_model=base if not os.path.isdir(base) else None,
        datasets=[data_args.dataset_name] if data_args.dataset_name else None,
        license=license_id,
        library_name="transformers",
        pipeline_tag="question-answering",
        tags=["question-answering", "squad_v2" if data_args.version_2_with_negative else "squad", head_name],
        metrics=["squad_v2" if data_args.version_2_with_negative else "squad"],
        model_name=model_name,
        eval_results=eval_results(head_name, data_args, eval_metrics) or None,
    )
    hyper = [(name, getattr(training_args, name)) for name in HYPERPARAMETERS]
    hyper += [(name, getattr(data_args, name)) for name in DATA_SETTINGS]
    results = [(name, round(float(eval_metrics[f"eval_{name}"]), 2)) for name in REPORTED_METRICS if f"eval_{name}" in eval_metrics]
    body = f"""
# {model_name}

Extractive question answering ({head_name} head), fine-tuned from `{base}` with spanbert-qa on
{dataset_label(data_args)}.

## Use

```python
from transformers import pipeline

qa = pipeline("question-answering", model="{model_name}", trust_remote_code=True)
qa(question="...", context="...")
```

## Evaluation ({dataset_label(data_args)}, {eval_metrics.get('eval_questions', 'n/a')} questions)

{table(results) if results else "No evaluation was run."}

## Training hyperparameters

{table(hyper)}

## License

The base model `{base}` is licensed `{license_id}`; this fine-tuned model inherits its terms.
"""
    return f"---\n{data.to_yaml()}\n---\n{body}"
