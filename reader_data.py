"""Questions over many passages (the reader's job): the file form, its reading, and the benchmark built from SQuAD.

A reader file is JSON, `{"data": [record, ...]}` (any other top-level key is ignored), or JSON lines of records:

    {"id": "q1", "question": "Who ...?",
     "passages": ["text", {"text": "...", "id": "doc-7", "title": "..."}, ...],
     "answers": {"text": ["gold answer", ...]}}

`passages` as the pipeline takes them (`model_folder/qa_passages.py`); `answers.text` the gold answers (none: the
passages do not answer it; questions to predict on may come without `answers`); other keys are ignored.
`run_qa.py` / `run_qa_crf.py` evaluate and predict on such files (`--validation_file`, `--test_file`) as the pipeline
answers them: each passage cut into windows of its own, spans ranked across all the windows, one null score (the
lowest window's). A question is scored on the text of its top answer, as SQuAD v2 scores a question
(`metrics/squad_v2`); a passage "holds a gold answer" when its text contains one.

The benchmark (`collections_from_squad`): each SQuAD question asked of `passages` paragraphs of its article, its own
and the others that share the most words with the question, as a retriever would rank them. Training questions are
asked of distractor paragraphs ranked the same way (`with_distractors`, `--distractor_passages`).
"""

import dataclasses
import gzip
import json
import re

import datasets

from model_folder.qa_passages import Collection, checked_text, split_passages
from qa_data import QUESTION_FEATURES, QADataError, QuestionSet, problems_message

# A question set over passages: the questions' columns and where each passage begins in the joined context.
PASSAGE_FEATURES = datasets.Features({**QUESTION_FEATURES, "passage_starts": datasets.List(datasets.Value("int64"))})

WORD = re.compile(r"\w+")
# Words too common to say that a paragraph is about the question.
STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have how in is it its of on or the to was were what when "
    "where which who whom whose why with".split()
)


def question_words(text):
    """The distinct lowercase words of `text`, stopwords left out."""
    return set(WORD.findall(text.lower())) - STOPWORDS


def ranked_paragraphs(question, paragraph_words, own, count, left_out=()):
    """Indices of `count` paragraphs of an article for `question`: paragraph `own` and the others sharing the most
    of the question's words (`question_words`; `paragraph_words`: each paragraph's set of lowercase words), never
    those in `left_out`, all ordered by that count, most first (ties: article order)."""
    words = question_words(question)
    shared = [len(words & paragraph) for paragraph in paragraph_words]
    others = sorted((p for p in range(len(shared)) if p != own and p not in left_out),
                    key=lambda p: (-shared[p], p))[: count - 1]
    return sorted([own, *others], key=lambda p: (-shared[p], p))


def read_squad(path):
    """The dict of a SQuAD-format JSON file (gzipped or not)."""
    with (gzip.open if str(path).endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def collections_from_squad(squad, passages=10):
    """Reader records of every question of a SQuAD-format dict (`{"data": [articles]}`), in file order: each asked
    of `passages` paragraphs of its article (`ranked_paragraphs`; all of them where the article has fewer), passage
    ids "<article>-<paragraph>" (their places in the file), the article's title, and the record's `article` (its
    place), so that whole articles can be held out."""
    records = []
    for a, article in enumerate(squad["data"]):
        texts = [paragraph["context"] for paragraph in article["paragraphs"]]
        words = [set(WORD.findall(text.lower())) for text in texts]
        for own, paragraph in enumerate(article["paragraphs"]):
            for qa in paragraph["qas"]:
                chosen = ranked_paragraphs(qa["question"], words, own, passages)
                records.append({
                    "id": qa["id"], "question": qa["question"], "article": a,
                    "passages": [{"text": texts[p], "id": f"{a}-{p}", "title": article.get("title", "")}
                                 for p in chosen],
                    "answers": {"text": [] if qa.get("is_impossible") else [x["text"] for x in qa["answers"]]},
                })
    return records


def record_collection(record, answers_required=True):
    """The `Collection` of a question over passages, once the record is checked: ValueError (KeyError for a passage
    without text) naming the problem."""
    if not isinstance(record, dict):
        raise ValueError(f"expected an object, got {type(record).__name__}")
    for key in ("id", "question", "passages", *(("answers",) if answers_required else ())):
        if key not in record:
            raise ValueError(f"no '{key}' key")
    if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
        raise ValueError(f"'id' must be a string or an integer, got {record['id']!r:.100}")
    checked_text(record["question"], "'question'")
    answers = record.get("answers", {"text": []})
    if not isinstance(answers, dict) or not isinstance(answers.get("text"), list) or \
            not all(isinstance(text, str) and text.strip() for text in answers["text"]):
        raise ValueError(f"'answers' must be {{'text': [non-empty strings]}} (an empty list: unanswerable), got "
                         f"{answers!r:.100}")
    return Collection.of(record["passages"], "'passages'")


def checked_records(records, source, answers_required=True):
    """(record, its `Collection`) of each of the (locator, record) pairs, each checked (`record_collection`, ids
    once): QADataError naming the source, each bad record (its place and id) and its problem."""
    problems, seen, checked = [], set(), []
    for where, record in records:
        try:
            collection = record_collection(record, answers_required)
            problem = "an id given to an earlier record" if record["id"] in seen else None
        except (KeyError, ValueError) as err:
            problem = err.args[0]
        if problem:
            qid = record.get("id") if isinstance(record, dict) else None
            problems.append((f"{where}{f' (id {qid!r})' if qid is not None else ''}", problem))
        else:
            seen.add(record["id"])
            checked.append((record, collection))
    if problems:
        raise QADataError(problems_message(str(source), problems))
    return checked


def passage_question_set(records, source, answers_required=True):
    """`QuestionSet` of questions over passages ((locator, record) pairs, checked here): each question's context the
    joined text of its passages (`Collection.joined`), `passage_starts` where each begins, its gold answers with
    `answer_start` where each first occurs in that text (-1 where no passage holds it: scored all the same)."""
    checked = checked_records(records, source, answers_required)
    columns = {name: [] for name in PASSAGE_FEATURES}
    for record, collection in checked:
        joined = collection.joined
        golds = record.get("answers", {"text": []})["text"]
        for name, value in (("id", str(record["id"])), ("title", ""), ("context", joined),
                            ("question", record["question"]),
                            ("answers", {"text": golds, "answer_start": [joined.find(g) for g in golds]}),
                            ("passage_starts", collection.starts.tolist())):
            columns[name].append(value)
    labelled = all("answers" in record for record, _ in checked)
    return QuestionSet(datasets.Dataset.from_dict(columns, features=PASSAGE_FEATURES), labelled=labelled,
                       over_passages=True)


def top_from_gold_passage(rows, nbest):
    """Percent of the answerable questions over passages (`rows`, a `PASSAGE_FEATURES` dataset) whose best span
    (their first non-empty n-best answer, `nbest` naming its passage) comes from a passage holding a gold answer."""
    hits = []
    for qid, context, starts, answers in zip(rows["id"], rows["context"], rows["passage_starts"], rows["answers"]):
        if not answers["text"]:
            continue
        best = next((a for a in nbest[qid] if a["text"]), None)
        if best is None:
            hits.append(False)
            continue
        passage = split_passages(context, starts)[best["passage"]]
        hits.append(any(gold in passage for gold in answers["text"]))
    return 100.0 * sum(hits) / len(hits) if hits else 0.0


def with_distractors(questions, count, asked):
    """`QuestionSet` over passages of training questions (a `QuestionSet` of single contexts): each of the first
    `asked` questions also asked of `count` other paragraphs of its article (the distinct contexts of those first
    questions with its title), the ones sharing the most words with it (`ranked_paragraphs`) among those that hold
    none of its answer texts (they might answer it), in that ranking with its own; its answers' `answer_start`s
    moved into the joined text. The other questions (unanswerable copies, which were made from a paragraph of the
    article that may answer them) keep their context alone."""
    rows = questions.rows
    titles, contexts = rows["title"][:], rows["context"][:]
    paragraphs = {}  # title -> {context: its word set}, in order
    for title, context in zip(titles[:asked], contexts[:asked]):
        if context not in paragraphs.setdefault(title, {}):
            paragraphs[title][context] = set(WORD.findall(context.lower()))
    articles = {title: (list(words), list(words.values())) for title, words in paragraphs.items()}
    columns = {name: rows[name][:] for name in QUESTION_FEATURES}
    columns["passage_starts"] = [[0]] * len(rows)
    for i in range(asked):
        texts, words = articles[titles[i]]
        golds = columns["answers"][i]["text"]
        own = texts.index(contexts[i])
        answering = {p for p, text in enumerate(texts) if any(gold in text for gold in golds)}
        chosen = ranked_paragraphs(columns["question"][i], words, own, count + 1, left_out=answering)
        collection = Collection.of([texts[p] for p in chosen], "'context'")
        shift = int(collection.starts[chosen.index(own)])
        columns["context"][i], columns["passage_starts"][i] = collection.joined, collection.starts.tolist()
        columns["answers"][i] = {**columns["answers"][i],
                                 "answer_start": [start + shift for start in columns["answers"][i]["answer_start"]]}
    return dataclasses.replace(questions, rows=datasets.Dataset.from_dict(columns, features=PASSAGE_FEATURES),
                               over_passages=True)
