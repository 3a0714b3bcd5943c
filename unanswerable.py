"""Unanswerable training questions made from answerable ones, for training data with few unanswerable questions
(`--unanswerable_cuts`, `--unanswerable_pairs`, `--unanswerable_edits`).

SQuAD v2's unanswerable questions were written against their paragraph, mostly as small edits of answerable ones;
edited and cut copies come closer to them than pairs, which mostly teach whether a paragraph is about the question at
all.
"""

import logging
import re
from collections import Counter

import datasets
import numpy as np

logger = logging.getLogger(__name__)


SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentence_spans(text):
    """(start, end) character spans of the sentences of `text` (split after . ! or ? and whitespace)."""
    spans, start = [], 0
    for gap in SENTENCE_END.finditer(text):
        spans.append((start, gap.start()))
        start = gap.end()
    return spans + [(start, len(text))]


def answer_cut(context, answers):
    """`context` without the sentences that hold an answer, or None when nothing, or an answer text, would be left."""
    answer_spans = [(start, start + len(text)) for text, start in zip(answers["text"], answers["answer_start"])]
    kept = [context[s:e] for s, e in sentence_spans(context)
            if not any(s < answer_end and answer_start < e for answer_start, answer_end in answer_spans)]
    cut = " ".join(kept)
    if not cut.strip() or any(text.lower() in cut.lower() for text in answers["text"]):
        return None
    return cut


AUXILIARY = re.compile(r"\b(?:is|are|was|were|do|does|did|can|could|will|would|should|has|have|had|might|must)\b",
                       re.IGNORECASE)
NEGATION = re.compile(r"\b(?:not|never|no)\b|n't", re.IGNORECASE)
NUMBER = re.compile(r"\b\d+\b")
MID_SENTENCE_NAME = re.compile(r"(?<=[a-z0-9,;] )[A-Z][a-z]+\b")


def negated(question, context, answers, rng):
    """`question` with "not" after its first auxiliary verb ("Who did not ..."), or None."""
    auxiliary = AUXILIARY.search(question)
    if auxiliary is None or NEGATION.search(question):
        return None
    return f"{question[:auxiliary.end()]} not{question[auxiliary.end():]}"


def number_changed(question, context, answers, rng):
    """`question` with one of its numbers moved by 1 to 9 to a number the context does not hold, or None."""
    numbers = list(NUMBER.finditer(question))
    if not numbers:
        return None
    number = numbers[rng.integers(len(numbers))]
    moved = str(abs(int(number.group()) + int(rng.choice([-1, 1]) * rng.integers(1, 10))))
    if moved == number.group() or re.search(rf"\b{moved}\b", context):  # abs() can land back on a small number
        return None
    return f"{question[:number.start()]}{moved}{question[number.end():]}"


def name_swapped(question, context, answers, rng):
    """`question` with a capitalised word that the context holds replaced by another one of the context that
    neither the question nor an answer holds ("Who travels to Austria" for "Australia"), or None."""
    names = [name for name in MID_SENTENCE_NAME.finditer(question) if name.group() in context]
    taken = " ".join([question, *answers["text"]])
    others = sorted({other for other in MID_SENTENCE_NAME.findall(context) if other not in taken})
    if not names or not others:
        return None
    name = names[rng.integers(len(names))]
    return f"{question[:name.start()]}{others[rng.integers(len(others))]}{question[name.end():]}"


QUESTION_EDITS = (negated, number_changed, name_swapped)


def question_edit(question, context, answers, rng):
    """`question` changed by one small edit its context no longer answers, as SQuAD v2's writers made most of its
    unanswerable questions (negation, another number, another name), or None when no edit applies."""
    edits = [edit(question, context, answers, rng) for edit in QUESTION_EDITS]
    edits = [edit for edit in edits if edit is not None]
    return edits[rng.integers(len(edits))] if edits else None


def with_unanswerable_copies(questions, cuts=0.0, pairs=0.0, edits=0.0, seed=42):
    """`questions` followed by unanswerable copies of some of its answerable questions, for training data with
    few unanswerable questions. Each answerable question draws once: with probability `cuts` its copy keeps the
    context without the sentences holding the answer (id `<id>-cut`); with probability `pairs` its copy is asked
    of another paragraph of the same article (same title) in which no answer text occurs (id `<id>-pair`); with
    probability `edits` its copy asks an edited question of the same context (`question_edit`, id `<id>-edit`).
    Questions whose copy would still hold an answer text, or that no edit applies to, get none.
    The choice depends only on `seed`.
    """
    rows = questions.to_dict()
    paragraphs = {}
    for title, context in zip(rows["title"], rows["context"]):
        paragraphs.setdefault(title, {})[context] = None  # distinct contexts, in order of appearance
    rng = np.random.default_rng(seed)
    draws = rng.random(len(questions))
    copies = {name: [] for name in rows}
    for i, draw in enumerate(draws):
        answers, context, question = rows["answers"][i], rows["context"][i], rows["question"][i]
        if not answers["text"] or draw >= cuts + pairs + edits:
            continue
        if draw < cuts:
            kind, context = "cut", answer_cut(context, answers)
        elif draw < cuts + pairs:
            texts = [text.lower() for text in answers["text"]]
            others = [c for c in paragraphs[rows["title"][i]] if not any(text in c.lower() for text in texts)]
            kind, context = "pair", others[rng.integers(len(others))] if others else None
        else:
            kind, question = "edit", question_edit(question, context, answers, rng)
        if context is None or question is None:
            continue
        copies["id"].append(f"{rows['id'][i]}-{kind}")
        copies["title"].append(rows["title"][i])
        copies["context"].append(context)
        copies["question"].append(question)
        copies["answers"].append({"text": [], "answer_start": []})
    kinds = Counter(qid.rsplit("-", 1)[1] for qid in copies["id"])
    logger.info(f"Added {kinds['cut']} answer-cut, {kinds['pair']} other-paragraph and {kinds['edit']} edited-question "
                f"unanswerable copies to {len(questions)} questions")
    return datasets.concatenate_datasets([questions, datasets.Dataset.from_dict(copies, features=questions.features)])
