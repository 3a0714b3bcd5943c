"""`QuestionAnsweringTrainer`: a `Trainer` whose evaluation runs the model over windows, turns the window outputs
into answers per question and scores those answers against the questions' gold answers."""

import ctypes
import ctypes.util
import glob
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub.utils import HFValidationError, validate_repo_id
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from transformers.trainer_utils import HubStrategy, speed_metrics

from utils_qa import write_atomically

logger = logging.getLogger(__name__)


# glibc's malloc_trim, where there is one (elsewhere None: nothing to hand back).
MALLOC_TRIM = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", None) if os.name == "posix" else None


def release_free_heap():
    """Hand the C heap's free pages back to the OS. Called once after training and once after the evaluation loop:
    the steps leave hundreds of MB (an epoch of training, GBs) freed but kept by the allocator, in blocks
    post-processing's allocations mostly do not fit, so what comes next would otherwise add its own memory on top of
    them. (Called after every step it costs each next step the page faults of the memory handed back: a fifth of a
    bf16 evaluation step, an eighth of a training step on a 2-core CPU.)"""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


def log_failed_push(job):
    if job.exception() is not None:
        logger.error(f"A checkpoint push to the Hub failed: {job.exception()}")


class HubPushError(RuntimeError):
    """The model could not be pushed to the Hub; the message says why and where the run's outputs are."""


class WindowOutputs:
    """The model's outputs for every window of an evaluation, gathered from every process batch by batch and put
    together once at the end: the Trainer instead concatenates everything gathered so far at each batch, which
    copies the outputs over and over (gigabytes over a full SQuAD dev set)."""

    def __init__(self):
        self.batches = []

    def add(self, outputs):
        """outputs: a tuple of tensors (batch, ...), gathered from every process; kept as float32/int numpy arrays."""
        self.batches.append(tuple((o.float() if o.dtype == torch.bfloat16 else o).cpu().numpy() for o in outputs))

    def arrays(self):
        """One array per output, (windows, ...): the batches in order, each padded with -100 to the widest batch
        along every dimension, as the Trainer pads them."""
        stacked = []
        for parts in zip(*self.batches):
            shape = (sum(len(part) for part in parts), *np.max([part.shape[1:] for part in parts], axis=0).astype(int))
            array = np.full(shape, -100, dtype=parts[0].dtype)
            start = 0
            for part in parts:
                array[(slice(start, start + len(part)), *(slice(0, size) for size in part.shape[1:]))] = part
                start += len(part)
            stacked.append(array)
        self.batches = []
        return tuple(stacked)


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` whose order depends only on the seed and the epoch, not on the global RNG: a run
    resumed mid-epoch, and every process of a distributed run, draw the order an uninterrupted run draws."""

    def __init__(self, batch_size, lengths, seed):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


@dataclass
class QATrainingArguments(TrainingArguments):
    """`TrainingArguments` plus a learning rate for the freshly initialised head."""

    head_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the parameters outside the pretrained encoder (the QA head; the CRF's "
                          "emission layer and transitions), which start from random values (default: --learning_rate)."},
    )
    crf_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of a CRF's transition scores (its start, end and tag-to-tag scores: 15 "
                          "numbers), which Adam moves by about the learning rate a step, so at the head's rate a short "
                          "run leaves them near their random start (default: --head_learning_rate)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.push_to_hub:
            try:  # refused now rather than by the Hub after training
                validate_repo_id(self.hub_repo_name())
            except HFValidationError as err:
                raise ValueError(f"--hub_model_id {self.hub_repo_name()!r} is not a Hub repo id (`name` or "
                                 f"`namespace/name`): {err}") from None

    def hub_repo_name(self):
        """The repo --push_to_hub pushes to: --hub_model_id, else the output folder's name (as the Trainer does)."""
        return self.hub_model_id or Path(self.output_dir).absolute().name


class QuestionAnsweringTrainer(Trainer):
    """Trainer for extractive QA.

    Args (beyond `Trainer`'s):
        eval_examples: the questions behind `eval_dataset` (its windows).
        eval_data_collator: collates evaluation and prediction batches (default: `data_collator`); when it is
            given, `data_collator` collates training batches only.
        post_process_function: `(questions, windows, model_outputs, prefix) -> (QuestionPredictions, references)`;
            called in every process (best-checkpoint selection needs the metrics everywhere).
        write_function: `(QuestionPredictions, prefix) -> None`, writing output files; main process only.
        compute_metrics: `(metric_predictions, references) -> dict` of metric values without prefix.
        model_card: `() -> str`, the README.md written by `create_model_card` (and so by `push_to_hub`).
        bundled_files: paths of code files copied into every saved model folder (the pipeline's code).
    """

    def __init__(self, *args, eval_examples=None, eval_data_collator=None, post_process_function=None,
                 write_function=None, model_card=None, bundled_files=(), **kwargs):
        self.hub_unavailable = None  # the error that kept init_hf_repo from creating the Hub repo, if any
        self.window_outputs = None  # collects the outputs while answer_questions runs the evaluation loop
        super().__init__(*args, **kwargs)
        self.eval_examples = eval_examples
        self.eval_data_collator = eval_data_collator
        self.post_process_function = post_process_function
        self.write_function = write_function
        self.model_card = model_card
        self.bundled_files = bundled_files

    def train(self, *args, **kwargs):
        """`Trainer.train`, then the heap its steps freed handed back to the OS: over an epoch glibc keeps more than a
        GB of freed activations (bench/bench_train_memory.py), which evaluation and saving would otherwise sit on."""
        try:
            return super().train(*args, **kwargs)
        finally:
            release_free_heap()

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the head's parameters in groups of their own at `args.head_learning_rate`
        and a CRF's transition scores at `args.crf_learning_rate`; the learning-rate schedule scales every group
        alike."""
        head_lr = getattr(self.args, "head_learning_rate", None)
        crf_lr = getattr(self.args, "crf_learning_rate", None)
        if (head_lr is None and crf_lr is None) or self.optimizer is not None:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        encoder = {id(p) for p in model.base_model.parameters()} if model.base_model is not model else set()
        crf = {id(p) for p in model.crf.parameters()} if hasattr(model, "crf") else set()
        head_lr = self.args.learning_rate if head_lr is None else head_lr
        decay = set(self.get_decay_parameter_names(model))
        groups = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                lr = (crf_lr if crf_lr is not None and id(param) in crf else
                      self.args.learning_rate if id(param) in encoder else head_lr)
                groups.setdefault((lr, name in decay), []).append(param)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(
            [{"params": params, "lr": lr, "weight_decay": self.args.weight_decay if decays else 0.0}
             for (lr, decays), params in groups.items()],
            **optimizer_kwargs,
        )
        return self.optimizer

    def _get_train_sampler(self, train_dataset=None):
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        # The windows' `length` column, read at once: the dataset the dataloader sees no longer has it, and the
        # Trainer would re-measure every window (or read the column row by row).
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochSeededLengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                               self.train_dataset["length"][:], seed)

    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False,
                        dataloader_key=None):
        """The Trainer's dataloader; evaluation and prediction batches collated by `eval_data_collator` when given."""
        kwargs = dict(dataset=dataset, description=description, batch_size=batch_size, sampler_fn=sampler_fn,
                      is_training=is_training, dataloader_key=dataloader_key)
        if is_training or self.eval_data_collator is None:
            return super()._get_dataloader(**kwargs)
        # The Trainer reads its one collator from self.data_collator while it builds the dataloader
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super()._get_dataloader(**kwargs)
        finally:
            self.data_collator = train_collator

    def _get_eval_sampler(self, eval_dataset):
        # Post-processing reads the outputs in the dataset's order (windows are already sorted by length), so
        # evaluation never reorders them, even when training groups windows by length.
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def _save(self, output_dir=None, state_dict=None):
        """Save the model as the Trainer does, with the bundled code beside it (final folder and checkpoints).

        Files are written to a staging folder inside `output_dir` and then renamed into place one by one, so an
        interrupted save never leaves a half-written weights or config file under its final name."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:  # the Trainer's non-writing ranks, if any, take part as it decides
            return super()._save(output_dir, state_dict)
        os.makedirs(output_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".saving-", dir=output_dir)
        try:
            super()._save(staging, state_dict)
            for path in self.bundled_files:
                shutil.copy(path, staging)
            for name in os.listdir(staging):
                os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
        finally:
            shutil.rmtree(staging)

    def save_model(self, output_dir=None, _internal_call=False):
        """Save the model without pushing it (the Trainer pushes on every `save_model` under --push_to_hub): the run
        pushes once, at its end, with the evaluation results and model card beside the model."""
        return super().save_model(output_dir, _internal_call=True)

    def init_hf_repo(self, token=None, private=None):
        """Create the Hub repo as the Trainer does; when the Hub refuses or cannot be reached, warn and go on:
        training still saves every output locally, and `push_to_hub` tries again at the end."""
        try:
            super().init_hf_repo(token=token, private=private)
        except Exception as err:  # HTTP, connection and token errors alike: the run's local results come first
            self.hub_model_id, self.push_in_progress, self.hub_unavailable = self.args.hub_repo_name(), None, err
            logger.warning(f"Cannot create the Hub repo {self.hub_model_id} at {hub_constants.ENDPOINT}: {err}\n"
                           "Training goes on and saves everything in the output folder; the push is tried again at "
                           "the end of the run.")

    def _push_from_checkpoint(self, checkpoint_folder):
        """Push the checkpoint's model as the Trainer does, with all of it: the Trainer copies only config,
        weights and tokenizer into the folder it pushes, while the config names code files (the pipeline's, a
        custom model's) that a repo without them cannot load; the model card is written beside them. A failed
        push is logged when it ends (the Trainer runs it in the background and would drop its error)."""
        if not self.is_world_process_zero() or self.args.hub_strategy == HubStrategy.END:
            return
        if self.hub_unavailable is not None:  # the repo could not be created: the end of the run tries again
            return
        for path in glob.glob(os.path.join(checkpoint_folder, "*.py")):
            shutil.copy(path, self.args.output_dir)
        self.create_model_card()
        running = set(self.push_in_progress.jobs) if self.push_in_progress is not None else set()
        super()._push_from_checkpoint(checkpoint_folder)
        for job in self.push_in_progress.jobs if self.push_in_progress is not None else ():
            if job not in running:
                job.add_done_callback(log_failed_push)

    def push_to_hub(self, *args, **kwargs):
        """`Trainer.push_to_hub`, with a repo the Hub refused earlier created again first; any failure becomes a
        `HubPushError` saying where the run's outputs are."""
        try:
            if self.hub_unavailable is not None and self.is_world_process_zero():
                Trainer.init_hf_repo(self)
            return super().push_to_hub(*args, **kwargs)
        except Exception as err:  # HTTP, connection and token errors alike
            repo = self.args.hub_repo_name()
            raise HubPushError(
                f"Could not push to the Hub repo {repo} at {hub_constants.ENDPOINT}: {err}\nNothing is lost: the "
                f"model and every output of the run are in {self.args.output_dir}; push them later with "
                f"`hf upload {repo} {self.args.output_dir}`."
            ) from err

    def create_model_card(self, **kwargs):
        """Write the project's model card (dataset, metrics, hyperparameters, license) as README.md."""
        if self.model_card is None:
            return super().create_model_card(**kwargs)
        if self.is_world_process_zero():
            write_atomically(os.path.join(self.args.output_dir, "README.md"), self.model_card().encode("utf-8"))

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The Trainer's step; inside `answer_questions` the outputs are gathered here, as the evaluation loop would
        gather them, into `window_outputs`, and the loop is handed none to concatenate."""
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if self.window_outputs is None or logits is None:
            return loss, logits, labels
        logits = self.accelerator.pad_across_processes(logits, dim=1, pad_index=-100)
        self.window_outputs.add(self.accelerator.gather_for_metrics(logits if isinstance(logits, tuple) else (logits,)))
        return loss, None, labels

    def answer_questions(self, dataset, dataloader, examples, description, ignore_keys, prefix):
        """(metrics, QuestionPredictions): the model over `dataset`'s windows (batched by `dataloader`, which sees
        only the model's inputs), then answers per question."""
        start_time = time.time()
        # compute_metrics is applied to questions below, not to windows inside the loop
        compute_metrics, self.compute_metrics = self.compute_metrics, None
        self.window_outputs = WindowOutputs()
        try:
            output = self.evaluation_loop(
                dataloader, description=description, prediction_loss_only=False,
                ignore_keys=ignore_keys, metric_key_prefix=prefix,
            )
            outputs = self.window_outputs.arrays()
            release_free_heap()
        finally:
            self.compute_metrics, self.window_outputs = compute_metrics, None
        if f"{prefix}_model_preparation_time" in output.metrics:
            start_time += output.metrics[f"{prefix}_model_preparation_time"]

        result, references = self.post_process_function(examples, dataset, outputs, prefix)
        metrics = dict(output.metrics)
        if self.compute_metrics is not None and references is not None:
            metrics.update({f"{prefix}_{k}": v for k, v in self.compute_metrics(result.metric_predictions, references).items()})
        if self.write_function is not None and self.is_world_process_zero():
            self.write_function(result, prefix)
        metrics.update(
            speed_metrics(
                prefix, start_time, num_samples=output.num_samples,
                num_steps=math.ceil(output.num_samples / (self.args.eval_batch_size * self.args.world_size)),
            )
        )
        metrics[f"{prefix}_questions"] = len(examples)
        return metrics, result

    def evaluate(self, eval_dataset=None, eval_examples=None, ignore_keys=None, metric_key_prefix="eval"):
        """Metrics of the answers to `eval_examples` (default: the trainer's), logged and passed to callbacks."""
        self._memory_tracker.start()
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        examples = self.eval_examples if eval_examples is None else eval_examples
        metrics, _ = self.answer_questions(dataset, self.get_eval_dataloader(dataset), examples, "Evaluation",
                                           ignore_keys, metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics

    def predict(self, predict_dataset, predict_examples, ignore_keys=None, metric_key_prefix="predict"):
        """(QuestionPredictions, metrics) for `predict_examples`; metrics only if they carry gold answers."""
        self._memory_tracker.start()
        metrics, result = self.answer_questions(predict_dataset, self.get_test_dataloader(predict_dataset),
                                                predict_examples, "Prediction", ignore_keys, metric_key_prefix)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return result, metrics
