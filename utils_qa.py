"""The QA steps of training and evaluation around the model: questions -> windows (with labels) -> candidates ->
answers per question (written by `outputs.py`).

Window features (one row per window of `max_seq_length` tokens over a question and its context, built by
`qa_windows.window_features` as the pipeline builds them):
- model inputs: `input_ids`, `attention_mask` (and `token_type_ids`), `context_mask` (True on context tokens);
- training labels: `start_positions`/`end_positions` ("span") or `labels`, BIO tags per token ("bio");
- for post-processing: `example_index` (row of the question), `offset_mapping` (character span per token,
  [-1, -1] outside the context), `cls_index` (the [CLS] token, where no-answer is scored) and `length`.
"""

import bisect
from dataclasses import dataclass

import numpy as np

from model_folder.crf_decoding import TAG_B, TAG_I, TAG_O
from model_folder.qa_decoding import WindowPaths, multi_span_answers, ranked_answers, window_candidates
from model_folder.qa_passages import split_passages
from model_folder.qa_windows import window_features


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


def context_pieces(examples):
    """(texts, rows, shifts): what of each question's context is cut into windows, the question (its place in the
    batch) each text belongs to, and where the text begins in that context: the whole context, or for questions over
    passages (a `passage_starts` column) each passage of the joined context alone, as the pipeline cuts them."""
    all_starts = examples.get("passage_starts") or [[0]] * len(examples["context"])
    texts, rows, shifts = [], [], []
    for row, (context, starts) in enumerate(zip(examples["context"], all_starts)):
        texts.extend(split_passages(context, starts))
        rows.extend([row] * len(starts))
        shifts.extend(starts)
    return texts, rows, shifts


def window_columns(examples, indices, tokenizer, settings, pad_to_max_length=False):
    """`qa_windows.window_features` of a batch of questions, cut as `settings` (`QASettings`) say, each window's
    question as its row (`example_index`) rather than its place in the batch, its offsets into the question's whole
    context (`context_pieces`). Returns (columns, offsets): the columns but the offsets arrays."""
    texts, rows, shifts = context_pieces(examples)
    columns = window_features([examples["question"][r] for r in rows], texts, [examples["id"][r] for r in rows],
                              tokenizer, settings.max_seq_length, settings.doc_stride, pad_to_max_length)
    pieces = columns.pop("window_question")
    columns["example_index"] = [indices[rows[p]] for p in pieces]
    offsets = [np.where(o >= 0, o + shifts[p], o) if shifts[p] else o for o, p in zip(columns.pop("offsets"), pieces)]
    return columns, offsets


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


def train_features(examples, indices, tokenizer, settings, scheme, every_span=False, pad_to_max_length=False):
    """Training windows with labels: `scheme` "span" (start/end token of the first answer, [CLS] when no answer) or
    "bio" (tags: the first answer's span, or with `every_span` every span of a multi-span answer, each tagged as far
    as the window holds it: a span cut by the window's edge still marks answer tokens, which tagging O would teach
    to be none, and the window that holds it whole tags it whole)."""
    columns, offsets = window_columns(examples, indices, tokenizer, settings, pad_to_max_length)
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


def eval_features(examples, indices, tokenizer, settings, pad_to_max_length=False):
    """Evaluation windows carrying what post-processing needs: offsets ([-1, -1] off the context)."""
    columns, offsets = window_columns(examples, indices, tokenizer, settings, pad_to_max_length)
    columns["offset_mapping"] = [o.tolist() for o in offsets]
    return columns


def longest_first(windows):
    """`windows` (a Dataset with a `length` column) longest first, equal lengths in their order: the order of
    `windows.sort("length", reverse=True)`, without the deprecation warning pyarrow gives there."""
    return windows.select(np.argsort(-np.asarray(windows["length"]), kind="stable"))


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


def evaluation_candidates(settings, outputs, features, offsets):
    """`qa_decoding.window_candidates` of evaluated windows, decoded as `settings` say: outputs as the Trainer gathers
    them (the model's `qa_decoding.OUTPUT_FIELDS[settings.decoder]`, padded to the longest window), offsets from
    `padded_offsets`."""
    return window_candidates(settings.decoder, outputs, offsets[..., 0] >= 0, np.asarray(column(features, "cls_index")),
                             settings.n_best_size, settings.max_answer_length)


@dataclass
class QuestionPredictions:
    """Everything evaluation and the output files need, per question id (in the questions' order)."""

    predictions: dict
    nbest: dict
    null_odds: dict
    metric_predictions: list


def question_predictions(questions, features, offsets, candidates, settings):
    """Answers per question (of the `QuestionSet` `questions`) from the candidates of its windows (see
    `qa_decoding.ranked_answers`; a multi-span model's paths: `multi_span_predictions`).

    With `settings.version_2_with_negative` the answer is "" when null score - best span score (the null odds)
    exceeds `settings.null_score_diff_threshold`. Every question gets an entry. For multi-span questions a question's
    prediction is the list of its answer's span texts, MultiSpanQA's prediction format (one span, or none, from a
    single-span model). For questions over passages each n-best answer names its passage (`with_passages`).
    """
    if isinstance(candidates, WindowPaths):
        result = multi_span_predictions(questions, features, offsets, candidates, settings)
    else:
        result = single_span_predictions(questions.rows, features, offsets, candidates, settings)
        if questions.multi_span:
            result.predictions = {qid: [answer] if answer else [] for qid, answer in result.predictions.items()}
            result.metric_predictions = [{"id": qid, "spans": spans} for qid, spans in result.predictions.items()]
    if questions.over_passages:
        with_passages(result.nbest, column(questions.rows, "id"), column(questions.rows, "passage_starts"))
    return result


def with_passages(nbest, ids, passage_starts):
    """Each n-best answer of questions over passages ({id: answers}, changed in place) named by its passage, as the
    pipeline reports them: a single span with its `passage` (index; None for the empty answer) and its `start` /
    `end` in that passage's text; a multi-span answer with each of its `spans` so and its `passage` its first span's
    (a path is one window's, and a window lies in one passage)."""
    for qid, starts in zip(ids, passage_starts):
        for answer in nbest[qid]:
            if "spans" in answer:
                passages = [in_passage(span, starts) for span in answer["spans"]]
                answer["passage"] = passages[0] if passages else None
            else:
                in_passage(answer, starts)


def in_passage(answer, starts):
    """The passage holding `answer` (a dict with "text", and "start" / "end" in the joined text of passages beginning
    at `starts`), None for an empty answer; the answer gets it as "passage", its offsets moved into its text."""
    passage = bisect.bisect_right(starts, answer["start"]) - 1 if answer["text"] else None
    if passage is not None:
        answer.update(start=answer["start"] - starts[passage], end=answer["end"] - starts[passage])
    answer["passage"] = passage
    return passage


def multi_span_predictions(questions, features, offsets, paths, settings):
    """`question_predictions` of a multi-span model (`qa_decoding.multi_span_answers`): each question's answer spans,
    its ranked paths as its n-best list, its null odds (SQuAD v2)."""
    with_null = settings.version_2_with_negative
    answers = multi_span_answers(
        column(questions.rows, "context"), np.asarray(column(features, "example_index")), offsets, paths,
        settings.n_best_size, with_null, settings.null_score_diff_threshold,
    )
    result = QuestionPredictions({}, {}, {}, [])
    for qid, (answer, ranked, null_odds) in zip(column(questions.rows, "id"), answers):
        spans = [span["text"] for span in answer["spans"]]
        result.predictions[qid] = spans if questions.multi_span else answer["text"]
        result.nbest[qid] = ranked
        if with_null:
            result.null_odds[qid] = null_odds
        result.metric_predictions.append({"id": qid, "spans": spans} if questions.multi_span else
                                         metric_prediction(qid, answer["text"], null_odds if with_null else None))
    return result


def single_span_predictions(examples, features, offsets, candidates, settings):
    """`question_predictions` of single-span candidates of the questions Dataset `examples`."""
    with_null = settings.version_2_with_negative
    ranked = ranked_answers(column(examples, "context"), np.asarray(column(features, "example_index")), offsets,
                            candidates, settings.n_best_size, with_null)
    result = QuestionPredictions({}, {}, {}, [])
    for qid, (answers, null, best) in zip(column(examples, "id"), ranked):
        best_text, best_score = (best["text"], best["score"]) if best else ("", -np.inf)
        answer = best_text
        if with_null:
            result.null_odds[qid] = null - best_score
            if result.null_odds[qid] > settings.null_score_diff_threshold:
                answer = ""
        result.nbest[qid] = answers
        result.predictions[qid] = answer
        result.metric_predictions.append(metric_prediction(qid, best_text, result.null_odds.get(qid)))
    return result


def metric_prediction(qid, best_text, null_odds=None):
    """The metric's input for one question: its best non-null answer and, for SQuAD v2 (`null_odds` given), the raw
    null odds as `no_answer_probability` (the metric only compares these values, so any real number works, and no
    squashing merges them).

    The metric applies the threshold itself (`no_answer_threshold` = `null_score_diff_threshold`, the same rule
    "null odds > threshold" as above), so it scores the same answers as the predictions file while
    best_exact/best_f1 search every threshold and report it in null-odds units.
    """
    if null_odds is None:
        return {"id": qid, "prediction_text": best_text}
    return {"id": qid, "prediction_text": best_text, "no_answer_probability": float(null_odds)}
