"""The train / evaluate / predict sequence shared by run_qa.py and run_qa_crf.py.

A script describes its head (how to load the model, which labels it trains on, how its window outputs become
answer candidates) and calls `main(head)`; everything else (arguments, data, windows, trainer, metric, output
files, model card, Hub) is this one sequence.
"""

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import datasets
import evaluate
import torch
import transformers
from transformers import HfArgumentParser, set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import sort_checkpoints
from transformers.utils import CONFIG_NAME

import model_card
from metrics.multispanqa.compute_score import multispan_scores
from qa_data import QADataError, labelled, load_questions, multi_span, read_json_file, with_unanswerable_copies
from qa_decoding import head_of
from qa_windows import WindowCollator
from tokenizer_casing import CheckpointError, load_tokenizer
from trainer_qa import HubPushError, QATrainingArguments, QuestionAnsweringTrainer
from utils_qa import (
    CALIBRATION_FOLDS,
    MIN_CALIBRATION_QUESTIONS,
    OutputError,
    calibration_evidence,
    calibration_report,
    column,
    eval_features,
    evaluation_candidates,
    padded_offsets,
    question_predictions,
    train_features,
    write_atomically,
    write_json_atomically,
    write_prediction_files,
)
from window_cache import cached_windows, windows_key

logger = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
METRIC_DIR = os.path.join(HERE, "metrics", "squad_v2")
# The pipeline's code, saved into every model folder so that pipeline("question-answering") loads it, and the
# Inference Endpoints handler that serves it.
PIPELINE_FILES = tuple(os.path.join(HERE, name) for name in ("qa_pipeline.py", "qa_windows.py", "qa_decoding.py",
                                                             "span_decoding.py", "calibration.py", "handler.py"))
PIPELINE_ENTRY = {
    "question-answering": {"impl": "qa_pipeline.QuestionAnsweringPipeline", "pt": ["AutoModelForQuestionAnswering"], "type": "text"}
}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "Checkpoint to fine-tune: a Hub id or a local folder."})
    config_name: str | None = field(default=None, metadata={"help": "Config to use instead of the model's."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer to use instead of the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub downloads are stored."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the model on the Hub."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the one `hf auth login` stored)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub."})
    do_lower_case: bool | None = field(
        default=None,
        metadata={"help": "Lowercase the input (default: as the tokenizer's files say); SpanBERT and other cased "
                          "checkpoints whose Hub repo has only vocab.txt need --do_lower_case false"},
    )
    emission_relu: bool | None = field(
        default=None, metadata={"help": "run_qa_crf.py: ReLU on the CRF emissions, as the original notebook had "
                                        "(default: as a CRF checkpoint's config says, else off)."}
    )
    widget_question: str | None = field(
        default=None, metadata={"help": "Model card: the question the Hub's inference widget offers (with "
                                        "--widget_context; default: the first answerable evaluation question)."}
    )
    widget_context: str | None = field(default=None, metadata={"help": "Model card: the widget question's context."})

    def __post_init__(self):
        if (self.widget_question is None) != (self.widget_context is None):
            raise ValueError("--widget_question and --widget_context go together: give both or neither.")


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset, e.g. rajpurkar/squad_v2."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of the Hub dataset."})
    train_file: str | None = field(
        default=None,
        metadata={"help": "SQuAD JSON (.json/.json.gz), MRQA (.jsonl/.jsonl.gz) or flat json/jsonl/parquet/csv."},
    )
    validation_file: str | None = field(default=None, metadata={"help": "Evaluation questions, same formats."})
    test_file: str | None = field(default=None, metadata={"help": "Questions to predict, same formats."})
    question_column_name: str = field(
        default="question", metadata={"help": "Column of the questions in a Hub dataset or flat file."}
    )
    context_column_name: str = field(
        default="context", metadata={"help": "Column of the contexts in a Hub dataset or flat file."}
    )
    answer_column_name: str = field(
        default="answers",
        metadata={"help": "Column of the answers ({text: [...], answer_start: [...]}) in a Hub dataset or flat file."},
    )
    overwrite_cache: bool = field(
        default=False, metadata={"help": "Tokenize the windows again rather than read them from the cache (the "
                                         "datasets cache, or --cache_dir, under spanbert_qa_windows/)."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes that tokenize."})
    max_seq_length: int = field(default=384, metadata={"help": "Tokens per window (question + context + specials)."})
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every window to max_seq_length (default: pad each batch to its longest)."}
    )
    pad_to_multiple_of: int | None = field(
        default=None,
        metadata={"help": "Pad each batch to a multiple of this many tokens (default: training batches to a multiple "
                          "of 32, evaluation batches, sorted by length, to their longest window). Fewer batch shapes "
                          "fragment the allocator less: 32 keeps a MiniLM training epoch's peak RSS a quarter lower "
                          "than padding to the longest (see the README's Speed section)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training questions."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation questions."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only the first N test questions."})
    version_2_with_negative: bool = field(default=False, metadata={"help": "SQuAD v2: some questions have no answer."})
    null_score_diff_threshold: float | None = field(
        default=None,
        metadata={"help": "Answer '' when null score - best span score exceeds this (SQuAD v2; default 0.0). A "
                          "training run saves it in the model's config for the pipeline or, when it is not given, "
                          "the threshold that maximised F1 at evaluation."},
    )
    threshold_given: bool = field(init=False, default=False)
    doc_stride: int = field(default=128, metadata={"help": "Overlap, in tokens, between consecutive windows."})
    n_best_size: int = field(default=20, metadata={"help": "Answers listed per question in the n-best file (the "
                                                           "best answers are found exactly whatever this is)."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer, in tokens (both heads)."})
    calibrate: bool = field(
        default=False,
        metadata={"help": "SQuAD v2 with --do_eval: fit a calibrator of P(answer right) on the evaluation questions, "
                          f"at least {MIN_CALIBRATION_QUESTIONS} (its figures by {CALIBRATION_FOLDS}-fold cross-validation "
                          "in eval_results.json and eval_calibration.json) and store it in the model's config: the "
                          "pipeline then returns a `probability` with every answer."},
    )
    unanswerable_cuts: float = field(
        default=0.0,
        metadata={"help": "SQuAD v2 training: add, for this fraction of the answerable training questions, an "
                          "unanswerable copy whose context lacks the sentences holding the answer."},
    )
    unanswerable_pairs: float = field(
        default=0.0,
        metadata={"help": "SQuAD v2 training: add, for this fraction of the answerable training questions, an "
                          "unanswerable copy asked of another paragraph of the same article."},
    )
    unanswerable_edits: float = field(
        default=0.0,
        metadata={"help": "SQuAD v2 training: add, for this fraction of the answerable training questions, an "
                          "unanswerable copy whose question is edited (negated, another number or name)."},
    )

    def __post_init__(self):
        self.threshold_given = self.null_score_diff_threshold is not None
        if not self.threshold_given:
            self.null_score_diff_threshold = 0.0
        if self.doc_stride >= self.max_seq_length // 2:
            raise ValueError(f"--doc_stride {self.doc_stride} must be less than half of --max_seq_length {self.max_seq_length}.")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"--pad_to_multiple_of {self.pad_to_multiple_of} must be a positive number of tokens.")
        fractions = self.unanswerable_fractions()
        if sum(fractions) and not self.version_2_with_negative:
            raise ValueError("--unanswerable_cuts/--unanswerable_pairs/--unanswerable_edits add unanswerable "
                             "questions: they need --version_2_with_negative.")
        if min(fractions) < 0 or sum(fractions) > 1:
            raise ValueError("--unanswerable_cuts, --unanswerable_pairs and --unanswerable_edits are fractions of the "
                             "answerable questions: each at least 0, together at most 1.")

    def unanswerable_fractions(self):
        """(cuts, pairs, edits): the fractions of answerable training questions given each kind of unanswerable copy."""
        return self.unanswerable_cuts, self.unanswerable_pairs, self.unanswerable_edits


@dataclass(frozen=True)
class Head:
    """What distinguishes one QA model family from another in this sequence.

    name: the head's decoder in `qa_decoding` ("span" or "crf"), saved in the model's config.
    load_model: `(model_args, data_args, hub_kwargs) -> PreTrainedModel`, set up to decode as the arguments say.
    label_scheme: "span" (start/end positions) or "bio" (a tag per token).
    """

    name: str
    load_model: Callable
    label_scheme: str


# Defaults of this package that differ from TrainingArguments': batches of windows of similar length pad less;
# pinned memory only helps copies to a GPU.
TRAINING_DEFAULTS = {"train_sampling_strategy": "group_by_length", "dataloader_pin_memory": torch.cuda.is_available()}
# Training batches come in random widths, a few hundred over an epoch, and the holes each step's freed tensors leave
# fit no later step's: rounded up to 32 tokens they take a dozen widths, and glibc keeps a third as much freed memory
# (bench/bench_train_memory.py). Evaluation's length-sorted batches reuse their memory already.
TRAIN_PAD_MULTIPLE = 32


def parse_args(argv):
    """(ModelArguments, DataTrainingArguments, QATrainingArguments) from a JSON config file or the command line.

    The package's `TRAINING_DEFAULTS` are the parser's defaults: whatever the user gives, in any spelling the parser
    accepts (`--train_sampling_strategy`, `--train-sampling-strategy`, `--no_dataloader_pin_memory`, a key of the
    JSON file), overrides them."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, QATrainingArguments))
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_dict({**TRAINING_DEFAULTS, **read_json_file(argv[0])})
    parser.set_defaults(**TRAINING_DEFAULTS)
    return parser.parse_args_into_dataclasses(args=argv)


def setup_logging(training_args):
    """The project's messages at INFO on the main process (WARNING elsewhere) unless --log_level says otherwise;
    transformers and datasets at the level the Trainer would use."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    library_level = training_args.get_process_log_level()
    level = library_level if training_args.log_level != "passive" else (
        logging.INFO if training_args.should_log else logging.WARNING)
    for name in (__name__, "qa_data", "qa_windows", "utils_qa", "trainer_qa", "model_card", "squad_compute_score",
                 "tokenizer_casing"):
        logging.getLogger(name).setLevel(level)
    datasets.utils.logging.set_verbosity(library_level)
    transformers.utils.logging.set_verbosity(library_level)


def complete_checkpoints(output_dir):
    """Checkpoint folders in `output_dir`, by step, whose trainer state (the file the Trainer writes last) reads
    back; a run killed while saving leaves a checkpoint without it."""
    complete = []
    for path in sort_checkpoints(output_dir):
        try:
            with open(os.path.join(path, TRAINER_STATE_NAME), encoding="utf-8") as f:
                json.load(f)
        except (OSError, ValueError):
            logger.warning(f"Ignoring {path}: it has no complete {TRAINER_STATE_NAME} (a save was interrupted)")
            continue
        complete.append(path)
    return complete


def checkpoint_to_resume(training_args):
    """The checkpoint training resumes from: the one asked for, else the last complete one in output_dir, else
    None."""
    if training_args.resume_from_checkpoint or not training_args.do_train:
        return training_args.resume_from_checkpoint
    if not os.path.isdir(training_args.output_dir):
        return None
    checkpoints = complete_checkpoints(training_args.output_dir)
    if not checkpoints:
        return None
    logger.info(f"Resuming from {checkpoints[-1]}, the last checkpoint in {training_args.output_dir}")
    return checkpoints[-1]


def first(questions, limit):
    return questions.select(range(min(limit, len(questions)))) if limit is not None else questions


def windows(questions, build, kind, tokenizer, cache_dir, training_args, data_args):
    """Windows of `questions` built by `build(batch, indices)` (`kind`: what they are for, the training labels or the
    split, a part of the cache key): tokenized by the main process and cached on disk (`window_cache`), where the
    other processes of a launch and later runs find them; --overwrite_cache tokenizes again."""
    settings = {"kind": kind, **{name: getattr(data_args, name) for name in ("max_seq_length", "doc_stride",
                                                                             "pad_to_max_length")}}
    key = windows_key(questions, tokenizer, settings)
    description = f"{kind} windows"
    with training_args.main_process_first(desc=description):
        # the other processes read what the main process has just written, even when it was asked to tokenize again
        recompute = data_args.overwrite_cache and training_args.local_process_index == 0
        return cached_windows(questions, build, key, cache_dir, recompute, data_args.preprocessing_num_workers,
                              description)


def references(questions, data_args):
    """Gold answers in the metric's format (an unanswerable question's are empty), or None for questions that came
    without answers (an unlabelled test set), and, without --version_2_with_negative, for questions some of which
    have empty answers (SQuAD v1.1 scores answerable questions only; unlabelled test files often hold `"answers":
    []`)."""
    if not labelled(questions):
        return None
    answers = column(questions, "answers")
    if not data_args.version_2_with_negative:
        empty = sum(not a["text"] for a in answers)
        if empty:
            if empty < len(answers):
                logger.warning(f"{empty} of {len(answers)} questions have no answer: predictions are written for "
                               f"every question and scored for none (--version_2_with_negative scores them all)")
            return None
    return [{"id": qid, "answers": a} for qid, a in zip(column(questions, "id"), answers)]


def metric_function(data_args, multi=False):
    """`(metric_predictions, references) -> dict`: the project's offline SQuAD v1.1/v2.0 metric, or MultiSpanQA's
    for multi-span questions (`multi`).

    For SQuAD v2 the metric is given the raw null odds (null score - best span score) as `no_answer_probability`
    and --null_score_diff_threshold as its threshold, so its best_exact_thresh/best_f1_thresh are in null-odds
    units and, applied as --null_score_diff_threshold, give back best_exact/best_f1 exactly; they are also
    reported under their historical names best_exact_null_score_diff_threshold/best_f1_null_score_diff_threshold.
    """
    if multi:
        return lambda predictions, refs: multispan_scores({p["id"]: p["spans"] for p in predictions},
                                                          {r["id"]: r["answers"]["text"] for r in refs})
    if not data_args.version_2_with_negative:
        metric = evaluate.load(METRIC_DIR, "squad")
        return lambda predictions, refs: metric.compute(predictions=predictions, references=refs)
    metric = evaluate.load(METRIC_DIR)

    def compute(predictions, refs):
        scores = metric.compute(
            predictions=predictions, references=refs,
            no_answer_threshold=data_args.null_score_diff_threshold,
        )
        for name in ("best_exact", "best_f1"):
            scores[f"{name}_null_score_diff_threshold"] = scores[f"{name}_thresh"]
        return scores

    return compute


def qa_settings(head, data_args):
    """Settings saved in the model's config: the pipeline cuts windows and decodes answers as evaluation did."""
    names = ("max_seq_length", "doc_stride", "max_answer_length", "n_best_size", "null_score_diff_threshold",
             "version_2_with_negative")
    return {"head": head.name, **{name: getattr(data_args, name) for name in names}}


def keep_tuned_threshold(config, metrics):
    """Put the no-answer threshold that maximised F1 at evaluation in the model's config (for the pipeline);
    whether there was one (SQuAD v2 scoring)."""
    tuned = metrics.get("eval_best_f1_null_score_diff_threshold")
    if tuned is None:
        return False
    config.qa_settings = {**config.qa_settings, "null_score_diff_threshold": tuned}
    logger.info(f"Saved the F1-best no-answer threshold {tuned:.4f} in the model's config")
    return True


def check_calibration_flags(training_args, data_args):
    """--calibrate fits on SQuAD v2 evaluation questions: QADataError without --do_eval and
    --version_2_with_negative, before anything is loaded."""
    if data_args.calibrate and not (training_args.do_eval and data_args.version_2_with_negative):
        raise QADataError("--calibrate fits on the evaluation questions: it needs --do_eval and SQuAD v2 data "
                          "(--version_2_with_negative)")


def check_head_flags(head, model_args, training_args):
    """The CRF's own flags given to a span model: QADataError (it has no CRF), before anything is loaded."""
    given = [flag for flag, value in (("--emission_relu", model_args.emission_relu),
                                      ("--crf_learning_rate", training_args.crf_learning_rate))
             if value is not None]
    if head.label_scheme != "bio" and given:
        raise QADataError(f"{' and '.join(given)}: run_qa_crf.py's flags; a span model has no CRF")


def settle_multi_span(head, model):
    """Training on multi-span answers: a CRF model learns every span and decodes answers of any number of spans
    (its config's `multi_span`); a span model learns the first span of each answer, one span per question."""
    if head.label_scheme == "bio":
        model.config.multi_span = True
        logger.info("Multi-span training data: every span is tagged, and the model decodes answers of any number of "
                    "spans")
    else:
        logger.warning("Multi-span training data: a span model learns the first span of each answer and answers with "
                       "one span (run_qa_crf.py answers with all of them)")


def check_calibration_data(questions, data_args):
    """--calibrate needs enough evaluation questions (which the reader has checked carry answers): QADataError
    otherwise, before any window is cut."""
    source = data_args.validation_file or data_args.dataset_name
    if multi_span(questions):
        raise QADataError(f"{source}: --calibrate calibrates single answers (SQuAD v2); these questions' answers are "
                          "multi-span")
    if len(questions) < MIN_CALIBRATION_QUESTIONS:
        raise QADataError(f"{source}: --calibrate needs at least {MIN_CALIBRATION_QUESTIONS} evaluation questions "
                          f"to fit and measure a calibrator ({CALIBRATION_FOLDS} folds of 20 or more); it has "
                          f"{len(questions)}" + (" (--max_eval_samples)" if data_args.max_eval_samples else ""))


def calibrated(config, examples, result, refs, training_args):
    """Fit the calibrator on the evaluated questions and store it in `config.qa_settings`; write its reliability
    bins (cross-validated calibrated probability, raw n-best probability) to eval_calibration.json. Returns its
    metrics, prefixed as evaluation's."""
    calibrator, metrics, bins = calibration_report(calibration_evidence(result, refs, column(examples, "context")))
    config.qa_settings = {**config.qa_settings, "calibrator": calibrator.to_settings(metrics["calibration_questions"])}
    logger.info(f"Calibrator fitted on {metrics['calibration_questions']} questions: expected calibration error "
                f"{metrics['calibrated_ece']:.4f} calibrated, {metrics['raw_ece']:.4f} raw (cross-validated)")
    if training_args.should_save:
        os.makedirs(training_args.output_dir, exist_ok=True)
        write_json_atomically(os.path.join(training_args.output_dir, "eval_calibration.json"),
                              {**metrics, "calibrator": config.qa_settings["calibrator"], "bins": bins})
    return {f"eval_{name}": value for name, value in metrics.items()}


def rewrite_saved_config(trainer):
    """Write the model's config again into the saved model folder (after evaluation has tuned its threshold)."""
    if trainer.is_world_process_zero():
        # config.save_pretrained writes config.json in place; the model folder is already saved (auto_map, bundled
        # code), so only the JSON is rewritten, as save_pretrained would (validated, diff against the defaults),
        # under a temporary name and renamed
        config = trainer.model.config
        if hasattr(config, "validate"):
            config.validate()
        write_atomically(os.path.join(trainer.args.output_dir, CONFIG_NAME),
                         config.to_json_string(use_diff=True).encode("utf-8"))


def loaded_model(head, model_args, data_args, hub_kwargs):
    """`head.load_model`, or CheckpointError naming the checkpoint and why it cannot be loaded (no PyTorch weights,
    only ONNX ones, an architecture transformers has no question-answering model for, ...)."""
    try:
        return head.load_model(model_args, data_args, hub_kwargs)
    except (OSError, ValueError) as err:
        path = model_args.model_name_or_path
        onnx_only = os.path.isdir(path) and any(name.endswith(".onnx") for name in os.listdir(path)) and not any(
            name.endswith((".safetensors", ".bin")) for name in os.listdir(path))
        hint = (" It holds only ONNX weights, which can answer through ONNX Runtime but not be evaluated or "
                "fine-tuned here: give the PyTorch checkpoint it was exported from." if onnx_only else "")
        raise CheckpointError(f"{path}: cannot load it as a {head.name} QA model: {err}{hint}") from err


def has_qa_head(config):
    """Whether the checkpoint a model was loaded from held a question-answering head (its config names a
    `*ForQuestionAnswering` architecture), rather than a bare encoder whose head the loader initialised."""
    return any(name.endswith("ForQuestionAnswering") for name in config.architectures or ())


def model_folder_of_checkpoint(model, model_args, training_args):
    """Whether a run that does not train writes the checkpoint it loaded as a model folder in --output_dir (its
    tensors as loaded, tokenizer, config with the pipeline settings, pipeline code, card): only a checkpoint that
    holds a QA head, and not over the checkpoint's own folder. A bare encoder's head would be random: evaluating it
    warns, and packaging it alone is refused."""
    if training_args.do_train:
        return False
    checkpoint = model_args.model_name_or_path
    evaluates = training_args.do_eval or training_args.do_predict
    if not has_qa_head(model.config):
        problem = (f"{checkpoint} has no question-answering head (its architectures: {model.config.architectures}):"
                   " its QA head would be freshly initialised, random")
        if not evaluates:
            raise CheckpointError(f"{problem}; there is no model to write. Fine-tune it with --do_train, or give a "
                                  "QA checkpoint.")
        logger.warning(f"{problem}, so this run's answers and figures mean nothing and no model folder is written. "
                       "Fine-tune it with --do_train, or give a QA checkpoint.")
        return False
    output_dir = training_args.output_dir
    if os.path.isdir(checkpoint) and os.path.isdir(output_dir) and os.path.samefile(checkpoint, output_dir):
        logger.info(f"{output_dir} is the checkpoint's own folder: its model files are left as they are")
        return False
    logger.info(f"Writing {checkpoint} as a model folder in {output_dir} (not fine-tuned: "
                f"{'evaluated' if evaluates else 'packaged'} only)")
    return True


def widget_example(model_args, chosen):
    """The model card's widget example: the one given, else the first answerable evaluation (else training)
    question; None without either."""
    if model_args.widget_question is not None:
        return {"text": model_args.widget_question, "context": model_args.widget_context}
    questions = chosen.get("validation", chosen.get("train"))
    for row in questions if questions is not None else ():
        if row["answers"]["text"]:
            return {"text": row["question"], "context": row["context"]}
    return None


def save_metrics(trainer, split, metrics):
    """`{split}_results.json` and `all_results.json`, written atomically by the main process."""
    trainer.log_metrics(split, metrics)
    if not trainer.is_world_process_zero():
        return
    os.makedirs(trainer.args.output_dir, exist_ok=True)
    write_json_atomically(os.path.join(trainer.args.output_dir, f"{split}_results.json"), metrics)
    all_path = os.path.join(trainer.args.output_dir, "all_results.json")
    combined = {}
    if os.path.exists(all_path):
        with open(all_path, encoding="utf-8") as f:
            combined = json.load(f)
    combined.update(metrics)
    write_json_atomically(all_path, combined)


def run(head, model_args, data_args, training_args):
    """Train, evaluate and predict as the arguments ask; returns {split: metrics}."""
    setup_logging(training_args)
    logger.warning(f"Process rank {training_args.process_index} of world size {training_args.world_size} on "
                   f"{training_args.device}")
    logger.info(f"Training/evaluation parameters {training_args}")
    check_calibration_flags(training_args, data_args)
    check_head_flags(head, model_args, training_args)
    resume_from = checkpoint_to_resume(training_args)
    set_seed(training_args.seed)

    hub_kwargs = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision,
                  "token": model_args.token, "trust_remote_code": model_args.trust_remote_code}
    tokenizer = load_tokenizer(model_args, hub_kwargs)
    model = loaded_model(head, model_args, data_args, hub_kwargs)
    packaging = model_folder_of_checkpoint(model, model_args, training_args)
    model.config.custom_pipelines = PIPELINE_ENTRY
    model.config.qa_settings = qa_settings(head, data_args)
    questions = load_questions(data_args, model_args.cache_dir)

    every_span = training_args.do_train and "train" in questions and multi_span(questions["train"])
    if every_span:
        settle_multi_span(head, model)

    def build_train(batch, indices):
        return train_features(batch, indices, tokenizer, data_args, head.label_scheme, every_span)

    def build_eval(batch, indices):
        return eval_features(batch, indices, tokenizer, data_args)

    splits = {"train": ("do_train", data_args.max_train_samples), "validation": ("do_eval", data_args.max_eval_samples),
              "test": ("do_predict", data_args.max_predict_samples)}
    chosen = {}
    for split, (flag, limit) in splits.items():
        if getattr(training_args, flag):
            if split not in questions:
                raise QADataError(f"--{flag} needs {split} questions: give --{split}_file or a dataset with that split")
            chosen[split] = first(questions[split], limit)
    if data_args.calibrate:
        check_calibration_data(chosen["validation"], data_args)
        if head_of(model.config) == "multi_span":
            raise CheckpointError(f"{model_args.model_name_or_path}: --calibrate calibrates single answers; this model "
                                  "answers with several spans")
    if "train" in chosen and sum(data_args.unanswerable_fractions()):
        chosen["train"] = with_unanswerable_copies(chosen["train"], *data_args.unanswerable_fractions(),
                                                   seed=training_args.seed)
    train_windows = None
    if "train" in chosen:
        labels = f"{head.label_scheme} labels" + (", every span" if every_span else "")
        train_windows = windows(chosen["train"], build_train, f"train ({labels})", tokenizer,
                                model_args.cache_dir, training_args, data_args)
    # Longest windows first: batches of similar width pad little, and the widest batch's memory, taken first, is
    # reused by every narrower one after it (widening batches leave freed blocks that fit no later tensor:
    # bench/bench_eval_memory.py measured run_qa.py on 2,000 dev questions at +720 MB over 10 questions
    # shortest-first, +255 MB longest-first).
    eval_windows = {
        split: windows(chosen[split], build_eval, split, tokenizer, model_args.cache_dir, training_args,
                       data_args).sort("length", reverse=True)
        for split in ("validation", "test") if split in chosen
    }

    evaluated = {}  # prefix: (examples, predictions, references) of its last evaluation, for --calibrate

    def post_process(examples, features, outputs, prefix):
        offsets = padded_offsets(features)
        candidates = evaluation_candidates(head_of(model.config), outputs, features, offsets, data_args)
        result = question_predictions(examples, features, offsets, candidates, data_args), references(examples, data_args)
        evaluated[prefix] = (examples, *result)
        return result

    trainer = QuestionAnsweringTrainer(
        model=model,
        args=training_args,
        train_dataset=train_windows,
        eval_dataset=eval_windows.get("validation"),
        eval_examples=chosen.get("validation"),
        processing_class=tokenizer,
        data_collator=WindowCollator(tokenizer.pad_token_id, data_args.pad_to_multiple_of or TRAIN_PAD_MULTIPLE),
        eval_data_collator=WindowCollator(tokenizer.pad_token_id, data_args.pad_to_multiple_of),
        post_process_function=post_process,
        write_function=lambda result, prefix: write_prediction_files(result, training_args.output_dir, prefix),
        compute_metrics=metric_function(data_args, "validation" in chosen and multi_span(chosen["validation"])),
        model_card=lambda: model_card.render(head_of(model.config), model_args, data_args, training_args, all_metrics,
                                             model.config.qa_settings, widget_example(model_args, chosen)),
        bundled_files=PIPELINE_FILES,
    )

    all_metrics = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=resume_from)
        trainer.save_model()
        metrics = dict(result.metrics, train_questions=len(chosen["train"]), train_windows=len(train_windows))
        save_metrics(trainer, "train", metrics)
        trainer.save_state()
        all_metrics["train"] = metrics
    if training_args.do_eval:
        metrics = trainer.evaluate()
        if data_args.calibrate:
            metrics.update(calibrated(model.config, *evaluated["eval"], training_args))
        save_metrics(trainer, "eval", metrics)
        tuned = not data_args.threshold_given and keep_tuned_threshold(model.config, metrics)
        if training_args.do_train and (tuned or data_args.calibrate):
            rewrite_saved_config(trainer)
        all_metrics["eval"] = metrics
    if training_args.do_predict:
        _, metrics = trainer.predict(eval_windows["test"], chosen["test"])
        save_metrics(trainer, "predict", metrics)
        all_metrics["predict"] = metrics
    if packaging:
        trainer.save_model()
    if (training_args.do_train or packaging) and trainer.is_world_process_zero():
        trainer.create_model_card()
    try:
        if training_args.push_to_hub:
            trainer.push_to_hub()
    finally:
        trainer.end()
    return all_metrics


def main(head, argv=None):
    """Entry point of a run script; argument and data errors end the run with their message instead of a
    traceback."""
    try:
        model_args, data_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    try:
        return run(head, model_args, data_args, training_args)
    except (QADataError, CheckpointError, HubPushError, OutputError) as err:
        logger.error(str(err))
        raise SystemExit(f"error: {err}") from None
