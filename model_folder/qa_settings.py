"""`QASettings`: what a model folder needs to answer as evaluation did, and the one place its defaults live.

A run builds it once from its arguments and writes it into the model's config under `qa_settings`; the pipeline and
the Inference Endpoints handler read it back from the folder's `config.json` with `QASettings.from_config`, which
checks every value and names the file, the key and the problem, so that a hand-edited or damaged config fails when a
pipeline is built rather than with a TypeError in the middle of a call (or silently: a NaN threshold would answer ""
every time).

Folders saved before a setting existed, and QA checkpoints saved by transformers (no `qa_settings` at all), load with
the defaults below: the head follows the model type, the rest are transformers' QA example defaults.
"""

import dataclasses
import os
from dataclasses import dataclass
from numbers import Integral

from .calibration import Calibrator, finite_number

# The key of the model config that holds the settings.
CONFIG_KEY = "qa_settings"
# The decoders of the heads ("multi_span" is a CRF model trained on multi-span answers: `multi_span` below).
HEADS = ("span", "crf")
CRF_MODEL_TYPE = "crf_qa"


class SettingsError(ValueError):
    """A setting that cannot serve; the message names where it was read, the key and the problem."""


def _count(value, minimum):
    """Why `value` is not an integer of at least `minimum` (a bool is not a count), or None."""
    if isinstance(value, Integral) and not isinstance(value, bool) and value >= minimum:
        return None
    return f"must be an integer >= {minimum}, got {value!r}"


def head_mismatch(head, model_type):
    """Why a model of `model_type` cannot be decoded as `head`, or None: a CRF model's outputs are read by the "crf"
    decoding only, and only a CRF model has them."""
    if head == "span" and model_type == CRF_MODEL_TYPE:
        return f"'span', but the model is a CRF model ({CRF_MODEL_TYPE}), whose outputs only the 'crf' decoding reads"
    if head == "crf" and model_type != CRF_MODEL_TYPE:
        return f"'crf', but the model ({model_type}) has no CRF: its decoding is 'span'"
    return None


@dataclass(frozen=True)
class QASettings:
    """How a model cuts windows and decodes answers, as evaluation did.

    head: "span" (start/end logits) or "crf" (B/I/O tag paths; `CRF_MODEL_TYPE` models only).
    multi_span: a CRF model trained on multi-span answers decodes answers of any number of spans. The model's own
        config field (its forward pass decodes so), read here and not written under `qa_settings`.
    max_seq_length, doc_stride: tokens per window, and the overlap of consecutive windows.
    max_answer_length: the most tokens an answer span may cover.
    n_best_size: answers listed per question (evaluation's n-best file; the CRF's paths per window).
    null_score_diff_threshold: answer "" when null score - best span score exceeds it.
    version_2_with_negative: the model was trained and evaluated to answer "" (SQuAD v2).
    calibrator: maps an answer's evidence to its probability of being right (`run_qa.py --calibrate`), or None.
    """

    head: str = "span"
    max_seq_length: int = 384
    doc_stride: int = 128
    max_answer_length: int = 30
    n_best_size: int = 20
    null_score_diff_threshold: float = 0.0
    version_2_with_negative: bool = False
    calibrator: Calibrator | None = None
    multi_span: bool = False

    def __post_init__(self):
        problem = self.first_problem()
        if problem:
            raise SettingsError(f"{problem[0]}: {problem[1]}")

    def first_problem(self):
        """(key, problem) of the first setting that cannot serve, or None."""
        checks = {
            "head": None if self.head in HEADS else f"must be one of {', '.join(map(repr, HEADS))}, got {self.head!r}",
            "max_seq_length": _count(self.max_seq_length, 1),
            "doc_stride": _count(self.doc_stride, 0),
            "max_answer_length": _count(self.max_answer_length, 1),
            "n_best_size": _count(self.n_best_size, 1),
            "null_score_diff_threshold": None if finite_number(self.null_score_diff_threshold) else
            f"must be a finite number, got {self.null_score_diff_threshold!r}",
            "version_2_with_negative": None if isinstance(self.version_2_with_negative, bool) else
            f"must be true or false, got {self.version_2_with_negative!r}",
            "calibrator": None if self.calibrator is None or isinstance(self.calibrator, Calibrator) else
            f"must be a Calibrator, got {type(self.calibrator).__name__}",
            "multi_span": None if not self.multi_span or self.head == "crf" else
            "only a CRF model decodes several spans",
        }
        problem = next(((key, what) for key, what in checks.items() if what), None)
        if problem is None and self.doc_stride >= self.max_seq_length // 2:
            problem = ("doc_stride", f"must be less than half of max_seq_length {self.max_seq_length}, got "
                                     f"{self.doc_stride}")
        return problem

    @property
    def decoder(self):
        """The window decoding of these settings: "span", "crf" or "multi_span" (`qa_decoding.OUTPUT_FIELDS`)."""
        return "multi_span" if self.multi_span else self.head

    @classmethod
    def from_config(cls, config):
        """The settings a model config stores (defaults for what it lacks), checked against the model's type.

        SettingsError names the config file, the key and the problem: a key that is not a setting, a value of the
        wrong type or range, a non-finite number, a head the model cannot run.
        """
        where = f"{os.path.join(getattr(config, '_name_or_path', '') or '.', 'config.json')}: {CONFIG_KEY}"
        stored = getattr(config, CONFIG_KEY, None) or {}
        if not isinstance(stored, dict):
            raise SettingsError(f"{where}: must be an object of settings, got {stored!r:.100}")
        known = {field.name for field in dataclasses.fields(cls)} - {"multi_span"}
        unknown = sorted(set(stored) - known)
        if unknown:
            raise SettingsError(f"{where}.{unknown[0]}: not a setting (known: {', '.join(sorted(known))})")
        model_type = getattr(config, "model_type", None)
        values = {**stored, "head": stored.get("head", "crf" if model_type == CRF_MODEL_TYPE else "span"),
                  "multi_span": bool(getattr(config, "multi_span", False))}
        mismatch = head_mismatch(values["head"], model_type)
        if mismatch:
            raise SettingsError(f"{where}.head: {mismatch}")
        if "calibrator" in stored and stored["calibrator"] is not None:
            try:
                values["calibrator"] = Calibrator.from_dict(stored["calibrator"])
            except ValueError as err:
                raise SettingsError(f"{where}.calibrator: {err}") from None
        try:
            return cls(**values)
        except SettingsError as err:
            raise SettingsError(f"{where}.{err}") from None

    def to_config(self):
        """The `qa_settings` a model config stores: the keys folders on the Hub carry (the calibrator's only when
        there is one)."""
        names = ("max_seq_length", "doc_stride", "max_answer_length", "n_best_size", "null_score_diff_threshold",
                 "version_2_with_negative")
        stored = {"head": self.head, **{name: getattr(self, name) for name in names}}
        if self.calibrator is not None:
            stored["calibrator"] = self.calibrator.to_dict()
        return stored
