"""Loading and checking extractive-QA questions (qa_data): every accepted format, the real SQuAD v2 dev set,
and the messages for files that cannot be used. Every fixture file is small and written by the test itself."""

import gzip
import json
import logging

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qa_data import (
    QUESTION_FEATURES,
    SCHEMA_COLUMNS,
    QADataError,
    QuestionSet,
    load_questions,
    questions_from_file,
    questions_from_hub,
    read_records,
    require_negative_flag,
)

# The same questions in every format: two articles, a question with several (repeated) answers, one unanswerable.
QUESTIONS = [
    {
        "id": "q1",
        "title": "Tides",
        "context": "Tides are caused by the gravity of the Moon and the Sun.",
        "question": "What causes tides?",
        "answers": {"text": ["the gravity of the Moon", "gravity", "the gravity of the Moon"], "answer_start": [20, 24, 20]},
    },
    {
        "id": "q2",
        "title": "Tides",
        "context": "Tides are caused by the gravity of the Moon and the Sun.",
        "question": "What causes earthquakes?",
        "answers": {"text": [], "answer_start": []},
    },
    {
        "id": "q3",
        "title": "Rivers",
        "context": "The Nile flows north into the Mediterranean Sea.",
        "question": "Where does the Nile flow?",
        "answers": {"text": ["north"], "answer_start": [15]},
    },
]
ANSWERABLE = [q for q in QUESTIONS if q["answers"]["text"]]


# ---------------------------------------------------------------------------------------------- file writers


def nested(questions, version_2=True):
    """Official SQuAD JSON (articles > paragraphs > qas) holding `questions`, in their order."""
    articles = []
    for q in questions:
        if not articles or articles[-1]["title"] != q["title"]:
            articles.append({"title": q["title"], "paragraphs": []})
        paragraphs = articles[-1]["paragraphs"]
        if not paragraphs or paragraphs[-1]["context"] != q["context"]:
            paragraphs.append({"context": q["context"], "qas": []})
        qa = {
            "question": q["question"],
            "id": q["id"],
            "answers": [{"text": t, "answer_start": s} for t, s in zip(q["answers"]["text"], q["answers"]["answer_start"])],
        }
        if version_2:
            qa["is_impossible"] = not q["answers"]["text"]
        paragraphs[-1]["qas"].append(qa)
    return {"version": "v2.0" if version_2 else "1.1", "data": articles}


def write_json(path, content, ensure_ascii=True):
    """`content` as JSON at `path`, gzip-compressed when the name ends in .gz."""
    text = json.dumps(content, ensure_ascii=ensure_ascii)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_csv(path, records):
    rows = [dict(r, answers=json.dumps(r["answers"], ensure_ascii=False)) for r in records]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_parquet(path, records):
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def nested_file(tmp_path, questions=QUESTIONS, name="dev.json", **options):
    return write_json(tmp_path / name, nested(questions), **options)


def one_question(**changes):
    """A single valid flat question with some fields changed (a field set to ... is removed)."""
    record = dict(QUESTIONS[0], **changes)
    return {key: value for key, value in record.items() if value is not ...}


def error_message(path, **options):
    """The QADataError message raised for `path` (the test fails if none is raised)."""
    with pytest.raises(QADataError) as caught:
        questions_from_file(path, **options)
    return str(caught.value)


def assert_offsets_point_at_texts(dataset):
    for row in dataset:
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            assert row["context"][start : start + len(text)] == text, (row["id"], text, start)


# ------------------------------------------------------------------------------- every format, same rows


def test_nested_v2_json_gives_the_flat_rows(tmp_path):
    dataset = questions_from_file(nested_file(tmp_path)).rows
    assert dataset.features == QUESTION_FEATURES
    assert dataset.to_list() == QUESTIONS


def test_nested_v2_json_gz_gives_the_same_rows(tmp_path):
    path = nested_file(tmp_path, name="dev-v2.0.json.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:  # really compressed, not a plain file with a .gz name
        assert json.load(f)["version"] == "v2.0"
    assert questions_from_file(path).rows.to_list() == QUESTIONS


def test_nested_v1_1_without_is_impossible_gives_the_same_rows(tmp_path):
    content = nested(ANSWERABLE, version_2=False)
    assert all("is_impossible" not in qa for a in content["data"] for p in a["paragraphs"] for qa in p["qas"])
    assert questions_from_file(write_json(tmp_path / "dev-v1.1.json", content)).rows.to_list() == ANSWERABLE


def test_flat_json_list_gives_the_same_rows(tmp_path):
    assert questions_from_file(write_json(tmp_path / "flat.json", QUESTIONS)).rows.to_list() == QUESTIONS


def test_flat_json_data_object_gives_the_same_rows(tmp_path):
    path = write_json(tmp_path / "flat.json", {"version": "x", "data": QUESTIONS})
    assert questions_from_file(path).rows.to_list() == QUESTIONS


def test_jsonl_gives_the_same_rows(tmp_path):
    assert questions_from_file(write_jsonl(tmp_path / "dev.jsonl", QUESTIONS)).rows.to_list() == QUESTIONS


def test_parquet_gives_the_same_rows(tmp_path):
    assert questions_from_file(write_parquet(tmp_path / "dev.parquet", QUESTIONS)).rows.to_list() == QUESTIONS


def test_csv_with_answers_as_json_gives_the_same_rows(tmp_path):
    assert questions_from_file(write_csv(tmp_path / "dev.csv", QUESTIONS)).rows.to_list() == QUESTIONS


def test_flat_records_may_give_answers_as_the_official_list(tmp_path):
    record = one_question(answers=[{"text": "gravity", "answer_start": 24}])
    dataset = questions_from_file(write_jsonl(tmp_path / "dev.jsonl", [record])).rows
    assert dataset[0]["answers"] == {"text": ["gravity"], "answer_start": [24]}


def test_parquet_with_answers_as_the_official_list(tmp_path):
    record = one_question(answers=[{"text": "gravity", "answer_start": 24}])
    dataset = questions_from_file(write_parquet(tmp_path / "dev.parquet", [record])).rows
    assert dataset[0]["answers"] == {"text": ["gravity"], "answer_start": [24]}


def test_uppercase_extension_and_byte_order_mark_are_accepted(tmp_path):
    path = tmp_path / "DEV.JSON"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(nested(QUESTIONS)).encode("utf-8"))
    assert questions_from_file(path).rows.to_list() == QUESTIONS


# ------------------------------------------------------------------------------------------- real data


def test_real_squad_v2_dev_set_loads_with_every_offset_right(squad_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="qa_data"):
        dataset = questions_from_file(squad_dir / "dev-v2.0.json.gz").rows
    assert len(dataset) == 11_873
    assert sum(not answers["text"] for answers in dataset["answers"]) == 5_945
    assert len(set(dataset["id"])) == len(dataset)
    assert dataset[0]["id"] == "56ddde6b9a695914005b9628" and dataset[0]["title"] == "Normans"
    assert dataset[0]["answers"]["text"][0] == "France" and dataset[0]["answers"]["answer_start"][0] == 159
    assert_offsets_point_at_texts(dataset)
    assert not caplog.records  # nothing needed repairing in the official file


# ---------------------------------------------------------------------------------- unreadable files


def test_malformed_json_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n  {"title": "x",\n   "paragraphs": [}\n]}\n', encoding="utf-8")
    message = error_message(path)
    assert str(path) in message
    assert "malformed JSON at line 3, column 19" in message


def test_malformed_json_lines_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(QUESTIONS[0]) + "\n\n" + '{"id": "q2", "context": \n', encoding="utf-8")
    message = error_message(path)
    assert str(path) in message and "malformed JSON on line 3" in message


@pytest.mark.parametrize("name,text,where", [
    # a paragraph with two "qas" lists: json keeps the second, and the first one's questions would vanish
    ("two-qas.json", '{"data": [{"title": "T", "paragraphs": [{"context": "Tides follow the Moon.", "qas": [{"id": '
     '"q1", "question": "What?", "answers": []}], "qas": [{"id": "q2", "question": "Who?", "answers": []}]}]}]}',
     "data[0].paragraphs[0]: the key 'qas'"),
    ("two-ids.jsonl", json.dumps(QUESTIONS[0]) + '\n{"id": "a", "id": "b", "context": "c", "question": "q"}\n',
     "line 2: the key 'id'"),
    ("top.json", '{"data": [], "data": []}', "the top-level object: the key 'data'"),
])
def test_a_key_given_twice_in_one_object_is_refused_with_the_record_and_the_key(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    message = error_message(path)
    assert f"{path}: {where} appears more than once in one object" in message


def test_json_lines_locators_count_blank_lines(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps(QUESTIONS[0]) + "\n\n\n" + json.dumps(one_question(id="q9", question="")) + "\n")
    assert "line 4 (id 'q9'): 'question' is empty" in error_message(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("")
    message = error_message(path)
    assert str(path) in message and "the file is empty" in message


def test_whitespace_only_file(tmp_path):
    path = tmp_path / "blank.json"
    path.write_text("  \n\t\n")
    message = error_message(path)
    assert str(path) in message and "empty (only whitespace)" in message


def test_whitespace_only_json_lines_file(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text("\n  \n")
    assert "holds no records" in error_message(path)


def test_empty_csv_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    message = error_message(path)
    assert str(path) in message and "cannot read the csv file" in message


def test_truncated_gzip_file(tmp_path):
    path = nested_file(tmp_path, name="dev.json.gz")
    path.write_bytes(path.read_bytes()[:40])
    message = error_message(path)
    assert str(path) in message and "cannot read the file" in message


def test_top_level_json_number(tmp_path):
    path = tmp_path / "number.json"
    path.write_text("42")
    message = error_message(path)
    assert str(path) in message and "found a number" in message


def test_top_level_object_without_data(tmp_path):
    path = write_json(tmp_path / "foo.json", {"foo": 1})
    message = error_message(path)
    assert str(path) in message and "without a 'data' key (keys: 'foo')" in message


def test_top_level_data_that_is_not_a_list(tmp_path):
    assert "whose 'data' is an object" in error_message(write_json(tmp_path / "d.json", {"data": {"q1": {}}}))


def test_empty_data_list(tmp_path):
    assert "holds no records" in error_message(write_json(tmp_path / "d.json", {"version": "v2.0", "data": []}))


def test_nested_file_without_any_question(tmp_path):
    content = {"data": [{"title": "A", "paragraphs": [{"context": "Some text.", "qas": []}]}, {"title": "B", "paragraphs": []}]}
    assert "holds no questions" in error_message(write_json(tmp_path / "d.json", content))


def test_paragraph_without_qas(tmp_path):
    content = nested(QUESTIONS)
    del content["data"][1]["paragraphs"][0]["qas"]
    path = write_json(tmp_path / "dev.json", content)
    message = error_message(path)
    assert str(path) in message and "data[1].paragraphs[0] has no 'qas' list" in message


def test_article_without_paragraphs(tmp_path):
    content = nested(QUESTIONS)
    del content["data"][0]["paragraphs"]
    assert "data[0] has no 'paragraphs' list" in error_message(write_json(tmp_path / "dev.json", content))


def test_unknown_file_extension(tmp_path):
    path = tmp_path / "dev.txt"
    path.write_text(json.dumps(QUESTIONS))
    message = error_message(path)
    assert str(path) in message and "unknown file type '.txt'" in message


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "dev.json"
    message = error_message(path)
    assert str(path) in message and "no such file" in message


# ------------------------------------------------------------------------------------- unusable records


@pytest.mark.parametrize("field", ["id", "question", "answers"])
def test_nested_question_missing_a_field(tmp_path, field):
    content = nested(QUESTIONS)
    del content["data"][0]["paragraphs"][0]["qas"][1][field]
    path = write_json(tmp_path / "dev.json", content)
    message = error_message(path)
    qid = "None" if field == "id" else "'q2'"
    assert str(path) in message
    assert f"data[0].paragraphs[0].qas[1] (id {qid}): missing field(s) '{field}'" in message


def test_nested_paragraph_missing_its_context(tmp_path):
    content = nested(QUESTIONS)
    del content["data"][1]["paragraphs"][0]["context"]
    assert "data[1].paragraphs[0].qas[0] (id 'q3'): missing field(s) 'context'" in error_message(
        write_json(tmp_path / "dev.json", content)
    )


@pytest.mark.parametrize("field", ["id", "context", "question", "answers"])
def test_flat_record_missing_a_field(tmp_path, field):
    records = [QUESTIONS[0], one_question(**dict({"id": "q7"}, **{field: ...}))]
    message = error_message(write_jsonl(tmp_path / "dev.jsonl", records))
    qid = "None" if field == "id" else "'q7'"
    assert f"line 2 (id {qid}): missing field(s) '{field}'" in message


def test_csv_row_with_an_empty_cell_names_the_row(tmp_path):
    records = [QUESTIONS[0], QUESTIONS[2]]
    path = write_csv(tmp_path / "dev.csv", records)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[1, "question"] = None
    frame.to_csv(path, index=False)
    # keep_default_na=False reads the empty cell as "", which is an empty question rather than a missing one.
    assert "row 1 (id 'q3'): 'question' is empty" in error_message(path)


@pytest.mark.parametrize("field", ["context", "question"])
@pytest.mark.parametrize("value", ["", " \n\t "])
def test_empty_or_whitespace_only_text(tmp_path, field, value):
    message = error_message(write_json(tmp_path / "dev.json", [QUESTIONS[0], one_question(id="q8", **{field: value})]))
    assert f"record 1 (id 'q8'): '{field}' is empty" in message


def test_non_string_id(tmp_path):
    message = error_message(write_json(tmp_path / "dev.json", [one_question(id=17)]))
    assert "record 0 (id 17): 'id' must be a string, found int" in message


def test_unhashable_id_is_reported_not_a_crash(tmp_path):
    message = error_message(write_json(tmp_path / "dev.json", [one_question(id=["q1"]), QUESTIONS[2]]))
    assert "'id' must be a string, found list" in message


def test_record_that_is_not_an_object(tmp_path):
    assert "record 1: expected an object, found a string" in error_message(write_json(tmp_path / "d.json", [QUESTIONS[0], "q2"]))


def test_answers_of_the_wrong_shape(tmp_path):
    records = [one_question(answers={"text": ["gravity"]}), one_question(id="q9", answers={"text": ["a"], "answer_start": []})]
    message = error_message(write_json(tmp_path / "dev.json", records))
    assert "record 0 (id 'q1'): 'answers' must be {'text': [...], 'answer_start': [...]}" in message
    assert "record 1 (id 'q9'): 'answers' has different numbers of texts and answer_starts" in message


def test_empty_answer_text(tmp_path):
    message = error_message(write_json(tmp_path / "dev.json", [one_question(answers={"text": [""], "answer_start": [0]})]))
    assert "answer text '' is empty or not a string" in message


def test_answer_start_out_of_range_with_text_absent_is_an_error(tmp_path):
    record = one_question(answers={"text": ["the gravity of Mars"], "answer_start": [500]})
    path = write_json(tmp_path / "dev.json", [record])
    message = error_message(path)
    assert str(path) in message
    assert "record 0 (id 'q1'): answer text 'the gravity of Mars' does not occur in the context (answer_start 500)" in message


def test_wrong_answer_start_with_text_present_is_moved_to_the_nearest_occurrence(tmp_path, caplog):
    context = "the cat saw the cat and the cat"
    assert [context.find("cat", i) for i in (0, 5, 17)] == [4, 16, 28]
    records = [
        one_question(id="a", context=context, answers={"text": ["cat", "the cat"], "answer_start": [21, 13]}),
        one_question(id="b", context=context, answers={"text": ["cat"], "answer_start": [4]}),  # already right
        one_question(id="c", context=context, answers={"text": ["cat"], "answer_start": [999]}),
    ]
    path = write_json(tmp_path / "dev.json", records)
    with caplog.at_level(logging.WARNING, logger="qa_data"):
        dataset = questions_from_file(path).rows
    assert dataset["answers"] == [
        {"text": ["cat", "the cat"], "answer_start": [16, 12]},
        {"text": ["cat"], "answer_start": [4]},
        {"text": ["cat"], "answer_start": [28]},
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one warning per file, however many starts were moved
    assert str(path) in warnings[0] and "moved 3 answer_start value(s)" in warnings[0]


def test_negative_answer_start_is_not_read_from_the_end_of_the_context(tmp_path, caplog):
    # context[-3:-1] == "xy": a negative start must not pass for a right one.
    record = one_question(context="abc xyz", answers={"text": ["xy"], "answer_start": [-3]})
    with caplog.at_level(logging.WARNING, logger="qa_data"):
        dataset = questions_from_file(write_json(tmp_path / "dev.json", [record])).rows
    assert dataset[0]["answers"]["answer_start"] == [4]
    assert "moved 1 answer_start" in caplog.text


def test_correct_offsets_give_no_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="qa_data"):
        questions_from_file(nested_file(tmp_path)).rows
    assert not caplog.records


@pytest.mark.parametrize("start", ["abc", 24.5, True, None, [24]], ids=["word", "fraction", "bool", "null", "list"])
def test_answer_start_not_an_integer(tmp_path, start):
    record = one_question(answers={"text": ["gravity"], "answer_start": [start]})
    message = error_message(write_json(tmp_path / "dev.json", [record]))
    assert f"record 0 (id 'q1'): answer_start {start!r} is not an integer" in message


@pytest.mark.parametrize("start", ["24", 24.0], ids=["digits", "whole-float"])
def test_answer_start_written_as_a_whole_number_is_accepted(tmp_path, start):
    record = one_question(answers={"text": ["gravity"], "answer_start": [start]})
    assert questions_from_file(write_json(tmp_path / "dev.json", [record])).rows[0]["answers"]["answer_start"] == [24]


def test_duplicate_ids_name_every_copy(tmp_path):
    records = [QUESTIONS[0], QUESTIONS[2], one_question(question="Another question?")]
    path = write_jsonl(tmp_path / "dev.jsonl", records)
    message = error_message(path)
    assert str(path) in message
    assert "line 1 (id 'q1'): duplicate id: 2 records share it" in message
    assert "line 3 (id 'q1'): duplicate id: 2 records share it" in message
    assert "line 2" not in message


def test_duplicate_ids_across_articles_in_nested_json(tmp_path):
    questions = [QUESTIONS[0], dict(QUESTIONS[2], id="q1")]
    message = error_message(nested_file(tmp_path, questions))
    assert "data[0].paragraphs[0].qas[0] (id 'q1'): duplicate id" in message
    assert "data[1].paragraphs[0].qas[0] (id 'q1'): duplicate id" in message


def test_more_than_five_problems_lists_five_and_counts_the_rest(tmp_path):
    records = [one_question(id=f"bad{i}", question="") for i in range(8)] + [QUESTIONS[2]]
    path = write_json(tmp_path / "dev.json", records)
    message = error_message(path)
    assert message.startswith(f"{path}: 8 problem(s) in the data:")
    assert sum("'question' is empty" in line for line in message.splitlines()) == 5
    assert "(id 'bad4')" in message and "(id 'bad5')" not in message
    assert message.endswith("... and 3 more")


def test_exactly_five_problems_has_no_tail(tmp_path):
    records = [one_question(id=f"bad{i}", question="") for i in range(5)]
    message = error_message(write_json(tmp_path / "dev.json", records))
    assert "5 problem(s)" in message and "more" not in message


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    records = [one_question(id="a", context=""), QUESTIONS[2], one_question(id="b", answers={"text": ["zebra"], "answer_start": [0]})]
    message = error_message(write_json(tmp_path / "dev.json", records))
    assert "2 problem(s)" in message and "(id 'a')" in message and "(id 'b')" in message


def test_csv_answers_cell_that_is_not_json(tmp_path):
    path = write_csv(tmp_path / "dev.csv", QUESTIONS)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[2, "answers"] = "{text: north}"
    frame.to_csv(path, index=False)
    message = error_message(path)
    assert str(path) in message and "row 2 (id 'q3'): 'answers' is not valid JSON" in message


# --------------------------------------------------------------------------------------- non-ASCII text

UNICODE_QUESTIONS = [
    ("cjk", "東京は日本の首都であり、世界最大の都市圏の一つです。", "日本の首都"),
    ("combining", "Cafe\u0301 de Flore est un cafe\u0301 a\u0300 Paris, pre\u0300s de Saint-Germain.", "a\u0300 Paris"),
    ("emoji", "We 😀 love 👩‍👩‍👧 families and 🇫🇷 flags: the answer is here.", "the answer"),
    ("arabic", "القاهرة هي عاصمة مصر وأكبر مدنها.", "عاصمة مصر"),
    ("hebrew", "ירושלים היא עיר עתיקה, והשפה \u200fעברית\u200f נפוצה בה.", "עברית"),
    ("mixed", "Emoji 🎉 then 中文 then עברית then the end. \u2028Next line after a separator.", "Next line"),
]


def unicode_records():
    records = []
    for name, context, answer in UNICODE_QUESTIONS:
        start = context.index(answer)  # Python str offsets count code points, as the official data does
        records.append({"id": name, "title": "Ünïcödé 🌍", "context": context, "question": f"Où est «{answer}»?",
                        "answers": {"text": [answer], "answer_start": [start]}})
    return records


def test_unicode_text_really_needs_code_point_offsets():
    # Without this the tests below could pass on ASCII-like data: UTF-16 and UTF-8 offsets differ from code points.
    emoji = dict((n, (c, a)) for n, c, a in UNICODE_QUESTIONS)["emoji"]
    assert len(emoji[0].encode("utf-16-le")) // 2 != len(emoji[0])
    assert any(len(c.encode("utf-8")) != len(c) for _, c, _ in UNICODE_QUESTIONS)


@pytest.mark.parametrize("writer", ["nested-escaped", "nested-utf8", "nested-gz", "jsonl", "csv", "parquet"])
def test_unicode_offsets_stay_right_in_every_format(tmp_path, caplog, writer):
    records = unicode_records()
    if writer.startswith("nested"):
        name = "dev.json.gz" if writer == "nested-gz" else "dev.json"
        path = write_json(tmp_path / name, nested(records), ensure_ascii=writer == "nested-escaped")
    else:
        write = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}[writer]
        path = write(tmp_path / f"dev.{writer}", records)
    with caplog.at_level(logging.WARNING, logger="qa_data"):
        dataset = questions_from_file(path).rows
    assert dataset.to_list() == records  # texts unchanged (no normalisation) and starts unchanged
    assert_offsets_point_at_texts(dataset)
    assert not caplog.records  # nothing was "repaired": the offsets were already right


def test_utf16_offsets_are_repaired_to_code_points(tmp_path, caplog):
    # Tools in JavaScript count UTF-16 units: past an emoji their starts are too large.
    records = unicode_records()
    for record in records:
        start = record["answers"]["answer_start"][0]
        record["answers"]["answer_start"] = [len(record["context"][:start].encode("utf-16-le")) // 2]
    with caplog.at_level(logging.WARNING, logger="qa_data"):
        dataset = questions_from_file(write_json(tmp_path / "dev.json", records)).rows
    assert_offsets_point_at_texts(dataset)
    assert dataset.to_list() == unicode_records()
    assert "moved 2 answer_start value(s)" in caplog.text  # the emoji and the mixed context


def test_unpaired_surrogate_is_reported_not_a_crash(tmp_path):
    path = tmp_path / "dev.json"
    record = json.dumps(one_question(context="Half an emoji: \ud83d and the gravity."), ensure_ascii=True)
    assert "\\ud83d" in record
    path.write_text(f"[{record}]", encoding="utf-8")
    message = error_message(path)
    assert str(path) in message and "'context' holds an unpaired surrogate" in message


# ----------------------------------------------------------------------- SQuAD v2 data and the v2 flag


def loaded(cache_dir=None, dataset_name=None, version_2_with_negative=False, columns=None, **files):
    """`load_questions` of the files given by split (`validation_file=...`) and a Hub dataset folder."""
    files = {name.removesuffix("_file"): path for name, path in files.items()}
    return load_questions(files, dataset_name, None, columns or SCHEMA_COLUMNS, version_2_with_negative, cache_dir)


def test_v2_data_without_the_negative_flag_is_refused(tmp_path):
    path = str(nested_file(tmp_path))
    with pytest.raises(QADataError) as caught:
        loaded(validation_file=path)
    message = str(caught.value)
    assert path in message and "1 question(s) have no answer (e.g. id 'q2')" in message
    assert "--version_2_with_negative" in message


def test_v2_training_data_without_the_flag_is_refused_too(tmp_path):
    path = str(nested_file(tmp_path, name="train.json"))
    with pytest.raises(QADataError, match="id 'q2'"):
        loaded(train_file=path)


def test_v2_data_with_the_negative_flag_loads(tmp_path):
    path = str(nested_file(tmp_path))
    splits = loaded(validation_file=path, train_file=path, version_2_with_negative=True)
    assert sorted(splits) == ["train", "validation"]
    assert splits["validation"].rows.to_list() == QUESTIONS


def test_v1_data_without_the_flag_loads(tmp_path):
    path = str(write_json(tmp_path / "dev-v1.1.json", nested(ANSWERABLE, version_2=False)))
    assert loaded(validation_file=path)["validation"].rows.to_list() == ANSWERABLE


def test_test_split_is_exempt_from_the_negative_flag(tmp_path):
    path = str(nested_file(tmp_path, name="test.json"))
    splits = loaded(test_file=path)
    assert splits["test"].rows.to_list() == QUESTIONS


def test_test_questions_need_no_answers(tmp_path):
    records = [{key: value for key, value in q.items() if key != "answers"} for q in QUESTIONS]
    splits = loaded(test_file=str(write_jsonl(tmp_path / "test.jsonl", records)))
    assert splits["test"].rows["answers"] == [{"text": [], "answer_start": []}] * len(QUESTIONS)
    assert not splits["test"].labelled and not splits["test"].first(1).labelled  # predictions are not scored
    # ... but answers are required wherever they are scored or trained on.
    with pytest.raises(QADataError, match=r"no column 'answers' \(--answer_column_name\)"):
        loaded(validation_file=str(tmp_path / "test.jsonl"), version_2_with_negative=True)


def test_questions_whose_answers_are_all_empty_are_labelled_and_a_partly_labelled_set_is_not(tmp_path, caplog):
    unanswerable = [q for q in QUESTIONS if not q["answers"]["text"]]
    path = str(write_jsonl(tmp_path / "unanswerable.jsonl", unanswerable))
    splits = loaded(validation_file=path, test_file=path, version_2_with_negative=True)
    assert splits["validation"].labelled and splits["test"].labelled  # scored: "" is their right answer
    partly = [QUESTIONS[0], {key: value for key, value in QUESTIONS[1].items() if key != "answers"}]
    with caplog.at_level(logging.WARNING):
        test = loaded(test_file=str(write_jsonl(tmp_path / "partly.jsonl", partly)))["test"]
    assert not test.labelled and "1 of 2 questions have no answers" in caplog.text


def test_require_negative_flag_names_the_source():
    questions = QuestionSet(datasets.Dataset.from_list(QUESTIONS[:2], features=QUESTION_FEATURES))
    require_negative_flag(questions, "somewhere.json", True)
    require_negative_flag(questions.first(1), "somewhere.json", False)
    with pytest.raises(QADataError, match=r"^somewhere\.json: 1 question\(s\) have no answer \(e\.g\. id 'q2'\)"):
        require_negative_flag(questions, "somewhere.json", False)


def test_read_records_gives_locators_and_raw_records(tmp_path):
    records = read_records(nested_file(tmp_path))
    assert [where for where, _ in records] == [
        "data[0].paragraphs[0].qas[0]", "data[0].paragraphs[0].qas[1]", "data[1].paragraphs[0].qas[0]"
    ]
    assert records[2][1] == QUESTIONS[2]


# ------------------------------------------------------------------------------------------ Hub datasets


def test_hub_split_gives_the_same_rows():
    dataset = questions_from_hub(datasets.Dataset.from_list(QUESTIONS), "squad_v2[validation]").rows
    assert dataset.features == QUESTION_FEATURES
    assert dataset.to_list() == QUESTIONS


def test_hub_split_problems_name_the_dataset_and_row():
    rows = [QUESTIONS[0], one_question(id="q5", answers={"text": ["zebra"], "answer_start": [3]})]
    with pytest.raises(QADataError) as caught:
        questions_from_hub(datasets.Dataset.from_list(rows), "squad_v2[train]").rows
    assert str(caught.value).startswith("squad_v2[train]: 1 problem(s)")
    assert "row 1 (id 'q5'): answer text 'zebra' does not occur in the context" in str(caught.value)


def test_local_dataset_folder_refuses_v2_without_the_flag_and_files_replace_its_splits(tmp_path):
    folder = tmp_path / "my_squad"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ANSWERABLE)
    write_jsonl(folder / "validation.jsonl", QUESTIONS)
    with pytest.raises(QADataError, match=rf"^{folder}\[validation\]: 1 question\(s\) have no answer \(e\.g\. id 'q2'\)"):
        loaded(dataset_name=str(folder), cache_dir=str(tmp_path / "cache"))
    v1_file = str(write_jsonl(tmp_path / "dev-v1.jsonl", ANSWERABLE[:1]))
    splits = loaded(dataset_name=str(folder), validation_file=v1_file, cache_dir=str(tmp_path / "cache"))
    assert splits["train"].rows.to_list() == ANSWERABLE
    assert splits["validation"].rows.to_list() == ANSWERABLE[:1]
