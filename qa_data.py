"""Questions in, questions out: read SQuAD-style files or Hub datasets and check every record.

Every source becomes a `datasets.Dataset` of questions with the columns
`id, title, context, question, answers{text: [str], answer_start: [int]}` (the Hub's `squad_v2` schema).

Accepted files:
- official SQuAD JSON (v1.1 or v2.0), nested `data[].paragraphs[].qas[]`, plain or `.gz`;
- the flat schema above as JSON (a list, or `{"data": [...]}`), JSON lines, parquet or CSV
  (in CSV the `answers` cell holds the answers dict as JSON).

Problems that make a record unusable raise `QADataError` naming the file, the record and the problem.
Problems the loader can repair (an `answer_start` that does not point at its text while the text occurs in the
context) are repaired and counted in one warning per file.
"""

import gzip
import json
import logging
from collections import Counter
from pathlib import Path

import datasets

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


class QADataError(ValueError):
    """A data file that cannot be used as it is; the message names the file, the records and the problems."""


def problems_message(source, problems):
    """`problems`: list of (record locator, problem). Returns one message listing the first few."""
    shown = "\n".join(f"  {where}: {what}" for where, what in problems[:MAX_REPORTED_PROBLEMS])
    more = len(problems) - MAX_REPORTED_PROBLEMS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return f"{source}: {len(problems)} problem(s) in the data:\n{shown}{tail}"


def read_json_file(path):
    """Parsed JSON of a plain or gzip-compressed file, or QADataError saying where it is malformed."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise QADataError(f"{path}: cannot read the file: {err}") from err
    if not text.strip():
        raise QADataError(f"{path}: the file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise QADataError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err


def read_json_lines(path):
    """Records of a JSON-lines file (blank lines skipped)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    records = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise QADataError(f"{path}: malformed JSON on line {lineno}: {err.msg}") from err
    if not records:
        raise QADataError(f"{path}: the file holds no records")
    return [(f"line {i + 1}", r) for i, r in enumerate(records)]


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
                answers = qa.get("answers")
                if isinstance(answers, list):
                    answers = {
                        "text": [ans.get("text") if isinstance(ans, dict) else None for ans in answers],
                        "answer_start": [ans.get("answer_start") if isinstance(ans, dict) else None for ans in answers],
                    }
                record = {
                    "id": qa.get("id"),
                    "title": article.get("title", ""),
                    "context": paragraph.get("context"),
                    "question": qa.get("question"),
                    "answers": answers,
                }
                records.append((f"{where}.qas[{q}]", record))
    return records


def read_records(path):
    """(locator, raw record) pairs from any accepted file format."""
    path = Path(path)
    if not path.exists():
        raise QADataError(f"{path}: no such file")
    suffixes = [s for s in path.suffixes if s != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".jsonl", ".jsonlines"):
        return read_json_lines(path)
    if kind in (".parquet", ".csv"):
        return read_table(path, kind)
    if kind != ".json":
        raise QADataError(f"{path}: unknown file type '{kind}' (expected .json, .json.gz, .jsonl, .parquet or .csv)")
    content = read_json_file(path)
    rows = content.get("data") if isinstance(content, dict) else content
    if not isinstance(rows, list):
        raise QADataError(
            f"{path}: expected official SQuAD JSON ({{'data': [articles]}}) or a list of question records, "
            f"found a {type(content).__name__} without a 'data' list"
        )
    if not rows:
        raise QADataError(f"{path}: the file holds no records")
    if isinstance(rows[0], dict) and "paragraphs" in rows[0]:
        return flatten_squad(rows, path)
    return [(f"record {i}", r) for i, r in enumerate(rows)]


def read_table(path, kind):
    """(locator, raw record) pairs from parquet or CSV; a CSV `answers` cell holds JSON."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if kind == ".parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:  # pandas/pyarrow raise many types for a broken file
        raise QADataError(f"{path}: cannot read the {kind[1:]} file: {err}") from err
    if frame.empty:
        raise QADataError(f"{path}: the file holds no records")
    records = []
    for i, record in enumerate(frame.to_dict("records")):
        answers = record.get("answers")
        if isinstance(answers, str):
            try:
                answers = json.loads(answers)
            except json.JSONDecodeError:
                raise QADataError(f"{path}: row {i} (id {record.get('id')!r}): 'answers' is not valid JSON") from None
        elif isinstance(answers, dict):  # parquet gives numpy arrays inside
            answers = {key: list(value) for key, value in answers.items()}
        record["answers"] = answers
        records.append((f"row {i}", record))
    return records


def record_problems(record):
    """Problems that make one flat record unusable (an empty list when it is fine)."""
    missing = [name for name in REQUIRED_FIELDS if record.get(name) is None]
    if missing:
        return [f"missing field(s) {', '.join(repr(m) for m in missing)}"]
    problems = []
    for name in ("id", "context", "question"):
        if not isinstance(record[name], str):
            problems.append(f"'{name}' must be a string, found {type(record[name]).__name__}")
        elif not record[name].strip():
            problems.append(f"'{name}' is empty")
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


def checked_answers(answers, context):
    """Answers whose starts point at their texts, the number of starts repaired, and a problem (or None).

    An `answer_start` that does not point at its text is moved to the occurrence of the text nearest to it;
    an answer whose text does not occur in the context at all is a problem.
    """
    starts, repaired = [], 0
    for text, start in zip(answers["text"], answers["answer_start"]):
        if not isinstance(text, str) or not text.strip():
            return None, 0, f"answer text {text!r} is empty or not a string"
        if not isinstance(start, int) or isinstance(start, bool):
            try:
                start = int(start)
            except (TypeError, ValueError):
                return None, 0, f"answer_start {start!r} is not an integer"
        if context[start : start + len(text)] != text:
            found = occurrences(text, context)
            if not found:
                return None, 0, f"answer text {text!r} does not occur in the context (answer_start {start})"
            start = min(found, key=lambda i: abs(i - start))
            repaired += 1
        starts.append(start)
    return {"text": list(answers["text"]), "answer_start": starts}, repaired, None


def validated_columns(records, source):
    """Column dict of checked records; raises QADataError listing every unusable record."""
    problems, repaired = [], 0
    columns = {name: [] for name in QUESTION_FEATURES}
    ids = Counter(r.get("id") for _, r in records if isinstance(r, dict))
    for where, record in records:
        if not isinstance(record, dict):
            problems.append((where, f"expected an object, found {type(record).__name__}"))
            continue
        label = f"{where} (id {record.get('id')!r})"
        found = record_problems(record)
        if not found and ids[record["id"]] > 1:
            found = [f"duplicate id: {ids[record['id']]} records share it"]
        if not found:
            answers, fixed, problem = checked_answers(record["answers"], record["context"])
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


def questions_from_file(path):
    """Dataset of checked questions read from one file."""
    columns = validated_columns(read_records(path), path)
    return datasets.Dataset.from_dict(columns, features=QUESTION_FEATURES)


def questions_from_hub(dataset, source):
    """The same checks applied to a Hub dataset split; returns it with the project's features."""
    records = [(f"row {i}", row) for i, row in enumerate(dataset)]
    columns = validated_columns(records, source)
    return datasets.Dataset.from_dict(columns, features=QUESTION_FEATURES)


def require_negative_flag(questions, source, version_2_with_negative):
    """Refuse SQuAD v2 data (unanswerable questions) when the run scores as SQuAD v1.1."""
    if version_2_with_negative:
        return
    unanswerable = [qid for qid, ans in zip(questions["id"], questions["answers"]) if not ans["text"]]
    if unanswerable:
        raise QADataError(
            f"{source}: {len(unanswerable)} question(s) have no answer (e.g. id {unanswerable[0]!r}), which is "
            "SQuAD v2 data: pass --version_2_with_negative, or every one of them would count as a wrong answer"
        )


def load_questions(data_args, cache_dir=None):
    """DatasetDict of checked questions with the splits asked for (`train`, `validation`, `test`)."""
    files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
    files = {split: path for split, path in files.items() if path}
    if data_args.dataset_name:
        hub = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir=cache_dir)
        splits = {split: questions_from_hub(hub[split], f"{data_args.dataset_name}[{split}]") for split in hub}
    else:
        splits = {}
    for split, path in files.items():
        splits[split] = questions_from_file(path)
    for split, questions in splits.items():
        if split == "test":  # test questions need no answers
            continue
        require_negative_flag(questions, files.get(split, f"{data_args.dataset_name}[{split}]"), data_args.version_2_with_negative)
    return datasets.DatasetDict(splits)
