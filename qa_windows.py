"""Question + context -> token windows: the tokenization shared by training, evaluation and the pipeline.

Self-contained (a tokenizer is all it needs): it is copied into saved model folders beside the question-answering
pipeline, so inference cuts windows exactly as evaluation does.
"""

import logging

import numpy as np

logger = logging.getLogger(__name__)


def max_question_tokens(tokenizer, max_seq_length, doc_stride):
    """Longest question (in tokens) that still leaves the context more room than the stride."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    return max_seq_length - doc_stride - specials - 1


def capped_questions(questions, ids, tokenizer, max_tokens):
    """Questions cut to `max_tokens` tokens, warning (with a count and examples) for each one cut."""
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    capped, cut = [], []
    for qid, question, offsets in zip(ids, questions, encoded["offset_mapping"]):
        if len(offsets) > max_tokens:
            question = question[: offsets[max_tokens - 1][1]]
            cut.append(qid)
        capped.append(question)
    if cut:
        logger.warning(
            f"{len(cut)} question(s) are longer than {max_tokens} tokens and were truncated to fit a window "
            f"(ids: {', '.join(map(str, cut[:5]))}{' ...' if len(cut) > 5 else ''})"
        )
    return capped


def tokenized_windows(questions, contexts, ids, tokenizer, max_seq_length=384, doc_stride=128, pad_to_max_length=False,
                      max_question_len=None):
    """Tokenizer output with one row per window of `max_seq_length` tokens, `doc_stride` tokens of overlap between
    consecutive windows of a context, with character offsets and `overflow_to_sample_mapping` (window -> question).

    Questions come first (second with tokenizers that pad on the left) and are cut to `max_question_len` tokens,
    or to what leaves the context more room than the stride; only the context is split.
    """
    pad_on_right = tokenizer.padding_side == "right"
    max_tokens = max_question_tokens(tokenizer, max_seq_length, doc_stride)
    if max_question_len is not None:
        max_tokens = min(max_tokens, max_question_len)
    questions = capped_questions([q.lstrip() for q in questions], ids, tokenizer, max_tokens)
    return tokenizer(
        questions if pad_on_right else contexts,
        contexts if pad_on_right else questions,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length" if pad_to_max_length else False,
    )


def context_offsets(encoded, tokenizer):
    """Per window: (length, 2) int array of character offsets into the context, [-1, -1] on every other token."""
    context_sequence = 1 if tokenizer.padding_side == "right" else 0
    windows = []
    for w, offsets in enumerate(encoded["offset_mapping"]):
        is_context = np.array([s == context_sequence for s in encoded.sequence_ids(w)])
        windows.append(np.where(is_context[:, None], np.array(offsets, dtype=np.int64).reshape(-1, 2), -1))
    return windows


def cls_indices(encoded, tokenizer):
    """Per window: position of the [CLS] token, where the no-answer score is read (0 if there is none)."""
    cls_id = tokenizer.cls_token_id
    return [ids.index(cls_id) if cls_id in ids else 0 for ids in encoded["input_ids"]]
