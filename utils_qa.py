"""The QA steps both heads share: questions -> windows (with labels) -> candidates -> answers per question -> files.

Window features (one row per window of `max_seq_length` tokens over a question and its context):
- model inputs: `input_ids`, `attention_mask` (and `token_type_ids`), `context_mask` (True on context tokens);
- training labels: `start_positions`/`end_positions` ("span") or `labels`, BIO tags per token ("bio");
- for post-processing: `example_index` (row of the question), `offset_mapping` (character span per token,
  [-1, -1] outside the context), `cls_index` (the [CLS] token, where no-answer is scored) and `length`.
"""

import itertools
import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import orjson
import torch

from qa_windows import cls_indices, context_offsets, tokenized_windows
from span_decoding import WindowCandidates, null_scores, ranked_answers, span_candidates

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


def window_rows(examples, indices, tokenizer, args):
    """Per-window columns common to training and evaluation, plus each window's context offsets."""
    encoded = tokenized_windows(
        examples["question"], examples["context"], examples["id"], tokenizer,
        args.max_seq_length, args.doc_stride, args.pad_to_max_length,
    )
    offsets = context_offsets(encoded, tokenizer)
    columns = {name: encoded[name] for name in encoded.keys() if name not in ("offset_mapping", "overflow_to_sample_mapping")}
    columns["example_index"] = [indices[i] for i in encoded["overflow_to_sample_mapping"]]
    columns["context_mask"] = [(o[:, 0] >= 0).tolist() for o in offsets]
    columns["cls_index"] = cls_indices(encoded, tokenizer)
    columns["length"] = [int(np.sum(m)) for m in encoded["attention_mask"]]
    return encoded, columns, offsets


def train_features(examples, indices, tokenizer, args, scheme):
    """Training windows with labels: `scheme` "span" (start/end token, [CLS] when no answer) or "bio" (tags)."""
    encoded, columns, offsets = window_rows(examples, indices, tokenizer, args)
    starts, ends, tags = [], [], []
    for w, example in enumerate(encoded["overflow_to_sample_mapping"]):
        span = answer_tokens(offsets[w], examples["answers"][example])
        cls_index = columns["cls_index"][w]
        starts.append(int(span[0]) if span else cls_index)
        ends.append(int(span[1]) if span else cls_index)
        window_tags = np.full(len(offsets[w]), TAG_O, dtype=np.int64)
        if span:
            window_tags[span[0]] = TAG_B
            window_tags[span[0] + 1 : span[1] + 1] = TAG_I
        tags.append(window_tags.tolist())
    if scheme == "span":
        columns["start_positions"], columns["end_positions"] = starts, ends
    else:
        columns["labels"] = tags
    return columns


def eval_features(examples, indices, tokenizer, args):
    """Evaluation windows carrying what post-processing needs: offsets ([-1, -1] off the context)."""
    _, columns, offsets = window_rows(examples, indices, tokenizer, args)
    columns["offset_mapping"] = [o.tolist() for o in offsets]
    return columns


@dataclass
class WindowCollator:
    """Pads every per-token feature of a batch to its longest window (the tokenizer's side and pad id)."""

    pad_token_id: int
    padding_side: str = "right"
    pad_to_multiple_of: int | None = None

    def __call__(self, features):
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {}
        for key in features[0]:
            values = [f[key] for f in features]
            if not isinstance(values[0], (list, tuple, np.ndarray)):
                batch[key] = torch.tensor(values)
                continue
            pad = self.pad_token_id if key == "input_ids" else 0
            dtype = torch.bool if key == "context_mask" else torch.long
            padded = torch.full((len(values), width), pad, dtype=dtype)
            for row, value in enumerate(values):
                value = torch.as_tensor(value, dtype=dtype)
                if self.padding_side == "right":
                    padded[row, : len(value)] = value
                else:
                    padded[row, width - len(value) :] = value
            batch[key] = padded
        return batch


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


def span_head_candidates(outputs, features, offsets, args):
    """Candidates of a start/end-logit model. outputs: (start_logits, end_logits), each (windows, length)."""
    # logits are padded to the longest window, as the offsets are
    width = offsets.shape[1]
    start_logits, end_logits = (np.asarray(o, dtype=np.float32)[:, :width] for o in outputs[:2])
    window, start, end, score = span_candidates(
        start_logits, end_logits, offsets[..., 0] >= 0, args.n_best_size, args.max_answer_length
    )
    cls_index = np.asarray(column(features, "cls_index"))
    return WindowCandidates(window, start, end, score, null_scores(start_logits, end_logits, cls_index))


@dataclass
class QuestionPredictions:
    """Everything evaluation and the output files need, per question id (in the questions' order)."""

    predictions: dict
    nbest: dict
    null_odds: dict
    metric_predictions: list


def question_predictions(examples, features, offsets, candidates, args):
    """Answers per question from the candidates of its windows (see `span_decoding.ranked_answers`).

    With `version_2_with_negative` the answer is "" when null score - best span score (the null odds) exceeds
    `null_score_diff_threshold`. Every question gets an entry.
    """
    ranked = ranked_answers(
        column(examples, "context"), np.asarray(column(features, "example_index")), offsets, candidates,
        args.n_best_size, args.version_2_with_negative,
    )
    result = QuestionPredictions({}, {}, {}, [])
    for qid, (answers, null, best) in zip(column(examples, "id"), ranked):
        best_text, best_score = (best["text"], best["score"]) if best else ("", -math.inf)
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


def write_atomically(path, data):
    """Write bytes, or an iterable of byte strings one after the other, to a temporary name and rename, so an
    interrupted run never leaves a half-written file."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        for chunk in [data] if isinstance(data, bytes) else data:
            f.write(chunk)
    os.replace(tmp, path)


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


def crf_head_candidates(outputs, features, offsets, args):
    """Candidates of a CRF model: each window's n-best single-span paths (the model's `n_best_size`, which the run sets
    to `--n_best_size`), best first. outputs: (span_start, span_end, span_score, null_score), the first three
    (windows, n) with -inf scores past a window's last span (or (windows,), one span each), null_score (windows,)."""
    null_score = np.asarray(outputs[3]).reshape(-1)
    span_start, span_end, span_score = (np.asarray(o).reshape(len(null_score), -1) for o in outputs[:3])
    window, slot = np.nonzero(np.isfinite(span_score))  # by window, then best first
    return WindowCandidates(
        window, span_start[window, slot], span_end[window, slot], span_score[window, slot].astype(np.float32),
        null_score.astype(np.float32),
    )
