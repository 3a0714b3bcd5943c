"""Questions in, questions out: read SQuAD-style files or Hub datasets and check every record.

Every source becomes a `QuestionSet`: a `datasets.Dataset` of questions with the columns
`id, title, context, question, answers{text: [str], answer_start: [int]}` (the Hub's `squad_v2` schema), and
whether they came with answers and whether those are multi-span.

Accepted files:
- official SQuAD JSON (v1.1 or v2.0), nested `data[].paragraphs[].qas[]`, plain or `.gz` (TyDiQA-GoldP too);
- MRQA 2019 JSON lines (`.jsonl`, `.jsonl.gz`), recognised by their header line (see `mrqa_records`);
- MultiSpanQA JSON (`{"data": [...]}`, questions and contexts as word lists, a B/I/O label per context word),
  recognised by its word-list contexts (see `multispanqa_records`);
- the flat schema above as JSON (a list, or `{"data": [...]}`), JSON lines, parquet or CSV
  (in CSV the `answers` cell holds the answers dict as JSON).

Multi-span questions, whose answer is a *set* of spans that together answer it ("Who sang it?" -> "Dave Stewart"
and "Barbara Gaskin"), come from MultiSpanQA files or from flat files whose records carry `spans` (shaped as
`answers`) instead of `answers`; their `QuestionSet` says so (`multi_span`), and its `answers` column then holds
every span of a question's answer rather than alternative answers.

Flat files and Hub datasets may name the question, context and answers columns otherwise (`columns`, from
--question_column_name, --context_column_name and --answer_column_name); the other formats name their own fields.

Problems that make a record unusable raise `QADataError` naming the file, the record and the problem.
Problems the loader can repair (an `answer_start` that does not point at its text while the text occurs in the
context) are repaired and counted in one warning per file.
"""

import dataclasses
import gzip
import json
import logging
import operator
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import datasets
import numpy as np

from model_folder.crf_decoding import BIO_TAGS

logger = logging.getLogger(__name__)

QUESTION_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {"text": datasets.List(datasets.Value("string")), "answer_start": datasets.List(datasets.Value("int32"))},
    }
)
REQUIRED_FIELDS = ("id", "context", "question", "answers")
MAX_REPORTED_PROBLEMS = 5
# The default {schema name: column name} of the question, context and answers of flat files and Hub datasets, and
# the arguments that name them otherwise.
SCHEMA_COLUMNS = MappingProxyType({"question": "question", "context": "context", "answers": "answers"})
COLUMN_ARGUMENTS = {"question": "--question_column_name", "context": "--context_column_name",
                    "answers": "--answer_column_name"}


@dataclass(frozen=True)
class QuestionSet:
    """One split's checked questions: `rows`, a Dataset of the schema above, and what kind of answers they carry.

    labelled: the questions came with their answers (empty for unanswerable ones), so predictions are scored;
        questions to predict on may come without.
    multi_span: each question's `answers` are the spans of one multi-span answer (MultiSpanQA), not alternatives.
    over_passages: each question is asked of several passages (`reader_data.py`): its `context` is their joined
        text and its `passage_starts` column says where each begins; windows never cross a passage.
    """

    rows: datasets.Dataset
    labelled: bool = True
    multi_span: bool = False
    over_passages: bool = False

    def __len__(self):
        return len(self.rows)

    def first(self, limit):
        """The first `limit` questions (all of them for None)."""
        if limit is None:
            return self
        return dataclasses.replace(self, rows=self.rows.select(range(min(limit, len(self.rows)))))

    def with_rows(self, rows):
        """The same kind of questions, other rows."""
        return dataclasses.replace(self, rows=rows)


class QADataError(ValueError):
    """A data file that cannot be used as it is; the message names the file, the records and the problems."""


def problems_message(source, problems):
    """`problems`: list of (record locator, problem). Returns one message listing the first few."""
    shown = "\n".join(f"  {where}: {what}" for where, what in problems[:MAX_REPORTED_PROBLEMS])
    more = len(problems) - MAX_REPORTED_PROBLEMS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return f"{source}: {len(problems)} problem(s) in the data:\n{shown}{tail}"


def read_text(path):
    """Whole text of a plain or gzip-compressed UTF-8 file (a leading byte-order mark, as some editors write, dropped)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as f:
            return f.read()
    except (OSError, EOFError, UnicodeDecodeError) as err:  # gzip raises EOFError on a truncated stream
        raise QADataError(f"{path}: cannot read the file as (gzipped) UTF-8 text: {err}") from err


def json_type(value):
    """The JSON name of a parsed value's type, for messages about the wrong shape."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


class KeyedTwice(dict):
    """A parsed JSON object in which a key appears more than once (`twice`: those keys); `json` keeps each one's last
    value, and the others would be lost without a word."""

    twice = ()


def parsed_json(text, path, where=""):
    """`json.loads(text)`, or QADataError naming `path`, the record (`where`, then the path inside it) and the key
    that an object holds more than once, or where the JSON is malformed."""
    found = []

    def keyed_once(pairs):
        value = dict(pairs)
        if len(value) < len(pairs):
            value, seen = KeyedTwice(value), set()
            value.twice = [key for key, _ in pairs if key in seen or seen.add(key)]
            found.append(value)
        return value

    try:
        value = json.loads(text, object_pairs_hook=keyed_once)
    except json.JSONDecodeError as err:
        place = f"at line {err.lineno}, column {err.colno}" if not where else f"on {where}, column {err.colno}"
        raise QADataError(f"{path}: malformed JSON {place}: {err.msg}") from err
    if found:
        location, keys = object_keyed_twice(value)
        location = " ".join(part for part in (where, location) if part) or "the top-level object"
        raise QADataError(f"{path}: {location}: the key {keys[0]!r} appears more than once in one object; JSON keeps "
                          f"only its last value, so the others would be lost: keep one")
    return value


def object_keyed_twice(value, location=""):
    """(JSON path, keys) of the first object, depth first, that holds a key more than once, or None."""
    if isinstance(value, KeyedTwice):
        return location, value.twice
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        path = f"{location}[{key}]" if isinstance(key, int) else f"{location}.{key}".lstrip(".")
        found = object_keyed_twice(child, path)
        if found:
            return found
    return None


def read_json_file(path):
    """Parsed JSON of a plain or gzip-compressed file, or QADataError saying where it is malformed or which object
    holds a key twice."""
    text = read_text(path)
    if not text.strip():
        raise QADataError(f"{path}: the file is empty" + (" (only whitespace)" if text else ""))
    return parsed_json(text, path)


def read_json_lines(path):
    """(locator, record) pairs of a JSON-lines file; blank lines are skipped but still counted, so that
    each locator is the record's line number in the file."""
    records = []
    # Split on "\n" only: str.splitlines() would also split inside records at U+2028, U+0085 and the like,
    # which JSON allows unescaped in strings (reading in text mode already turned "\r\n" into "\n").
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        if line.strip():
            records.append((f"line {lineno}", parsed_json(line, path, f"line {lineno}")))
    if not records:
        raise QADataError(f"{path}: the file holds no records")
    return records


def answers_dict(answers):
    """The official list of {text, answer_start} as the flat {text: [...], answer_start: [...]}; anything else as it is."""
    if not isinstance(answers, list):
        return answers
    return {
        "text": [ans.get("text") if isinstance(ans, dict) else None for ans in answers],
        "answer_start": [ans.get("answer_start") if isinstance(ans, dict) else None for ans in answers],
    }


def flatten_squad(data, path):
    """(locator, flat record) pairs from the official nested layout `data[].paragraphs[].qas[]`."""
    records = []
    for a, article in enumerate(data):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise QADataError(f"{path}: data[{a}] has no 'paragraphs' list")
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                raise QADataError(f"{path}: {where} has no 'qas' list")
            for q, qa in enumerate(paragraph["qas"]):
                if not isinstance(qa, dict):
                    raise QADataError(f"{path}: {where}.qas[{q}] is not an object")
                record = {
                    "id": qa.get("id"),
                    "title": article.get("title", ""),
                    "context": paragraph.get("context"),
                    "question": qa.get("question"),
                    "answers": answers_dict(qa.get("answers")),
                }
                records.append((f"{where}.qas[{q}]", record))
    if not records:  # articles or paragraphs all empty: a run on it would silently do nothing
        raise QADataError(f"{path}: the file holds no questions (every paragraph's 'qas' list is empty)")
    return records


def top_level_shape(content):
    """What a JSON file holds at the top instead of a list of records or {'data': [...]}, for messages."""
    if not isinstance(content, dict):
        return json_type(content)
    if "data" in content:
        return f"an object whose 'data' is {json_type(content['data'])}"
    keys = ", ".join(repr(key) for key in list(content)[:5])
    return f"an object without a 'data' key (keys: {keys or 'none'})"


def read_records(path, columns=SCHEMA_COLUMNS, answers_required=True):
    """(locator, raw record) pairs from any accepted file format; flat records with their `columns` renamed to the
    schema's names (see `schema_named`)."""
    path = Path(path)
    if not path.exists():
        raise QADataError(f"{path}: no such file")
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".jsonl", ".jsonlines"):
        lines = read_json_lines(path)
        if is_mrqa_header(lines[0][1]):
            return mrqa_records(lines, path)
        return flat_records(lines, path, columns, answers_required)
    if kind in (".parquet", ".csv"):
        return schema_named(read_table(path, kind, columns["answers"]), path, columns, answers_required)
    if kind != ".json":
        raise QADataError(
            f"{path}: unknown file type '{kind or path.suffix}' (expected .json, .json.gz, .jsonl, .parquet or .csv)"
        )
    content = read_json_file(path)
    rows = content.get("data") if isinstance(content, dict) else content
    if not isinstance(rows, list):
        raise QADataError(
            f"{path}: expected official SQuAD JSON ({{'data': [articles]}}) or a list of question records, "
            f"found {top_level_shape(content)}"
        )
    if not rows:
        raise QADataError(f"{path}: the file holds no records")
    # Any article with paragraphs marks the nested layout, so that one broken article is reported as such
    # rather than every article being read as a flat record without fields; any word-list context MultiSpanQA's.
    if any(isinstance(row, dict) and "paragraphs" in row for row in rows):
        return flatten_squad(rows, path)
    if any(isinstance(row, dict) and isinstance(row.get("context"), list) for row in rows):
        return multispanqa_records(rows, path, answers_required)
    return flat_records([(f"record {i}", r) for i, r in enumerate(rows)], path, columns, answers_required)


def asked_over_passages(records):
    """Whether (locator, record) pairs are questions over passages (`reader_data.py`): any record carries `passages`."""
    return any(isinstance(record, dict) and "passages" in record for _, record in records)


def flat_records(records, source, columns, answers_required):
    """(locator, record) pairs of a flat file: questions over passages as they are, others with their `columns`
    renamed (`schema_named`)."""
    if asked_over_passages(records):
        return records
    return schema_named(records, source, columns, answers_required)


def renamed(record, columns):
    """A flat record with the columns `columns` names ({schema name: column name}) under the schema's names. A field
    of the record that has a schema name but is not the named column is dropped, so that it is never read instead."""
    kept = {key: value for key, value in record.items() if key not in columns}
    return kept | {schema: record[name] for schema, name in columns.items() if name in record}


def schema_named(records, source, columns=SCHEMA_COLUMNS, answers_required=True):
    """(locator, flat record) pairs with their `columns` renamed (`renamed`); QADataError naming `source` and the
    columns it has when no record has a named column (questions to predict on may lack the answers column). Records
    that are not objects are left for `validated_columns` to report."""
    present = dict.fromkeys(key for _, record in records if isinstance(record, dict) for key in record)
    spans_given = "spans" in present  # multi-span records: their spans stand for the answers column
    needed = [schema for schema in columns if (answers_required and not spans_given) or schema != "answers"]
    missing = [schema for schema in needed if present and columns[schema] not in present]
    if missing:
        named = ", ".join(f"{columns[schema]!r} ({COLUMN_ARGUMENTS[schema]})" for schema in missing)
        raise QADataError(f"{source}: no column {named}; its columns are {', '.join(map(repr, present))}")
    return [(where, renamed(record, columns) if isinstance(record, dict) else record) for where, record in records]


def is_mrqa_header(record):
    """Whether the first record of a JSON-lines file is an MRQA 2019 header line, `{"header": {"dataset", "split"}}`."""
    return isinstance(record, dict) and list(record) == ["header"]


def char_spans_problem(answer):
    """Why one of MRQA's `detected_answers` is not {'text', 'char_spans': [[start, end], ...]} (None when it is)."""
    spans = answer.get("char_spans") if isinstance(answer, dict) else None
    if not spans or not isinstance(spans, list) or not all(isinstance(s, list) and len(s) == 2 for s in spans):
        return f"detected answer {answer!r} is not {{'text': ..., 'char_spans': [[start, end], ...]}}"
    return None


def mrqa_question_problem(qa):
    """Why a question object of an MRQA line cannot be read (None when it can)."""
    if not isinstance(qa, dict):
        return f"expected a question object, found {json_type(qa)}"
    if qa.get("qid") is None:
        return "missing field 'qid'"
    detected = qa.get("detected_answers")
    if detected is None:  # questions to predict on
        return None
    if not isinstance(detected, list):
        return f"'detected_answers' must be a list, found {json_type(detected)}"
    return next(filter(None, map(char_spans_problem, detected)), None)


def mrqa_answers(detected):
    """MRQA `detected_answers` as {text: [...], answer_start: [...]}: every span of every answer, each distinct
    (text, start) once, in order (SQuAD's dev answers, repeated by several annotators, come as repeated spans).

    A span is read by its start, as MRQA's own conversion to SQuAD reads it: its inclusive end says no more than its
    text's length. A start that does not point at the text is repaired by `checked_answers`.
    """
    if detected is None:
        return None
    pairs = []
    for answer in detected:
        for start, _ in answer["char_spans"]:
            if (answer.get("text"), start) not in pairs:  # a list, not a set: a broken text may be unhashable
                pairs.append((answer.get("text"), start))
    return {"text": [text for text, _ in pairs], "answer_start": [start for _, start in pairs]}


def mrqa_records(lines, path):
    """(locator, flat record) pairs of an MRQA 2019 file: a header line, then a context per line with its questions,
    `{"context", "qas": [{"qid", "question", "detected_answers": [{"text", "char_spans"}, ...]}, ...]}` (their other
    fields, such as tokens and `answers`, are not read).

    Contexts are kept as they are, MRQA's [PAR], [DOC] and [TLE] markers included; ids are the `qid`s; every question
    gets the header's dataset name as its title. Its answers are the detected answers (`mrqa_answers`): MRQA's
    official evaluation scores against the `answers` strings instead, which may hold texts the context does not.
    """
    header = lines[0][1]["header"]
    title = header.get("dataset", "") if isinstance(header, dict) else ""
    records, problems = [], []
    for where, line in lines[1:]:
        if not isinstance(line, dict):
            problems.append((where, f"expected a context object, found {json_type(line)}"))
            continue
        if not isinstance(line.get("qas"), list):
            problems.append((where, "the context object has no 'qas' list"))
            continue
        for q, qa in enumerate(line["qas"]):
            locator = f"{where}, qas[{q}]"
            problem = mrqa_question_problem(qa)
            if problem:
                problems.append((locator, problem))
                continue
            answers = mrqa_answers(qa.get("detected_answers"))
            records.append((locator, {"id": qa["qid"], "title": title, "context": line.get("context"),
                                      "question": qa.get("question"), "answers": answers}))
    if problems:
        raise QADataError(problems_message(path, problems))
    if not records:
        raise QADataError(f"{path}: the MRQA file holds no questions")
    return records


def bio_spans(label):
    """(first, last + 1) word ranges of the `B I*` runs of a MultiSpanQA label list, or a problem: a tag that is not
    B, I or O, or an I with no span open."""
    spans = []
    for i, tag in enumerate(label):
        if tag not in BIO_TAGS:
            return None, f"label[{i}] is {tag!r}, not one of 'B', 'I', 'O'"
        if tag == "B":
            spans.append([i, i + 1])
        elif tag == "I":
            if not spans or spans[-1][1] != i:
                after = "the start" if i == 0 else repr(label[i - 1])
                return None, f"label[{i}] is 'I' with no span open (after {after})"
            spans[-1][1] = i + 1
    return spans, None


def words_problem(record, name):
    """Why `record[name]` is not a non-empty list of strings (None when it is)."""
    words = record.get(name)
    if not isinstance(words, list) or not words or not all(isinstance(word, str) for word in words):
        return f"'{name}' must be a non-empty list of words (strings), found {json_type(words)}"
    return None


def multispanqa_records(rows, path, answers_required=True):
    """(locator, flat record) pairs of a MultiSpanQA file: records `{"id", "question": [words], "context": [words],
    "label": [one of "B", "I", "O" per context word]}` (other fields, such as `num_span` and `type`, are not read;
    files of questions to predict on have no `label`; elsewhere a record without one is refused).

    The question and the context are their words joined by single spaces, as MultiSpanQA's own evaluation joins a
    span's words, so that every gold span is a substring of the context whose text is the span's gold string. A
    record's answer is the set of its `B I*` runs, as `spans` with character offsets into that context (no run:
    unanswerable).
    """
    records, problems = [], []
    for i, row in enumerate(rows):
        where = f"record {i}"  # the id is added by `validated_columns`, which reads every record on
        named = where + (f" (id {row.get('id')!r})" if isinstance(row, dict) else "")
        if not isinstance(row, dict):
            problems.append((named, f"expected an object, found {json_type(row)}"))
            continue
        problem = words_problem(row, "question") or words_problem(row, "context")
        label = row.get("label")
        if not problem and label is None and answers_required:
            problem = "missing field 'label' (a B/I/O tag per context word; all O for a question without answer)"
        if not problem and label is not None:
            if not isinstance(label, list):
                problem = f"'label' must be a list of B/I/O tags, found {json_type(label)}"
            elif len(label) != len(row["context"]):
                problem = f"'label' has {len(label)} tags for {len(row['context'])} context words"
            else:
                runs, problem = bio_spans(label)
        if problem:
            problems.append((named, problem))
            continue
        words = row["context"]
        word_starts = np.cumsum([0] + [len(word) + 1 for word in words])
        spans = None
        if label is not None:
            spans = {"text": [" ".join(words[first:last]) for first, last in runs],
                     "answer_start": [int(word_starts[first]) for first, _ in runs]}
        records.append((where, {"id": row.get("id"), "title": row.get("title") or "", "context": " ".join(words),
                                "question": " ".join(row["question"]), "spans": spans}))
    if problems:
        raise QADataError(problems_message(path, problems))
    return records


def read_table(path, kind, answer_column=SCHEMA_COLUMNS["answers"]):
    """(locator, raw record) pairs from parquet or CSV; a CSV answers cell holds JSON."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if kind == ".parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:  # pandas/pyarrow raise many types for a broken file
        raise QADataError(f"{path}: cannot read the {kind[1:]} file: {err}") from err
    if frame.empty:
        raise QADataError(f"{path}: the file holds no records")
    records = []
    for i, record in enumerate(frame.to_dict("records")):
        answers = record.get(answer_column)
        if isinstance(answers, str):
            try:
                answers = json.loads(answers)
            except json.JSONDecodeError:
                raise QADataError(
                    f"{path}: row {i} (id {record.get('id')!r}): '{answer_column}' is not valid JSON") from None
        elif isinstance(answers, dict):  # parquet gives numpy arrays inside
            answers = {key: list(value) for key, value in answers.items()}
        elif hasattr(answers, "tolist"):  # parquet gives the official list of {text, answer_start} as an array
            answers = answers.tolist()
        if answer_column in record:
            record[answer_column] = answers
        records.append((f"row {i}", record))
    return records


def encodable(text):
    """Whether `text` can be stored as UTF-8: a lone surrogate (half of a JSON-escaped emoji) cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def record_problems(record, required=REQUIRED_FIELDS):
    """Problems that make one flat record unusable (an empty list when it is fine)."""
    missing = [name for name in required if record.get(name) is None]
    if missing:
        return [f"missing field(s) {', '.join(repr(m) for m in missing)}"]
    problems = []
    for name in ("id", "context", "question"):
        if not isinstance(record[name], str):
            problems.append(f"'{name}' must be a string, found {type(record[name]).__name__}")
        elif not record[name].strip():
            problems.append(f"'{name}' is empty" + (" (only whitespace)" if record[name] else ""))
        elif not encodable(record[name]):
            problems.append(f"'{name}' holds an unpaired surrogate (a broken \\uXXXX escape), not valid text")
    title = record.get("title")
    if title is not None and not (isinstance(title, str) and encodable(title)):
        problems.append(f"'title' must be text, found {title!r}")
    answers = record["answers"]
    if not isinstance(answers, dict) or not isinstance(answers.get("text"), list) or not isinstance(answers.get("answer_start"), list):
        problems.append("'answers' must be {'text': [...], 'answer_start': [...]} (or the official list of {text, answer_start})")
    elif len(answers["text"]) != len(answers["answer_start"]):
        problems.append("'answers' has different numbers of texts and answer_starts")
    return problems


def occurrences(text, context):
    """Every character offset at which `text` occurs in `context`."""
    found, i = [], context.find(text)
    while i >= 0:
        found.append(i)
        i = context.find(text, i + 1)
    return found


def integer_or_none(value):
    """`value` as an int when it is a whole number (int, numpy integer, 12.0, "12"), else None.

    Booleans and fractions are refused rather than silently read as 1 or truncated.
    """
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # int and numpy integers
    except TypeError:
        pass
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    return None


def visible(text):
    """Whether `text` holds a character that is neither whitespace nor an invisible format character (a zero-width
    space or joiner, a direction mark, a soft hyphen)."""
    return any(not char.isspace() and unicodedata.category(char) != "Cf" for char in text)


def overlapping(spans):
    """The first two (start, end) spans of `spans` that overlap, or None."""
    ordered = sorted(spans)
    return next(((a, b) for a, b in zip(ordered, ordered[1:]) if b[0] < a[1]), None)


def checked_answers(answers, context, disjoint=False):
    """Answers whose starts point at their texts, the number of starts repaired, and a problem (or None).

    An `answer_start` that does not point at its text is moved to the occurrence of the text nearest to it (with
    `disjoint`, the pieces of one multi-span answer: the nearest occurrence that no other piece holds); an answer
    whose text does not occur in the context (where no other piece is), holds no visible character, or (with
    `disjoint`) overlaps another piece is a problem.
    """
    texts, given, starts = [], [], []
    for text, start in zip(answers["text"], answers["answer_start"]):
        if not isinstance(text, str) or not text.strip():
            return None, 0, f"answer text {text!r} is empty or not a string"
        if not visible(text):
            return None, 0, f"answer text {text!r} holds no visible character (only zero-width or format ones)"
        if not encodable(text):
            return None, 0, f"answer text {text!r} holds an unpaired surrogate (a broken \\uXXXX escape)"
        number = integer_or_none(start)
        if number is None:
            return None, 0, f"answer_start {start!r} is not an integer"
        texts.append(text)
        given.append(number)
        # A negative start would slice from the end of the context and could match there by accident.
        starts.append(number if number >= 0 and context[number : number + len(text)] == text else None)
    placed = [(start, start + len(text)) for text, start in zip(texts, starts) if start is not None]
    pair = overlapping(placed) if disjoint else None
    if pair:
        (a, a_end), (b, b_end) = pair
        return None, 0, (f"answer spans {context[a:a_end]!r} (at {a}) and {context[b:b_end]!r} (at {b}) overlap: the "
                         "pieces of a multi-span answer are disjoint")
    repaired = 0
    for k, (text, start, asked) in enumerate(zip(texts, starts, given)):
        if start is not None:
            continue
        found = occurrences(text, context)
        if disjoint:  # another piece's place is not this one's
            found = [i for i in found if overlapping([*placed, (i, i + len(text))]) is None]
        if not found:
            where = " where no other piece of the answer is" if disjoint and occurrences(text, context) else ""
            return None, 0, f"answer text {text!r} does not occur in the context{where} (answer_start {asked})"
        starts[k] = min(found, key=lambda i: abs(i - asked))
        placed.append((starts[k], starts[k] + len(text)))
        repaired += 1
    return {"text": list(answers["text"]), "answer_start": starts}, repaired, None


def validated_columns(records, source, answers_required=True, disjoint=False):
    """Column dict of checked records; raises QADataError listing every unusable record.

    With `answers_required` off (questions to predict on) a record without answers gets an empty answer list. With
    `disjoint` (multi-span answers, whose spans are the pieces of one answer) a record's spans may not overlap.
    """
    problems, repaired = [], 0
    columns = {name: [] for name in QUESTION_FEATURES}
    # Only string ids are counted: any other id is reported as a problem below, and may not even be hashable.
    ids = Counter(r.get("id") for _, r in records if isinstance(r, dict) and isinstance(r.get("id"), str))
    required = REQUIRED_FIELDS if answers_required else tuple(n for n in REQUIRED_FIELDS if n != "answers")
    for where, record in records:
        if not isinstance(record, dict):
            problems.append((where, f"expected an object, found {json_type(record)}"))
            continue
        record = dict(record, answers=answers_dict(record.get("answers")))
        if record["answers"] is None and not answers_required:
            record["answers"] = {"text": [], "answer_start": []}
        label = f"{where} (id {record.get('id')!r})"
        found = record_problems(record, required)
        if not found and ids[record["id"]] > 1:  # every copy is listed, so the message names all of them
            found = [f"duplicate id: {ids[record['id']]} records share it"]
        if not found:
            answers, fixed, problem = checked_answers(record["answers"], record["context"], disjoint)
            found = [problem] if problem else []
            repaired += fixed
        if found:
            problems.extend((label, what) for what in found)
            continue
        for name in ("id", "context", "question"):
            columns[name].append(record[name])
        columns["title"].append(record.get("title") or "")
        columns["answers"].append(answers)
    if problems:
        raise QADataError(problems_message(source, problems))
    if repaired:
        logger.warning(f"{source}: moved {repaired} answer_start value(s) to where their answer text occurs")
    return columns


def spans_as_answers(records, source, answers_required=True):
    """(records, multi_span): records whose answers are multi-span (any record carries `spans`) with their spans
    as their `answers`, and whether they were; QADataError for a record of such a file that gives `answers` instead
    (one file holds one kind of answer), or no `spans` where answers are required."""
    if not any(isinstance(record, dict) and "spans" in record for _, record in records):
        return records, False
    problems = []
    for where, record in records:
        if isinstance(record, dict) and "answers" in record:
            problems.append((where, "gives 'answers' where the file's other records give 'spans' (the pieces of one "
                                    "multi-span answer): use 'spans' throughout"))
        elif isinstance(record, dict) and "spans" not in record and answers_required:
            problems.append((where, "missing field 'spans' (its answer's pieces; [] for a question without answer)"))
    if problems:
        raise QADataError(problems_message(source, problems))
    return [(where, {**record, "answers": record.pop("spans", None)} if isinstance(record, dict) else record)
            for where, record in records], True


def question_set(records, source, answers_required):
    """`QuestionSet` of the checked records. Questions to predict on that come without answers (all of them, or some:
    a warning says how many) are not labelled; questions whose answers are all empty are: they are scored as
    unanswerable. Records that carry `spans` make a multi-span set, records that carry `passages` a set of questions
    over passages (`reader_data.passage_question_set`)."""
    if asked_over_passages(records):
        from reader_data import passage_question_set  # it builds on this module's reading and checking

        return passage_question_set(records, source, answers_required)
    records, multi = spans_as_answers(records, source, answers_required)
    columns = validated_columns(records, source, answers_required, disjoint=multi)
    missing = 0 if answers_required else sum(answers_dict(r.get("answers")) is None for _, r in records)
    if missing and missing < len(records):
        logger.warning(f"{source}: {missing} of {len(records)} questions have no answers: predictions are written "
                       f"for every question and scored for none")
    return QuestionSet(datasets.Dataset.from_dict(columns, features=QUESTION_FEATURES), labelled=not missing,
                       multi_span=multi)


def questions_from_file(path, answers_required=True, columns=SCHEMA_COLUMNS):
    """`QuestionSet` of the checked questions of one file (`answers_required=False` for questions to predict on);
    `columns`: {schema name: column name} of a flat file's question, context and answers."""
    return question_set(read_records(path, columns, answers_required), path, answers_required)


def questions_from_hub(dataset, source, answers_required=True, columns=SCHEMA_COLUMNS):
    """`QuestionSet` of a Hub dataset split, checked as a flat file is, its `columns` named as for a flat file."""
    records = schema_named([(f"row {i}", row) for i, row in enumerate(dataset)], source, columns, answers_required)
    return question_set(records, source, answers_required)


def require_negative_flag(questions, source, version_2_with_negative):
    """Refuse SQuAD v2 data (unanswerable questions, in a `QuestionSet`) when the run scores as SQuAD v1.1."""
    if version_2_with_negative:
        return
    rows = questions.rows
    unanswerable = [qid for qid, ans in zip(rows["id"], rows["answers"]) if not ans["text"]]
    if unanswerable:
        raise QADataError(
            f"{source}: {len(unanswerable)} question(s) have no answer (e.g. id {unanswerable[0]!r}), which is "
            "SQuAD v2 data: pass --version_2_with_negative, or every one of them would count as a wrong answer"
        )


def load_questions(files, dataset_name=None, dataset_config_name=None, columns=SCHEMA_COLUMNS,
                   version_2_with_negative=False, cache_dir=None):
    """{split: `QuestionSet`} of checked questions: the splits of `files` ({split: path}) and of the Hub dataset
    `dataset_name` (a file given for a split replaces the Hub's). Questions of the "test" split need no answers;
    the others' unanswerable questions need `version_2_with_negative`."""
    splits = {}
    if dataset_name:
        hub = datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
        splits = {split: questions_from_hub(hub[split], f"{dataset_name}[{split}]", split != "test", columns)
                  for split in hub if split not in files}
    for split, path in files.items():
        splits[split] = questions_from_file(path, split != "test", columns)
    for split, questions in splits.items():
        source = files.get(split, f"{dataset_name}[{split}]")
        if split == "train" and questions.over_passages:
            raise QADataError(f"{source}: questions over passages (a reader file) are evaluated and predicted on; "
                              "train on SQuAD-format questions, each with the context that answers it")
        if split != "test":
            require_negative_flag(questions, source, version_2_with_negative)
    return splits
