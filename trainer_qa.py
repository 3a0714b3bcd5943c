"""`QuestionAnsweringTrainer`: a `Trainer` whose evaluation runs the model over windows, turns the window outputs
into answers per question and scores those answers against the questions' gold answers (the transformers QA
example's trainer), which trains the fresh head at learning rates of its own and, with --shared_norm, a span model
with each question's scores normalised over all its windows (`shared_norm.py`)."""

import ctypes
import ctypes.util
import math
import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, SequentialSampler
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from transformers.trainer_utils import speed_metrics

from publishing import PublishingTrainer
from shared_norm import QuestionBatchSampler, questions_per_batch, shared_norm_loss


# What the --shared_norm loss reads of each training window besides the model's inputs: its question and [CLS] token.
SHARED_NORM_COLUMNS = ("example_index", "cls_index")
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


def encoder_and_head(model):
    """{"encoder", "head"}: a transformers QA model's pretrained backbone (`base_model`) and the rest, its QA head."""
    encoder = list(model.base_model.parameters()) if model.base_model is not model else []
    taken = {id(param) for param in encoder}
    return {"encoder": encoder, "head": [param for param in model.parameters() if id(param) not in taken]}


class QuestionAnsweringTrainer(PublishingTrainer):
    """Trainer for extractive QA; its `args` are `qa_arguments.QATrainingArguments`.

    Args (beyond `PublishingTrainer`'s):
        eval_examples: the `QuestionSet` behind `eval_dataset` (its windows).
        eval_data_collator: collates evaluation and prediction batches (default: `data_collator`); when it is
            given, `data_collator` collates training batches only.
        post_process_function: `(questions, windows, model_outputs) -> QuestionPredictions`; called in every
            process (best-checkpoint selection needs the metrics everywhere).
        score_function: `(questions, QuestionPredictions) -> dict` of metric values without prefix (empty for
            questions without gold answers).
        write_function: `(QuestionPredictions, prefix) -> None`, writing output files; main process only.
        parameter_groups: `(model) -> {role: parameters}` with roles "encoder", "head" and, for a CRF, "crf", which
            train at `--learning_rate`, `--head_learning_rate` and `--crf_learning_rate` (default:
            `encoder_and_head`).
    """

    def __init__(self, *args, eval_examples=None, eval_data_collator=None, post_process_function=None,
                 score_function=None, write_function=None, parameter_groups=encoder_and_head, **kwargs):
        self.window_outputs = None  # collects the outputs while answer_questions runs the evaluation loop
        super().__init__(*args, **kwargs)
        self.eval_examples = eval_examples
        self.eval_data_collator = eval_data_collator
        self.post_process_function = post_process_function
        self.score_function = score_function
        self.write_function = write_function
        self.parameter_groups = parameter_groups
        if self.args.shared_norm:
            self.loss_is_scaled_for_ga = False  # `shared_norm_loss` is a mean over the batch's questions

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
        head_lr, crf_lr = self.args.head_learning_rate, self.args.crf_learning_rate
        if (head_lr is None and crf_lr is None) or self.optimizer is not None:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        head_lr = self.args.learning_rate if head_lr is None else head_lr
        rates = {"encoder": self.args.learning_rate, "head": head_lr, "crf": head_lr if crf_lr is None else crf_lr}
        rate_of = {id(param): rates[role] for role, params in self.parameter_groups(model).items() for param in params}
        decay = set(self.get_decay_parameter_names(model))
        groups = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                groups.setdefault((rate_of[id(param)], name in decay), []).append(param)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(
            [{"params": params, "lr": lr, "weight_decay": self.args.weight_decay if decays else 0.0}
             for (lr, decays), params in groups.items()],
            **optimizer_kwargs,
        )
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's loss, or for a batch of whole questions (--shared_norm, whose batches carry
        `SHARED_NORM_COLUMNS`) the span loss normalised over each question's windows."""
        if SHARED_NORM_COLUMNS[0] not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        questions, cls_index = (inputs.pop(name) for name in SHARED_NORM_COLUMNS)
        starts, ends = inputs.pop("start_positions"), inputs.pop("end_positions")
        outputs = model(**inputs)
        loss = shared_norm_loss(outputs.start_logits, outputs.end_logits, starts, ends, cls_index,
                                inputs["attention_mask"], questions)
        return (loss, outputs) if return_outputs else loss

    def order_seed(self):
        """The seed of the training order: --data_seed, else --seed (as the Trainer's samplers take it)."""
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def question_batches(self, dataset):
        """The training dataloader of --shared_norm: batches of whole questions (`QuestionBatchSampler`), as many
        per batch as make --per_device_train_batch_size windows on average, each window with its
        `SHARED_NORM_COLUMNS`."""
        self._set_signature_columns_if_needed()
        kept = set(self._signature_columns) | set(SHARED_NORM_COLUMNS)
        question_of_window = dataset["example_index"][:]
        sampler = QuestionBatchSampler(
            question_of_window, dataset["length"][:], questions_per_batch(question_of_window, self._train_batch_size),
            self.order_seed())
        return self.accelerator.prepare(DataLoader(
            dataset.select_columns([name for name in dataset.column_names if name in kept]), batch_sampler=sampler,
            collate_fn=self.data_collator, num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory))

    def _get_train_sampler(self, train_dataset=None):
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        # The windows' `length` column, read at once: the dataset the dataloader sees no longer has it, and the
        # Trainer would re-measure every window (or read the column row by row).
        return EpochSeededLengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                               self.train_dataset["length"][:], self.order_seed())

    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False,
                        dataloader_key=None):
        """The Trainer's dataloader; evaluation and prediction batches collated by `eval_data_collator` when given,
        training batches of whole questions with --shared_norm."""
        if is_training and self.args.shared_norm:
            return self.question_batches(dataset)
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

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The Trainer's step; inside `answer_questions` the outputs are gathered here, as the evaluation loop would
        gather them, into `window_outputs`, and the loop is handed none to concatenate."""
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if self.window_outputs is None or logits is None:
            return loss, logits, labels
        logits = self.accelerator.pad_across_processes(logits, dim=1, pad_index=-100)
        self.window_outputs.add(self.accelerator.gather_for_metrics(logits if isinstance(logits, tuple) else (logits,)))
        return loss, None, labels

    def answer_questions(self, dataset, dataloader, questions, description, ignore_keys, prefix):
        """(QuestionPredictions, metrics) of `questions`: the model over `dataset`'s windows (batched by
        `dataloader`, which sees only the model's inputs), then answers per question, scored when they have gold
        answers; the output files written."""
        start_time = time.time()
        self.window_outputs = WindowOutputs()
        try:
            output = self.evaluation_loop(
                dataloader, description=description, prediction_loss_only=False,
                ignore_keys=ignore_keys, metric_key_prefix=prefix,
            )
            outputs = self.window_outputs.arrays()
            release_free_heap()
        finally:
            self.window_outputs = None
        if f"{prefix}_model_preparation_time" in output.metrics:
            start_time += output.metrics[f"{prefix}_model_preparation_time"]

        predictions = self.post_process_function(questions, dataset, outputs)
        metrics = dict(output.metrics)
        if self.score_function is not None:
            metrics.update({f"{prefix}_{k}": v for k, v in self.score_function(questions, predictions).items()})
        if self.write_function is not None and self.is_world_process_zero():
            self.write_function(predictions, prefix=prefix)
        metrics.update(
            speed_metrics(
                prefix, start_time, num_samples=output.num_samples,
                num_steps=math.ceil(output.num_samples / (self.args.eval_batch_size * self.args.world_size)),
            )
        )
        metrics[f"{prefix}_questions"] = len(questions)
        return predictions, metrics

    def evaluate(self, eval_dataset=None, eval_examples=None, ignore_keys=None, metric_key_prefix="eval"):
        """Metrics of the answers to `eval_examples` (default: the trainer's), logged and passed to callbacks (the
        Trainer's evaluation during training)."""
        return self.evaluation(eval_dataset, eval_examples, ignore_keys, metric_key_prefix)[1]

    def evaluation(self, eval_dataset=None, eval_examples=None, ignore_keys=None, metric_key_prefix="eval"):
        """(QuestionPredictions, metrics) of `evaluate`."""
        self._memory_tracker.start()
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        questions = self.eval_examples if eval_examples is None else eval_examples
        predictions, metrics = self.answer_questions(dataset, self.get_eval_dataloader(dataset), questions,
                                                     "Evaluation", ignore_keys, metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return predictions, metrics

    def predict(self, predict_dataset, predict_examples, ignore_keys=None, metric_key_prefix="predict"):
        """(QuestionPredictions, metrics) of `predict_examples`; metrics only if they carry gold answers."""
        self._memory_tracker.start()
        predictions, metrics = self.answer_questions(predict_dataset, self.get_test_dataloader(predict_dataset),
                                                     predict_examples, "Prediction", ignore_keys, metric_key_prefix)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return predictions, metrics
