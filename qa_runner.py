"""The train / evaluate / predict sequence shared by run_qa.py and run_qa_crf.py.

A script describes its head (how to load the model, which labels it trains on, how its parameters group for their
learning rates) and calls `main(head)`. `run` is the sequence, one named phase a step, each returning what the next
needs: the checkpoint, the questions, the settings, the windows, the trainer, then training, evaluation and
calibration, prediction, and the model folder with its card, pushed to the Hub when asked.
"""

import dataclasses
import functools
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable

import datasets
import numpy as np
import transformers
from transformers import set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import sort_checkpoints

import model_card
from calibration_fitting import (CALIBRATION_FOLDS, MIN_CALIBRATION_QUESTIONS, MIN_FOLD_QUESTIONS, calibration_evidence,
                                 calibration_report, context_folds)
from metrics.multispanqa.compute_score import multispan_scores
from metrics.squad_v2.compute_score import squad_v1_scores, squad_v2_scores
from model_folder import PIPELINE_ENTRY, PIPELINE_FILES, requirements_txt
from model_folder.qa_decoding import ModelOutputError
from model_folder.qa_settings import CRF_MODEL_TYPE, head_mismatch
from model_folder.qa_windows import WindowCollator
from outputs import OutputError, save_metrics, write_config, write_json_atomically, write_prediction_files
from publishing import HubPushError
from qa_arguments import TRAIN_PAD_MULTIPLE, parse_args
from qa_data import QADataError, load_questions
from reader_data import top_from_gold_passage, with_distractors
from tokenizer_casing import CheckpointError, load_tokenizer
from trainer_qa import QuestionAnsweringTrainer, encoder_and_head
from unanswerable import with_unanswerable_copies
from utils_qa import (eval_features, evaluation_candidates, longest_first, padded_offsets, question_predictions,
                      train_features)
from window_cache import cached_windows, windows_key

logger = logging.getLogger(__name__)

# The project's loggers, which `setup_logging` sets to the run's level.
PROJECT_LOGGERS = (__name__, "qa_data", "unanswerable", "tokenizer_casing", "window_cache", "model_card", "outputs",
                   "publishing", "model_folder.qa_windows", "metrics.squad_v2.compute_score",
                   "metrics.multispanqa.compute_score")
# The splits a run reads, with the flag that asks for each and the argument that limits its questions.
SPLITS = {"train": ("do_train", "max_train_samples"), "validation": ("do_eval", "max_eval_samples"),
          "test": ("do_predict", "max_predict_samples")}


@dataclass(frozen=True)
class Head:
    """What distinguishes one QA model family from another in this sequence.

    name: the head's decoder in `model_folder.qa_decoding` ("span" or "crf"), saved in the model's config.
    load_model: `(model_args, data_args, hub_kwargs) -> PreTrainedModel`, set up to decode as the arguments say.
    label_scheme: "span" (start/end positions) or "bio" (a tag per token).
    parameter_groups: `(model) -> {role: parameters}`, the roles that train at learning rates of their own
        ("encoder", "head" and, for a CRF, "crf").
    """

    name: str
    load_model: Callable
    label_scheme: str
    parameter_groups: Callable = encoder_and_head


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
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level)
    datasets.utils.logging.set_verbosity(library_level)
    transformers.utils.logging.set_verbosity(library_level)


# --- before anything is read ---------------------------------------------------------------------------------------

def check_flags(head, model_args, data_args, training_args):
    """Flags that do not fit together: QADataError, before any model or data is read. --calibrate fits on SQuAD v2
    evaluation questions; the CRF's own flags have nothing to act on in a span model, nor --shared_norm in a CRF."""
    if data_args.calibrate and not (training_args.do_eval and data_args.version_2_with_negative):
        raise QADataError("--calibrate fits on the evaluation questions: it needs --do_eval and SQuAD v2 data "
                          "(--version_2_with_negative)")
    given = [flag for flag, value in (("--emission_relu", model_args.emission_relu),
                                      ("--crf_learning_rate", training_args.crf_learning_rate))
             if value is not None]
    if head.label_scheme != "bio" and given:
        raise QADataError(f"{' and '.join(given)}: run_qa_crf.py's flags; a span model has no CRF")
    if head.label_scheme != "span" and training_args.shared_norm:
        raise QADataError("--shared_norm normalises a span model's start / end scores; a CRF scores tag paths "
                          "(use run_qa.py)")


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


# --- the checkpoint ------------------------------------------------------------------------------------------------

def loaded_model(head, model_args, data_args, hub_kwargs):
    """(model, loading report) of `head.load_model`, or CheckpointError naming the checkpoint and why it cannot be
    loaded (no PyTorch weights, only ONNX ones, an architecture transformers has no question-answering model for,
    tensors of other shapes than its config's, ...)."""
    try:
        return head.load_model(model_args, data_args, hub_kwargs)
    except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: a tensor of another shape than the config's
        path = model_args.model_name_or_path
        onnx_only = os.path.isdir(path) and any(name.endswith(".onnx") for name in os.listdir(path)) and not any(
            name.endswith((".safetensors", ".bin")) for name in os.listdir(path))
        hint = (" It holds only ONNX weights, which can answer through ONNX Runtime but not be evaluated or "
                "fine-tuned here: give the PyTorch checkpoint it was exported from." if onnx_only else "")
        raise CheckpointError(f"{path}: cannot load it as a {head.name} QA model: {err}{hint}") from err


def has_qa_head(config):
    """Whether a config names a question-answering model (a `*ForQuestionAnswering` architecture)."""
    return any(name.endswith("ForQuestionAnswering") for name in config.architectures or ())


def listed(keys, shown=5):
    """The first `shown` of `keys`, and how many more there are."""
    return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def checked_weights(model, report, tokenizer, model_args, training_args):
    """Whether the checkpoint held the model's QA head, once its weights are checked against the model they were
    loaded into: CheckpointError where tensors of the encoder are missing (they would start random: weights that do
    not fit the config, an edited `model_type`, a layer lost), where the head's are missing from a checkpoint whose
    config names a QA model or from a run that does not train (unless --new_head says a fresh head is meant), and
    where the tokenizer has ids past the embeddings' rows (a tensor of another shape than the model's is as missing).
    Tensors the model has no place for are logged."""
    checkpoint, trains = model_args.model_name_or_path, training_args.do_train
    # a tensor of another shape than the model's is not loaded either: it starts random as a missing one does
    shapes = {name: f"{name} (its shape {tuple(ours)}, the model's {tuple(model_shape)})"
              for name, ours, model_shape in report.get("mismatched_keys", ())}
    missing = sorted({*report.get("missing_keys", ()), *shapes})
    encoder = [shapes.get(key, key) for key in missing if key.startswith(f"{model.base_model_prefix}.")]
    head = [shapes.get(key, key) for key in missing if not key.startswith(f"{model.base_model_prefix}.")]
    if encoder:
        raise CheckpointError(f"{checkpoint}: its weights lack {len(encoder)} tensor(s) of its {model.config.model_type}"
                              f" encoder ({listed(encoder)}), which would start random: weights and config do not fit")
    claims_head = has_qa_head(model.config)
    if head and not model_args.new_head and (claims_head or not trains):
        lacking = (f"its config names a QA model ({', '.join(model.config.architectures)}) but its weights lack"
                   if claims_head else "its weights have no QA head:")
        raise CheckpointError(f"{checkpoint}: {lacking} {listed(head)}, which would start random. Pass --new_head if "
                              "a fresh head is meant" + ("" if trains else " (and --do_train to train it)"))
    unexpected = sorted(report.get("unexpected_keys", ()))
    if unexpected:  # an encoder checkpoint's pretraining heads are expected; a QA checkpoint's extra tensors are not
        logger.log(logging.WARNING if claims_head else logging.INFO,
                   f"{checkpoint}: {len(unexpected)} tensor(s) of its weights have no place in the {type(model).__name__} "
                   f"and are not used: {listed(unexpected)}")
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise CheckpointError(f"{checkpoint}: its tokenizer has {len(tokenizer)} tokens but the model's embeddings "
                              f"{rows} rows, so ids from {rows} on have no embedding: give the tokenizer the model was "
                              "trained with (--tokenizer_name)")
    return not head


def model_folder_of_checkpoint(model, head_loaded, model_args, training_args):
    """Whether a run that does not train writes the checkpoint it loaded as a model folder in --output_dir (its
    tensors as loaded, tokenizer, config with the pipeline settings, pipeline code, card): only a checkpoint that
    held its QA head (`head_loaded`), and not over the checkpoint's own folder. A fresh head would be random:
    evaluating it (--new_head) warns, and packaging it alone is refused."""
    if training_args.do_train:
        return False
    checkpoint = model_args.model_name_or_path
    evaluates = training_args.do_eval or training_args.do_predict
    if not head_loaded:
        problem = f"{checkpoint} has no question-answering head: its QA head is freshly initialised, random"
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


def checkpoint(head, model_args, data_args, training_args):
    """(tokenizer, model, whether the run writes the checkpoint as a model folder) of --model_name_or_path, its
    weights checked (`checked_weights`)."""
    hub_kwargs = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision,
                  "token": model_args.token, "trust_remote_code": model_args.trust_remote_code}
    tokenizer = load_tokenizer(model_args.model_name_or_path, hub_kwargs, model_args.tokenizer_name,
                               model_args.config_name, model_args.do_lower_case)
    model, report = loaded_model(head, model_args, data_args, hub_kwargs)
    mismatch = head_mismatch(head.name, model.config.model_type)
    if mismatch:  # e.g. run_qa.py --trust_remote_code on a CRF folder, whose Auto class loads the CRF model
        script = "run_qa_crf.py" if model.config.model_type == CRF_MODEL_TYPE else "run_qa.py"
        raise CheckpointError(f"{model_args.model_name_or_path}: the head {mismatch}: run {script}")
    head_loaded = checked_weights(model, report, tokenizer, model_args, training_args)
    return tokenizer, model, model_folder_of_checkpoint(model, head_loaded, model_args, training_args)


# --- the questions and the settings ----------------------------------------------------------------------------------

def chosen_questions(data_args, training_args, cache_dir):
    """{split: QuestionSet} of the splits the run's flags ask for, each cut to its --max_*_samples, the training
    questions with the unanswerable copies asked for."""
    questions = load_questions(data_args.data_files(), data_args.dataset_name, data_args.dataset_config_name,
                               data_args.schema_columns(), data_args.version_2_with_negative, cache_dir)
    chosen = {}
    for split, (flag, limit) in SPLITS.items():
        if getattr(training_args, flag):
            if split not in questions:
                raise QADataError(f"--{flag} needs {split} questions: give --{split}_file or a dataset with that split")
            chosen[split] = questions[split].first(getattr(data_args, limit))
    if "train" in chosen:
        chosen["train"] = training_questions(chosen["train"], data_args, training_args.seed)
    return chosen


def training_questions(questions, data_args, seed):
    """The training `QuestionSet` with the unanswerable copies asked for, and its questions (not the copies) over
    distractor paragraphs of their article with --distractor_passages."""
    asked = len(questions)
    fractions = data_args.unanswerable_fractions()
    if sum(fractions):
        questions = questions.with_rows(with_unanswerable_copies(questions.rows, *fractions, seed=seed))
    if data_args.distractor_passages:
        questions = with_distractors(questions, data_args.distractor_passages, asked)
        passages = np.array([len(starts) for starts in questions.rows["passage_starts"][:asked]])
        logger.info(f"{asked} training questions asked of {passages.mean():.2f} passages on average (their own and up "
                    f"to {data_args.distractor_passages} distractor(s) of their article)")
    return questions


def check_calibration_data(questions, source, limited):
    """--calibrate needs single-answer evaluation questions (which the reader has checked carry answers), enough of
    them and from enough contexts for its folds: QADataError otherwise, before any window is cut."""
    if questions.multi_span:
        raise QADataError(f"{source}: --calibrate calibrates single answers (SQuAD v2); these questions' answers are "
                          "multi-span")
    contexts = questions.rows["context"][:]
    smallest = np.bincount(context_folds(contexts), minlength=CALIBRATION_FOLDS).min()
    if len(questions) < MIN_CALIBRATION_QUESTIONS or smallest < MIN_FOLD_QUESTIONS:
        raise QADataError(f"{source}: --calibrate needs at least {MIN_CALIBRATION_QUESTIONS} evaluation questions, "
                          f"from contexts enough to fill {CALIBRATION_FOLDS} folds of whole contexts with "
                          f"{MIN_FOLD_QUESTIONS} or more each, to fit and measure a calibrator; it has "
                          f"{len(questions)}" + (" (--max_eval_samples)" if limited else "") +
                          f" from {len(set(contexts))} context(s), and the smallest fold would hold {smallest}")


def run_settings(head, model, questions, data_args, model_args):
    """The `QASettings` the run evaluates with and saves: the arguments', decoding several spans when a CRF model
    trains on multi-span answers (or was trained so). A span model trained on multi-span answers learns the first
    span of each, one span per question."""
    if "train" in questions and questions["train"].multi_span:
        if head.label_scheme == "bio":
            model.config.multi_span = True
            logger.info("Multi-span training data: every span is tagged, and the model decodes answers of any number "
                        "of spans")
        else:
            logger.warning("Multi-span training data: a span model learns the first span of each answer and answers "
                           "with one span (run_qa_crf.py answers with all of them)")
    settings = dataclasses.replace(data_args.qa_settings(head.name),
                                   multi_span=bool(getattr(model.config, "multi_span", False)))
    if data_args.calibrate:
        check_calibration_data(questions["validation"], data_args.validation_file or data_args.dataset_name,
                               data_args.max_eval_samples is not None)
        if settings.multi_span:
            raise CheckpointError(f"{model_args.model_name_or_path}: --calibrate calibrates single answers; this "
                                  "model answers with several spans")
    return settings


# --- the windows -----------------------------------------------------------------------------------------------------

def split_windows(questions, build, kind, tokenizer, data_args, training_args, cache_dir):
    """Windows of `questions` (a `QuestionSet`) built by `build(batch, indices)` (`kind`: what they are for, the
    training labels or the split, a part of the cache key): tokenized by the main process and cached on disk
    (`window_cache`), where the other processes of a launch and later runs find them; --overwrite_cache tokenizes
    again."""
    settings = {"kind": kind, **{name: getattr(data_args, name) for name in ("max_seq_length", "doc_stride",
                                                                             "pad_to_max_length")}}
    key = windows_key(questions.rows, tokenizer, settings)
    description = f"{kind} windows"
    with training_args.main_process_first(desc=description):
        # the other processes read what the main process has just written, even when it was asked to tokenize again
        recompute = data_args.overwrite_cache and training_args.local_process_index == 0
        return cached_windows(questions.rows, build, key, cache_dir, recompute, data_args.preprocessing_num_workers,
                              description)


def run_windows(head, questions, tokenizer, settings, data_args, training_args, cache_dir):
    """{split: windows} of the run's questions: training windows with the head's labels (every span of multi-span
    answers for a multi-span model), evaluation and test windows sorted longest first.

    Longest first: batches of similar width pad little, and the widest batch's memory, taken first, is reused by
    every narrower one after it (widening batches leave freed blocks that fit no later tensor:
    bench/bench_eval_memory.py measured run_qa.py on 2,000 dev questions at +720 MB over 10 questions
    shortest-first, +255 MB longest-first)."""
    pad = data_args.pad_to_max_length
    windows = {}
    if "train" in questions:
        every_span = questions["train"].multi_span and settings.multi_span
        build = functools.partial(train_features, tokenizer=tokenizer, settings=settings, scheme=head.label_scheme,
                                  every_span=every_span, pad_to_max_length=pad)
        labels = f"{head.label_scheme} labels" + (", every span" if every_span else "")
        windows["train"] = split_windows(questions["train"], build, f"train ({labels})", tokenizer, data_args,
                                         training_args, cache_dir)
    build = functools.partial(eval_features, tokenizer=tokenizer, settings=settings, pad_to_max_length=pad)
    for split in ("validation", "test"):
        if split in questions:
            windows[split] = longest_first(split_windows(questions[split], build, split, tokenizer, data_args,
                                                         training_args, cache_dir))
    return windows


# --- the trainer -----------------------------------------------------------------------------------------------------

def references(questions, version_2_with_negative):
    """Gold answers of a `QuestionSet` in the metric's format (an unanswerable question's are empty), or None for
    questions that came without answers (an unlabelled test set), and, without --version_2_with_negative, for
    questions some of which have empty answers (SQuAD v1.1 scores answerable questions only; unlabelled test files
    often hold `"answers": []`)."""
    if not questions.labelled:
        return None
    answers = questions.rows["answers"][:]
    if not version_2_with_negative:
        empty = sum(not a["text"] for a in answers)
        if empty:
            if empty < len(answers):
                logger.warning(f"{empty} of {len(answers)} questions have no answer: predictions are written for "
                               f"every question and scored for none (--version_2_with_negative scores them all)")
            return None
    return [{"id": qid, "answers": a} for qid, a in zip(questions.rows["id"][:], answers)]


def scores(questions, predictions, settings):
    """Metrics of `predictions` (`QuestionPredictions`) of a `QuestionSet`: MultiSpanQA's for multi-span questions,
    else the official SQuAD v2.0 (or v1.1) scoring; empty without gold answers.

    For SQuAD v2 the metric gets the raw null odds (null score - best span score) and the run's no-answer threshold,
    so its best_exact_thresh/best_f1_thresh are in null-odds units and, applied as --null_score_diff_threshold, give
    back best_exact/best_f1 exactly; they are also reported under their historical names
    best_exact_null_score_diff_threshold/best_f1_null_score_diff_threshold.
    """
    golds = references(questions, settings.version_2_with_negative)
    if golds is None:
        return {}
    if questions.multi_span:
        return multispan_scores({p["id"]: p["spans"] for p in predictions.metric_predictions},
                                {r["id"]: r["answers"]["text"] for r in golds})
    texts = {r["id"]: r["answers"]["text"] for r in golds}
    if not settings.version_2_with_negative:
        return squad_v1_scores({p["id"]: p["prediction_text"] for p in predictions.metric_predictions}, texts)
    answers = {p["id"]: (p["prediction_text"], p["no_answer_probability"]) for p in predictions.metric_predictions}
    result = squad_v2_scores(answers, texts, settings.null_score_diff_threshold)
    for name in ("best_exact", "best_f1"):
        result[f"{name}_null_score_diff_threshold"] = result[f"{name}_thresh"]
    if questions.over_passages and not settings.multi_span:
        result["HasAns_top_from_gold_passage"] = top_from_gold_passage(questions.rows, predictions.nbest)
    return result


def answered(questions, windows, outputs, settings):
    """`QuestionPredictions` of a `QuestionSet` from the model's outputs over its windows."""
    offsets = padded_offsets(windows)
    return question_predictions(questions, windows, offsets, evaluation_candidates(settings, outputs, windows, offsets),
                                settings)


def card_facts(model_args, data_args, training_args):
    """`model_card.RunFacts` of the run."""
    def source(file, split):
        return model_card.DataSource(file, data_args.dataset_name, data_args.dataset_config_name, split)

    hyperparameters = [(name, getattr(training_args, name)) for name in model_card.HYPERPARAMETERS]
    hyperparameters.append(("max_train_samples", data_args.max_train_samples))
    return model_card.RunFacts(
        base_model=model_args.model_name_or_path, token=model_args.token,
        model_id=training_args.hub_model_id or os.path.basename(os.path.normpath(training_args.output_dir)),
        fine_tuned=training_args.do_train, train_data=source(data_args.train_file, "train"),
        eval_data=source(data_args.validation_file, "validation"), hub_dataset=data_args.dataset_name,
        hyperparameters=tuple(hyperparameters),
    )


def widget_example(model_args, questions):
    """The model card's widget example: the one given, else the first answerable evaluation (else training)
    question; None without either."""
    if model_args.widget_question is not None:
        return {"text": model_args.widget_question, "context": model_args.widget_context}
    chosen = questions.get("validation", questions.get("train"))
    for row in chosen.rows if chosen is not None else ():
        if row["answers"]["text"]:
            return {"text": row["question"], "context": row["context"]}
    return None


def qa_trainer(head, model, tokenizer, settings, questions, windows, card, data_args, training_args):
    """The `QuestionAnsweringTrainer` of the run: evaluation answers with `settings`, scores and writes the answers;
    every saved folder carries the pipeline's code, and a checkpoint pushed during training carries `card()`."""
    return QuestionAnsweringTrainer(
        model=model,
        args=training_args,
        train_dataset=windows.get("train"),
        eval_dataset=windows.get("validation"),
        eval_examples=questions.get("validation"),
        processing_class=tokenizer,
        data_collator=WindowCollator(tokenizer.pad_token_id, data_args.pad_to_multiple_of or TRAIN_PAD_MULTIPLE),
        eval_data_collator=WindowCollator(tokenizer.pad_token_id, data_args.pad_to_multiple_of),
        post_process_function=functools.partial(answered, settings=settings),
        score_function=functools.partial(scores, settings=settings),
        write_function=functools.partial(write_prediction_files, output_dir=training_args.output_dir),
        parameter_groups=head.parameter_groups,
        model_card=card,
        bundled_files=PIPELINE_FILES,
        requirements=requirements_txt(settings.head),
    )


# --- training, evaluation, prediction --------------------------------------------------------------------------------

def reported(trainer, split, metrics):
    """`metrics`, logged, and written to `{split}_results.json` and `all_results.json` by the main process."""
    trainer.log_metrics(split, metrics)
    if trainer.is_world_process_zero():
        save_metrics(trainer.args.output_dir, split, metrics)
    return metrics


def train(trainer, resume_from, questions, windows):
    """Train, save the model folder and the trainer state; the training metrics."""
    result = trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_model()
    metrics = reported(trainer, "train", dict(result.metrics, train_questions=len(questions),
                                              train_windows=len(windows)))
    trainer.save_state()
    return metrics


def calibrated(settings, questions, predictions, output_dir, should_save):
    """(`settings` with the calibrator fitted on the evaluated questions, its metrics prefixed as evaluation's); its
    reliability bins (cross-validated calibrated probability, raw n-best probability) in eval_calibration.json."""
    evidence = calibration_evidence(predictions, references(questions, settings.version_2_with_negative),
                                    questions.rows["context"][:])
    calibrator, metrics, bins = calibration_report(evidence)
    logger.info(f"Calibrator fitted on {metrics['calibration_questions']} questions: expected calibration error "
                f"{metrics['calibrated_ece']:.4f} calibrated, {metrics['raw_ece']:.4f} raw (cross-validated)")
    if should_save:
        os.makedirs(output_dir, exist_ok=True)
        write_json_atomically(os.path.join(output_dir, "eval_calibration.json"),
                              {**metrics, "calibrator": calibrator.to_dict(), "bins": bins})
    prefixed = {f"eval_{name}": value for name, value in metrics.items()}
    return dataclasses.replace(settings, calibrator=calibrator), prefixed


def evaluate(trainer, settings, questions, calibrate, threshold_given):
    """(the settings to save, the evaluation metrics): the questions answered and scored, the calibrator fitted on
    them (`calibrate`), and the no-answer threshold that maximised F1 in the settings unless one was given."""
    predictions, metrics = trainer.evaluation()
    if calibrate:
        settings, calibration = calibrated(settings, questions, predictions, trainer.args.output_dir,
                                           trainer.args.should_save)
        metrics.update(calibration)
    reported(trainer, "eval", metrics)
    tuned = metrics.get("eval_best_f1_null_score_diff_threshold")
    if not threshold_given and tuned is not None:
        settings = dataclasses.replace(settings, null_score_diff_threshold=tuned)
        logger.info(f"Saved the F1-best no-answer threshold {tuned:.4f} in the model's config")
    return settings, metrics


def predict(trainer, questions, windows):
    """The test questions answered (predict_* files), and scored when they carry answers."""
    _, metrics = trainer.predict(windows, questions)
    return reported(trainer, "predict", metrics)


# --- the model folder ------------------------------------------------------------------------------------------------

def publish(trainer, settings, card, packaging):
    """The model folder with its final settings and card (`card()`, rendered only where it is written): its config
    written again if training saved it before evaluation changed the settings, a checkpoint packaged as it is saved;
    pushed to the Hub with --push_to_hub."""
    config = trainer.model.config
    changed = config.qa_settings != settings.to_config()
    config.qa_settings = settings.to_config()
    if trainer.args.do_train and changed and trainer.is_world_process_zero():
        write_config(config, trainer.args.output_dir)
    if packaging:
        trainer.save_model()
    if (trainer.args.do_train or packaging) and trainer.is_world_process_zero():
        trainer.create_model_card(text=card())
    try:
        if trainer.args.push_to_hub:
            trainer.push_to_hub(text=card())
    finally:
        trainer.end()


def run(head, model_args, data_args, training_args):
    """Train, evaluate and predict as the arguments ask; returns {split: metrics}."""
    setup_logging(training_args)
    logger.warning(f"Process rank {training_args.process_index} of world size {training_args.world_size} on "
                   f"{training_args.device}")
    logger.info(f"Training/evaluation parameters {training_args}")
    check_flags(head, model_args, data_args, training_args)
    resume_from = checkpoint_to_resume(training_args)
    set_seed(training_args.seed)

    tokenizer, model, packaging = checkpoint(head, model_args, data_args, training_args)
    questions = chosen_questions(data_args, training_args, model_args.cache_dir)
    settings = run_settings(head, model, questions, data_args, model_args)
    model.config.custom_pipelines = PIPELINE_ENTRY
    model.config.qa_settings = settings.to_config()
    windows = run_windows(head, questions, tokenizer, settings, data_args, training_args, model_args.cache_dir)
    facts, widget = card_facts(model_args, data_args, training_args), widget_example(model_args, questions)
    trainer = qa_trainer(head, model, tokenizer, settings, questions, windows,
                         functools.partial(model_card.render, facts, settings, {}, widget), data_args, training_args)

    metrics = {}
    if training_args.do_train:
        metrics["train"] = train(trainer, resume_from, questions["train"], windows["train"])
    if training_args.do_eval:
        settings, metrics["eval"] = evaluate(trainer, settings, questions["validation"], data_args.calibrate,
                                             data_args.threshold_given)
    if training_args.do_predict:
        metrics["predict"] = predict(trainer, questions["test"], windows["test"])
    publish(trainer, settings, functools.partial(model_card.render, facts, settings, metrics.get("eval", {}), widget),
            packaging)
    return metrics


def main(head, argv=None):
    """Entry point of a run script; argument and data errors end the run with their message instead of a
    traceback."""
    try:
        model_args, data_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    try:
        return run(head, model_args, data_args, training_args)
    except (QADataError, CheckpointError, HubPushError, OutputError, ModelOutputError) as err:
        logger.error(str(err))
        raise SystemExit(f"error: {err}") from None
