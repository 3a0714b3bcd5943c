"""The QA steps of training and evaluation around the model: questions -> windows (with labels) -> candidates ->
answers per question -> files.

Window features (one row per window of `max_seq_length` tokens over a question and its context, built by
`qa_windows.window_features` as the pipeline builds them):
- model inputs: `input_ids`, `attention_mask` (and `token_type_ids`), `context_mask` (True on context tokens);
- training labels: `start_positions`/`end_positions` ("span") or `labels`, BIO tags per token ("bio");
- for post-processing: `example_index` (row of the question), `offset_mapping` (character span per token,
  [-1, -1] outside the context), `cls_index` (the [CLS] token, where no-answer is scored) and `length`.
"""

import contextlib
import itertools
import logging
import os
import secrets
from dataclasses import dataclass

import numpy as np
import orjson

from calibration import Calibrator, answer_evidence, reliability
from metrics.squad_v2.compute_score import best_score, exact_match, gold_answers
from qa_data import multi_span
from qa_decoding import WindowPaths, multi_span_answers, ranked_answers, window_candidates
from qa_windows import window_features

logger = logging.getLogger(__name__)

TAG_O, TAG_B, TAG_I = 0, 1, 2


def answer_tokens(offsets, answers):
    """(start, end) token indices of the first answer inside this window, or None when it is unanswerable or outside.

    offsets: (length, 2) character offsets of the window's tokens, -1 off the context.
    """
    if not answers["text"]:
        return None
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    tokens = np.flatnonzero(offsets[:, 0] >= 0)
    if not tokens.size or offsets[tokens[0], 0] > start_char or offsets[tokens[-1], 1] < end_char:
        return None
    start = tokens[np.searchsorted(offsets[tokens, 0], start_char, side="right") - 1]
    end = tokens[np.searchsorted(offsets[tokens, 1], end_char, side="left")]
    return start, end


def window_columns(examples, indices, tokenizer, args):
    """`qa_windows.window_features` of a batch of questions, each window's question as its row (`example_index`)
    rather than its place in the batch. Returns (columns, offsets): the columns but the offsets arrays."""
    columns = window_features(examples["question"], examples["context"], examples["id"], tokenizer,
                              args.max_seq_length, args.doc_stride, args.pad_to_max_length)
    columns["example_index"] = [indices[i] for i in columns.pop("window_question")]
    return columns, columns.pop("offsets")


def span_tags(offsets, spans):
    """(length,) BIO tags of a window whose context holds the token spans `spans` ((first, last) pairs)."""
    tags = np.full(len(offsets), TAG_O, dtype=np.int64)
    for first, last in spans:
        tags[first + 1 : last + 1] = TAG_I
        tags[first] = TAG_B
    return tags


def every_span_tokens(offsets, answers):
    """(first, last) tokens of each answer span that this window holds, whole or in part (as far as the window
    reaches), in context order: the pieces of a multi-span answer."""
    context = offsets[:, 0] >= 0
    spans = []
    for start_char, text in sorted(zip(answers["answer_start"], answers["text"])):
        inside = np.flatnonzero(context & (offsets[:, 0] < start_char + len(text)) & (offsets[:, 1] > start_char))
        if inside.size:
            spans.append((inside[0], inside[-1]))
    return spans


def train_features(examples, indices, tokenizer, args, scheme, every_span=False):
    """Training windows with labels: `scheme` "span" (start/end token of the first answer, [CLS] when no answer) or
    "bio" (tags: the first answer's span, or with `every_span` every span of a multi-span answer, each tagged as far
    as the window holds it: a span cut by the window's edge still marks answer tokens, which tagging O would teach
    to be none, and the window that holds it whole tags it whole)."""
    columns, offsets = window_columns(examples, indices, tokenizer, args)
    starts, ends, tags = [], [], []
    position = {index: i for i, index in enumerate(indices)}  # of each question in the batch
    for w, example in enumerate(columns["example_index"]):
        answers = examples["answers"][position[example]]
        span = answer_tokens(offsets[w], answers)
        cls_index = columns["cls_index"][w]
        starts.append(int(span[0]) if span else cls_index)
        ends.append(int(span[1]) if span else cls_index)
        spans = every_span_tokens(offsets[w], answers) if every_span else [span] if span else []
        tags.append(span_tags(offsets[w], spans).tolist())
    if scheme == "span":
        columns["start_positions"], columns["end_positions"] = starts, ends
    else:
        columns["labels"] = tags
    return columns


def eval_features(examples, indices, tokenizer, args):
    """Evaluation windows carrying what post-processing needs: offsets ([-1, -1] off the context)."""
    columns, offsets = window_columns(examples, indices, tokenizer, args)
    columns["offset_mapping"] = [o.tolist() for o in offsets]
    return columns


def column(table, name):
    """A whole column as a list: a `datasets` column read at once (row by row it is ~10x slower), or a list."""
    return table[name][:]


def padded_offsets(features):
    """(windows, longest window, 2) int array of the features' character offsets, -1 off the context and in padding."""
    # sorted windows are read by gathering their rows, which copies every column read: read this one alone
    column = features.select_columns(["offset_mapping"]).with_format("arrow")[:]["offset_mapping"].combine_chunks()
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)
    width = int(lengths.max())
    pairs = column.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, 2)
    offsets = np.full((len(lengths), width, 2), -1, dtype=np.int32)
    offsets[np.arange(width) < lengths[:, None]] = pairs  # row-major, as the pairs are flattened
    return offsets


def evaluation_candidates(head, outputs, features, offsets, args):
    """`qa_decoding.window_candidates` of evaluated windows: outputs as the Trainer gathers them (the model's
    `qa_decoding.OUTPUT_FIELDS[head]`, padded to the longest window), offsets from `padded_offsets`."""
    return window_candidates(head, outputs, offsets[..., 0] >= 0, np.asarray(column(features, "cls_index")),
                             args.n_best_size, args.max_answer_length)


@dataclass
class QuestionPredictions:
    """Everything evaluation and the output files need, per question id (in the questions' order)."""

    predictions: dict
    nbest: dict
    null_odds: dict
    metric_predictions: list


def question_predictions(examples, features, offsets, candidates, args):
    """Answers per question from the candidates of its windows (see `qa_decoding.ranked_answers`; a multi-span
    model's paths: `multi_span_predictions`).

    With `version_2_with_negative` the answer is "" when null score - best span score (the null odds) exceeds
    `null_score_diff_threshold`. Every question gets an entry. For multi-span questions (`qa_data.multi_span`) a
    question's prediction is the list of its answer's span texts, MultiSpanQA's prediction format (one span, or
    none, from a single-span model).
    """
    if isinstance(candidates, WindowPaths):
        return multi_span_predictions(examples, features, offsets, candidates, args)
    result = single_span_predictions(examples, features, offsets, candidates, args)
    if multi_span(examples):
        result.predictions = {qid: [answer] if answer else [] for qid, answer in result.predictions.items()}
        result.metric_predictions = [{"id": qid, "spans": spans} for qid, spans in result.predictions.items()]
    return result


def multi_span_predictions(examples, features, offsets, paths, args):
    """`question_predictions` of a multi-span model (`qa_decoding.multi_span_answers`): each question's answer spans,
    its ranked paths as its n-best list, its null odds (SQuAD v2)."""
    answers = multi_span_answers(
        column(examples, "context"), np.asarray(column(features, "example_index")), offsets, paths, args.n_best_size,
        args.version_2_with_negative, args.null_score_diff_threshold,
    )
    result, multi = QuestionPredictions({}, {}, {}, []), multi_span(examples)
    for qid, (answer, ranked, null_odds) in zip(column(examples, "id"), answers):
        spans = [span["text"] for span in answer["spans"]]
        result.predictions[qid] = spans if multi else answer["text"]
        result.nbest[qid] = ranked
        if args.version_2_with_negative:
            result.null_odds[qid] = null_odds
        result.metric_predictions.append(
            {"id": qid, "spans": spans} if multi else metric_prediction(qid, answer["text"], null_odds, args))
    return result


def single_span_predictions(examples, features, offsets, candidates, args):
    """`question_predictions` of single-span candidates."""
    ranked = ranked_answers(
        column(examples, "context"), np.asarray(column(features, "example_index")), offsets, candidates,
        args.n_best_size, args.version_2_with_negative,
    )
    result = QuestionPredictions({}, {}, {}, [])
    for qid, (answers, null, best) in zip(column(examples, "id"), ranked):
        best_text, best_score = (best["text"], best["score"]) if best else ("", -np.inf)
        answer = best_text
        if args.version_2_with_negative:
            result.null_odds[qid] = null - best_score
            if result.null_odds[qid] > args.null_score_diff_threshold:
                answer = ""
        result.nbest[qid] = answers
        result.predictions[qid] = answer
        result.metric_predictions.append(metric_prediction(qid, best_text, result.null_odds.get(qid), args))
    return result


def metric_prediction(qid, best_text, null_odds, args):
    """The metric's input for one question: its best non-null answer and, as `no_answer_probability`, the raw
    null odds (the metric only compares these values, so any real number works, and no squashing merges them).

    The metric applies the threshold itself (`no_answer_threshold` = `null_score_diff_threshold`, the same rule
    "null odds > threshold" as above), so it scores the same answers as the predictions file while
    best_exact/best_f1 search every threshold and report it in null-odds units.
    """
    if not args.version_2_with_negative:
        return {"id": qid, "prediction_text": best_text}
    return {"id": qid, "prediction_text": best_text, "no_answer_probability": float(null_odds)}


# Questions --calibrate needs at least: each of its 5 folds then fits on 80 or more and measures 20 or more.
MIN_CALIBRATION_QUESTIONS = 100
CALIBRATION_FOLDS = 5


@dataclass
class CalibrationEvidence:
    """Per evaluated question (SQuAD v2): its best span's margins and whether that span is right (exact match), its
    null odds and whether the empty answer is right (no gold answer), which of the two it returned, the n-best
    probability of what it returned (the uncalibrated score compared against), and its context (folds keep a
    context's questions together). Arrays of one row per question; a question without spans has NaN margins,
    left out of the span fit (it never returns a span)."""

    span_margins: np.ndarray
    span_right: np.ndarray
    null_odds: np.ndarray
    empty_right: np.ndarray
    returned_empty: np.ndarray
    raw_probability: np.ndarray
    context: np.ndarray

    def returned_right(self):
        return np.where(self.returned_empty, self.empty_right, self.span_right)

    def fit(self, rows):
        spans = rows & ~np.isnan(self.span_margins).any(axis=1)
        return Calibrator.fit(self.span_margins[spans], self.span_right[spans], self.null_odds[rows],
                              self.empty_right[rows])

    def probabilities(self, calibrator, rows):
        """P(right) of what the questions `rows` returned."""
        span = calibrator.span_probability(np.nan_to_num(self.span_margins[rows]))
        return np.where(self.returned_empty[rows], calibrator.empty_probability(self.null_odds[rows]), span)


def calibration_evidence(result, references, contexts):
    """`CalibrationEvidence` of the evaluated questions (`result`: their `QuestionPredictions`; `references`: the
    metric's gold answers, in the same order; `contexts`: theirs)."""
    rows = []
    for reference, context in zip(references, contexts, strict=True):
        qid = reference["id"]
        answers = result.nbest[qid]
        spans = [a for a in answers if a["text"]]
        empty = next(a for a in answers if not a["text"])
        golds = gold_answers(reference["answers"]["text"])
        margins, null_odds = answer_evidence([a["text"] for a in spans], [a["score"] for a in spans], empty["score"])
        returned_empty = result.predictions[qid] == ""
        rows.append((margins[0] if spans else np.full(2, np.nan),
                     bool(spans) and best_score(exact_match, spans[0]["text"], golds) == 1,
                     null_odds, golds == [""], returned_empty,
                     empty["probability"] if returned_empty else spans[0]["probability"], context))
    columns = list(zip(*rows))
    return CalibrationEvidence(np.stack(columns[0]), np.array(columns[1], dtype=bool), np.stack(columns[2]),
                               np.array(columns[3], dtype=bool), np.array(columns[4], dtype=bool),
                               np.array(columns[5], dtype=np.float64), np.array(columns[6], dtype=object))


def calibration_report(evidence, folds=CALIBRATION_FOLDS):
    """(the calibrator fitted on every question, metrics, reliability bins): expected calibration error and Brier
    score of the calibrated probability of each returned answer, measured by `folds`-fold cross-validation (each
    question's probability from the calibrator fitted on the other folds; a context's questions in one fold), and
    of the raw n-best probability."""
    _, context_index = np.unique(evidence.context, return_inverse=True)
    fold = np.random.default_rng(0).permutation(context_index.max() + 1)[context_index] % folds
    out_of_fold = np.empty(len(fold))
    for k in range(folds):
        held_out = fold == k
        out_of_fold[held_out] = evidence.probabilities(evidence.fit(~held_out), held_out)
    right = evidence.returned_right()
    calibrated, raw = reliability(out_of_fold, right), reliability(evidence.raw_probability, right)
    metrics = {"calibration_questions": len(right), "calibration_right": float(right.mean()),
               "calibrated_ece": calibrated["ece"], "calibrated_brier": calibrated["brier"],
               "raw_ece": raw["ece"], "raw_brier": raw["brier"]}
    return evidence.fit(np.ones(len(right), dtype=bool)), metrics, {"calibrated": calibrated["bins"],
                                                                     "raw": raw["bins"]}


class OutputError(RuntimeError):
    """An output file could not be written (a full disk, no permission); the message names it and says why."""


def write_atomically(path, data):
    """Write bytes, or an iterable of byte strings one after the other, to a temporary file beside `path` and rename
    it to `path`, so an interrupted run never leaves a half-written file.

    The temporary file has a random name and is created exclusively: never through an existing file or a link
    planted there. A failed write removes it, leaves `path` as it was, and raises `OutputError` naming `path`."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp, created = os.path.join(folder, f".{name}.{secrets.token_hex(8)}.tmp"), False
    try:
        with open(tmp, "xb") as f:
            created = True
            for chunk in [data] if isinstance(data, bytes) else data:
                f.write(chunk)
        os.replace(tmp, path)
    except OSError as err:
        if created:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise OutputError(f"Cannot write {path}: {err.strerror or err}. Outputs written before it are complete; "
                          f"free some space or fix the folder's permissions and run again") from err


def write_json_atomically(path, payload, indent=True):
    """Write JSON (UTF-8, indented by 2 or compact) atomically. orjson: the n-best file of the SQuAD v2 dev set
    takes 1 s with `json`. A compact dict is encoded an entry at a time: that n-best file (190 MB from an untrained
    CRF's long spans) would otherwise sit in memory whole, beside the answers it is made of (and it is written in a
    third of the time: 0.16 against 0.51 s)."""
    options = orjson.OPT_SERIALIZE_NUMPY
    if indent or not isinstance(payload, dict):
        options |= orjson.OPT_APPEND_NEWLINE | (orjson.OPT_INDENT_2 if indent else 0)
        return write_atomically(path, orjson.dumps(payload, option=options))
    entries = (b"%s%s:%s" % (b"," if i else b"", orjson.dumps(key), orjson.dumps(value, option=options))
               for i, (key, value) in enumerate(payload.items()))
    write_atomically(path, itertools.chain([b"{"], entries, [b"}\n"]))


def write_prediction_files(result, output_dir, prefix):
    """`{prefix}_predictions.json`, `{prefix}_nbest_predictions.json` and, for SQuAD v2, `{prefix}_null_odds.json`."""
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomically(os.path.join(output_dir, f"{prefix}_predictions.json"), result.predictions)
    # compact: the n-best file is by far the largest (54 MB for the SQuAD v2 dev set indented)
    write_json_atomically(os.path.join(output_dir, f"{prefix}_nbest_predictions.json"), result.nbest, indent=False)
    if result.null_odds:
        write_json_atomically(os.path.join(output_dir, f"{prefix}_null_odds.json"), result.null_odds)
    logger.info(f"Wrote {prefix} predictions of {len(result.predictions)} questions to {output_dir}")
