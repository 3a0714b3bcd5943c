"""A question over many passages (the reader's job): its passages as one collection, answered as one context.

A retriever hands a reader a question and the passages it found. The pipeline answers it as evaluation answers a
question whose context is cut into several windows: every passage is cut into windows of its own (no window spans
two passages), all of them go through the model in shared batches, their candidates are ranked together by the
decoder's score, and the collection's null score is the lowest of all its windows' (the window that sees an answer
best decides), so "" is answered once for the whole collection, when no passage holds an answer the model prefers to
none by the folder's threshold. The passages are joined into one text (`Collection.joined`) only to reuse that
machinery: a span never crosses a passage, and `Collection.located` gives its passage and its offsets there.

Self-contained (numpy only): model folders carry it beside the question-answering pipeline.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# Between passages in the joined text; never part of an answer (windows hold one passage each).
SEPARATOR = "\n\n"
# The fields of a passage dict the pipeline reads; any other key is returned with the passage's answers.
TEXT, ID, TITLE = "text", "id", "title"


def checked_text(value, where):
    """`value` if it is a non-empty string that is Unicode (no unpaired surrogate), else ValueError naming `where`."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a non-empty string, got {value!r:.100}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{where} holds an unpaired surrogate at character {err.start} (half of a broken \\uXXXX "
                         f"escape, such as a JSON-escaped emoji cut in two): {value!r:.100}") from None
    return value


def passage_fields(passage, where):
    """(text, the rest of the passage) of a passage: a string, or a dict with a "text", an optional "id" (string or
    integer) and "title" (string), and any other keys (kept, and returned with its answers)."""
    if isinstance(passage, str):
        return checked_text(passage, where), {}
    if not isinstance(passage, Mapping):
        raise ValueError(f"{where}: a passage is a string or a {{'text': ..., 'id': ..., 'title': ...}} dict, got "
                         f"{passage!r:.100}")
    if TEXT not in passage:
        raise KeyError(f"{where}: the passage dict has no 'text' key")
    rest = {key: value for key, value in passage.items() if key != TEXT}
    if rest.get(ID) is not None and (not isinstance(rest[ID], (str, int)) or isinstance(rest[ID], bool)):
        raise ValueError(f"{where}: 'id' must be a string or an integer, got {rest[ID]!r:.100}")
    if rest.get(TITLE) is not None and not isinstance(rest[TITLE], str):
        raise ValueError(f"{where}: 'title' must be a string, got {rest[TITLE]!r:.100}")
    return checked_text(passage[TEXT], f"{where}: 'text'"), rest


def split_passages(joined, starts):
    """The passages' texts of a `Collection.joined` text whose passages begin at `starts`."""
    ends = [start - len(SEPARATOR) for start in starts[1:]] + [len(joined)]
    return [joined[start:end] for start, end in zip(starts, ends)]


@dataclass(frozen=True)
class Collection:
    """The passages of one question.

    texts: each passage's text; fields: each passage's other keys ("id", "title", ...), as given.
    starts: (passages,) int, where each passage begins in `joined`.
    """

    texts: tuple
    fields: tuple
    starts: np.ndarray

    @classmethod
    def of(cls, passages, where):
        """The collection of a list of passages (see `passage_fields`); ValueError naming `where` and the passage."""
        if isinstance(passages, (str, Mapping)) or not isinstance(passages, (list, tuple)):
            raise ValueError(f"{where}: must be a list of passages (strings or dicts), got {type(passages).__name__}")
        if not passages:
            raise ValueError(f"{where}: no passages; give at least one")
        texts, fields = zip(*(passage_fields(p, f"{where}, passage {i}") for i, p in enumerate(passages)))
        lengths = np.array([len(text) + len(SEPARATOR) for text in texts], dtype=np.int64)
        return cls(texts, fields, np.concatenate([[0], np.cumsum(lengths)[:-1]]))

    @cached_property
    def joined(self):
        return SEPARATOR.join(self.texts)

    def passage_of(self, char_starts):
        """(n,) the passage holding each of the joined text's character offsets `char_starts`."""
        return np.searchsorted(self.starts, np.asarray(char_starts, dtype=np.int64), side="right") - 1

    def located(self, answer):
        """`answer` (a dict with "start" and "end" in the joined text) with offsets into its passage's text and the
        passage named: "passage" (its index), "passage_id" and "title" (None where not given) and "meta" (the
        passage's other keys); the empty answer names no passage."""
        if not answer["answer"]:
            return {**answer, "passage": None, "passage_id": None, "title": None, "meta": {}}
        p = int(self.passage_of([answer["start"]])[0])
        fields = self.fields[p]
        meta = {key: value for key, value in fields.items() if key not in (ID, TITLE)}
        shift = int(self.starts[p])
        return {**answer, "start": answer["start"] - shift, "end": answer["end"] - shift, "passage": p,
                "passage_id": fields.get(ID), "title": fields.get(TITLE), "meta": meta}
