"""The run scripts' arguments: the transformers QA examples' `ModelArguments` and `DataTrainingArguments`,
`TrainingArguments` with this package's additions, and how they are parsed (the command line, or a JSON file as the
sole argument)."""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import HfArgumentParser, TrainingArguments

from calibration_fitting import CALIBRATION_FOLDS, MIN_CALIBRATION_QUESTIONS
from model_folder.qa_settings import QASettings, SettingsError
from qa_data import read_json_file


# The arguments that are settings of the model folder (`QASettings`), under the same names.
SETTING_ARGUMENTS = ("max_seq_length", "doc_stride", "max_answer_length", "n_best_size", "null_score_diff_threshold",
                     "version_2_with_negative")


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
    new_head: bool = field(
        default=False,
        metadata={"help": "The QA head is meant to start fresh: the checkpoint may lack its tensors even though its "
                          "config names a QA model, or a run that does not train may evaluate it (its answers are "
                          "then random). Without it such a checkpoint is refused, naming the missing tensors."},
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
    distractor_passages: int = field(
        default=0,
        metadata={"help": "Training: ask each training question (not the unanswerable copies) of this many other "
                          "paragraphs of its article too (the contexts with its title that share the most words with "
                          "it and hold none of its answers), as a reader is asked; their windows are labelled "
                          "no-answer. With --shared_norm they are normalised with the question's own."},
    )

    def __post_init__(self):
        self.threshold_given = self.null_score_diff_threshold is not None
        if not self.threshold_given:
            self.null_score_diff_threshold = 0.0
        try:  # the settings a model folder stores, refused now rather than when a pipeline reads them
            self.qa_settings("span")
        except SettingsError as err:
            raise ValueError(f"--{err}") from None
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"--pad_to_multiple_of {self.pad_to_multiple_of} must be a positive number of tokens.")
        fractions = self.unanswerable_fractions()
        if sum(fractions) and not self.version_2_with_negative:
            raise ValueError("--unanswerable_cuts/--unanswerable_pairs/--unanswerable_edits add unanswerable "
                             "questions: they need --version_2_with_negative.")
        if self.distractor_passages < 0:
            raise ValueError(f"--distractor_passages {self.distractor_passages} must be 0 or more paragraphs.")
        if min(fractions) < 0 or sum(fractions) > 1:
            raise ValueError("--unanswerable_cuts, --unanswerable_pairs and --unanswerable_edits are fractions of the "
                             "answerable questions: each at least 0, together at most 1.")

    def data_files(self):
        """{split: path} of the files given for the splits."""
        files = {"train": self.train_file, "validation": self.validation_file, "test": self.test_file}
        return {split: path for split, path in files.items() if path}

    def schema_columns(self):
        """{schema name: column name} of the question, context and answers in flat files and Hub datasets."""
        return {"question": self.question_column_name, "context": self.context_column_name,
                "answers": self.answer_column_name}

    def qa_settings(self, head):
        """The settings this run evaluates with and saves for the pipeline, for a model with `head`."""
        return QASettings(head=head, **{name: getattr(self, name) for name in SETTING_ARGUMENTS})

    def unanswerable_fractions(self):
        """(cuts, pairs, edits): the fractions of answerable training questions given each kind of unanswerable copy."""
        return self.unanswerable_cuts, self.unanswerable_pairs, self.unanswerable_edits


@dataclass
class QATrainingArguments(TrainingArguments):
    """`TrainingArguments` plus learning rates of their own for the freshly initialised head and a CRF's
    transitions, and a span model's shared normalisation (`shared_norm.py`)."""

    head_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the parameters outside the pretrained encoder (the QA head; the CRF's "
                          "emission layer and transitions), which start from random values (default: --learning_rate)."},
    )
    shared_norm: bool = field(
        default=False,
        metadata={"help": "Span models: train each question's start / end scores normalised over all its windows "
                          "together (shared normalisation, Clark & Gardner 2018), so that they compare across windows "
                          "and passages, as the reader over many passages ranks them; batches then hold whole "
                          "questions (--per_device_train_batch_size windows on average). Best with "
                          "--distractor_passages."},
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


