"""Beyond SQuAD (qa_data): MRQA 2019 files, question/context/answers columns named otherwise in flat files and Hub
datasets, and MRQA-shaped questions scored by the SQuAD v1.1 metric. Every fixture is small, written here."""

import gzip
import json
import logging
import datasets
import pandas as pd
import pytest

from model_folder.qa_settings import QASettings
from qa_data import QUESTION_FEATURES, QADataError, questions_from_file, questions_from_hub
from qa_runner import scores
from tests.test_qa_data import (QUESTIONS, assert_offsets_point_at_texts, error_message, loaded, nested_file, write_json,
                                write_jsonl, write_parquet)
from utils_qa import QuestionPredictions, metric_prediction

# ---------------------------------------------------------------------------------------------- MRQA 2019 files

LIGHT = ("[TLE] The Brannock Light [PAR] The Brannock Light stands on a granite point north of the harbour. It was "
         "first lit in 1871. [PAR] Ada Moss kept the lamp for thirty years, until the Brannock Light was automated.")
FERRIES = "[DOC] [TLE] Harbour ferries [PAR] Two ferries cross the harbour each hour in summer."
# (qid, question, detected answer texts): every occurrence of a text is one of its char spans, as MRQA records them.
# "Ada Moss" comes twice, as SQuAD's answers repeated by several annotators do; "Brannock Light" occurs three times.
MRQA_QUESTIONS = {
    LIGHT: [("m1", "When was the light first lit?", ["1871"]),
            ("m2", "Who kept the lamp?", ["Ada Moss", "Ada Moss", "Moss"]),
            ("m3", "Which light stands on the point?", ["Brannock Light"]),
            ("m4", "How long was the lamp kept?", ["thirty years", "for thirty years"])],
    FERRIES: [("m5", "How many ferries cross the harbour?", ["Two"])],
}


def occurrences(text, context):
    return [i for i in range(len(context)) if context.startswith(text, i)]


def detected(context, texts):
    """MRQA `detected_answers`: every occurrence of each text as an inclusive [start, end] span."""
    return [{"text": text, "char_spans": [[i, i + len(text) - 1] for i in occurrences(text, context)],
             "token_spans": [[0, 0]]} for text in texts]


def mrqa_lines(questions=MRQA_QUESTIONS):
    """An MRQA header line and one line per context, with the fields MRQA files carry that the loader does not read."""
    lines = [{"header": {"dataset": "BrannockQA", "split": "dev"}}]
    for context, qas in questions.items():
        lines.append({"id": f"ctx{len(lines)}", "context": context, "context_tokens": [["[TLE]", 0]], "qas": [
            {"qid": qid, "question": question, "question_tokens": [["When", 0]], "answers": sorted(set(texts)),
             "detected_answers": detected(context, texts)} for qid, question, texts in qas]})
    return lines


def write_mrqa(path, lines):
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    with (gzip.open(path, "wt", encoding="utf-8") if str(path).endswith(".gz") else open(path, "w")) as f:
        f.write(text)
    return path


def expected_answers(context, texts):
    """Every distinct (text, start) in order of the detected answers."""
    pairs = list(dict.fromkeys((text, i) for text in texts for i in occurrences(text, context)))
    return {"text": [text for text, _ in pairs], "answer_start": [start for _, start in pairs]}


@pytest.mark.parametrize("name", ["NaturalQuestionsShort.jsonl.gz", "dev.jsonl"])
def test_mrqa_file_gives_a_question_per_qa_with_every_distinct_span(tmp_path, caplog, name):
    lines = mrqa_lines()
    # the fixture's spans are inclusive, as MRQA's: context[start:end + 1] is the detected text
    assert all(line["context"][start : end + 1] == answer["text"] for line in lines[1:] for qa in line["qas"]
               for answer in qa["detected_answers"] for start, end in answer["char_spans"])
    path = write_mrqa(tmp_path / name, lines)
    with caplog.at_level(logging.WARNING, logger="qa_data"):
        dataset = questions_from_file(path).rows
    assert dataset.features == QUESTION_FEATURES
    assert dataset.to_list() == [
        {"id": qid, "title": "BrannockQA", "context": context, "question": question,
         "answers": expected_answers(context, texts)}
        for context, qas in MRQA_QUESTIONS.items() for qid, question, texts in qas
    ]
    by_id = {row["id"]: row["answers"] for row in dataset}
    assert by_id["m2"] == {"text": ["Ada Moss", "Moss"], "answer_start": [LIGHT.index("Ada Moss"), LIGHT.index("Moss")]}
    assert len(by_id["m3"]["answer_start"]) == 3
    assert_offsets_point_at_texts(dataset)
    assert not caplog.records  # every span was right


def test_mrqa_span_off_its_text_is_moved_to_the_nearest_occurrence_and_counted(tmp_path, caplog):
    lines = mrqa_lines()
    spans = lines[1]["qas"][2]["detected_answers"][0]["char_spans"]  # "Brannock Light", three times
    spans[1] = [spans[1][0] + 3, spans[1][1] + 3]
    two = FERRIES.index("Two")
    lines[2]["qas"][0]["detected_answers"][0]["char_spans"] = [[two + 6, two + 8]]
    path = write_mrqa(tmp_path / "dev.jsonl.gz", lines)
    with caplog.at_level(logging.WARNING, logger="qa_data"):
        dataset = questions_from_file(path).rows
    assert dataset.to_list() == questions_from_file(write_mrqa(tmp_path / "right.jsonl", mrqa_lines())).rows.to_list()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and "moved 2 answer_start value(s)" in warnings[0]


def test_mrqa_answer_text_missing_from_its_context_names_the_file_line_and_question(tmp_path):
    lines = mrqa_lines()
    lines[1]["qas"][3]["detected_answers"][1]["text"] = "for forty years"
    path = write_mrqa(tmp_path / "dev.jsonl", lines)
    message = error_message(path)
    assert message.startswith(f"{path}: 1 problem(s)")
    assert "line 2, qas[3] (id 'm4'): answer text 'for forty years' does not occur in the context" in message


def test_mrqa_blank_lines_still_count_in_line_numbers(tmp_path):
    path = tmp_path / "dev.jsonl"
    header, light, ferries = (json.dumps(line) for line in mrqa_lines())
    ferries = ferries.replace('"question": "How many ferries cross the harbour?"', '"question": " "')
    path.write_text(f"{header}\n{light}\n\n{ferries}\n")
    assert "line 4, qas[0] (id 'm5'): 'question' is empty" in error_message(path)


@pytest.mark.parametrize("change, problem", [
    (lambda lines: lines.append(["not", "a", "context"]), "line 4: expected a context object, found an array"),
    (lambda lines: lines[2].pop("qas"), "line 3: the context object has no 'qas' list"),
    (lambda lines: lines[1]["qas"].append("m9"), "line 2, qas[4]: expected a question object, found a string"),
    (lambda lines: lines[1]["qas"][1].pop("qid"), "line 2, qas[1]: missing field 'qid'"),
    (lambda lines: lines[1]["qas"][0].update(detected_answers={"text": "1871"}),
     "line 2, qas[0]: 'detected_answers' must be a list, found an object"),
    (lambda lines: lines[1]["qas"][0]["detected_answers"][0].update(char_spans=[65]),
     "line 2, qas[0]: detected answer {'text': '1871', 'char_spans': [65], 'token_spans': [[0, 0]]} is not "
     "{'text': ..., 'char_spans': [[start, end], ...]}"),
    (lambda lines: lines[1]["qas"][0]["detected_answers"][0].update(char_spans=[]), "line 2, qas[0]: detected answer"),
    (lambda lines: lines[1].pop("context"), "line 2, qas[0] (id 'm1'): missing field(s) 'context'"),
    (lambda lines: lines[2]["qas"][0].update(qid="m1"), "line 3, qas[0] (id 'm1'): duplicate id: 2 records share it"),
], ids=["line-not-object", "no-qas", "question-not-object", "no-qid", "detected-not-list", "span-not-pair",
        "no-spans", "no-context", "duplicate-qid"])
def test_bad_mrqa_lines_name_the_file_line_and_problem(tmp_path, change, problem):
    lines = mrqa_lines()
    change(lines)
    path = write_mrqa(tmp_path / "dev.jsonl", lines)
    message = error_message(path)
    assert message.startswith(f"{path}: ") and problem in message


def test_mrqa_file_with_a_header_and_no_question(tmp_path):
    assert "the MRQA file holds no questions" in error_message(write_mrqa(tmp_path / "dev.jsonl", mrqa_lines({})))


def test_mrqa_test_questions_need_no_detected_answers(tmp_path):
    lines = mrqa_lines()
    for line in lines[1:]:
        for qa in line["qas"]:
            del qa["detected_answers"]
    test = loaded(test_file=str(write_mrqa(tmp_path / "test.jsonl", lines)))["test"].rows
    assert test["id"] == ["m1", "m2", "m3", "m4", "m5"]
    assert all(answers == {"text": [], "answer_start": []} for answers in test["answers"])


def test_flat_json_lines_whose_first_record_is_not_a_header_are_read_as_today(tmp_path):
    records = [dict(QUESTIONS[0], header="not an MRQA header"), *QUESTIONS[1:]]
    assert questions_from_file(write_jsonl(tmp_path / "dev.jsonl", records)).rows.to_list() == QUESTIONS


# ---------------------------------------------------------------- SQuAD v1.1 scoring of MRQA-shaped questions


def test_mrqa_questions_score_as_squad_v1_1_with_the_max_over_their_answers(tmp_path):
    questions = questions_from_file(write_mrqa(tmp_path / "dev.jsonl.gz", mrqa_lines()))
    predictions = {"m1": "in 1871", "m2": "moss", "m3": "the Brannock lighthouse", "m4": "thirty", "m5": "Two ferries"}
    # Normalised (lower case, no punctuation, no a/an/the), best over each question's answers:
    #   m1 "in 1871" vs "1871": exact 0; 1 common token of 2 predicted and 1 gold, F1 = 2*(1/2*1)/(1/2+1) = 2/3
    #   m2 "moss" vs "Ada Moss": exact 0, F1 2/3; vs "Moss": exact 1, F1 1 -> exact 1, F1 1
    #   m3 "brannock lighthouse" vs "brannock light": exact 0; precision 1/2, recall 1/2, F1 = 1/2
    #   m4 "thirty" vs "thirty years": precision 1, recall 1/2, F1 = 2/3; vs "for thirty years": F1 = 1/2 -> 2/3
    #   m5 "two ferries" vs "two": precision 1/2, recall 1, F1 = 2/3
    # exact_match = 1/5 = 20 %; f1 = (2/3 + 1 + 1/2 + 2/3 + 2/3) / 5 = 3.5 / 5 = 70 %
    answers = QuestionPredictions(predictions, {}, {}, [metric_prediction(qid, text) for qid, text in predictions.items()])
    assert scores(questions, answers, QASettings()) == pytest.approx({"exact_match": 20.0, "f1": 70.0})


# ------------------------------------------------------------------------------------------ column names

RENAMED = {"question": "query", "context": "passage", "answers": "gold"}


def renamed_records(records=QUESTIONS, columns=RENAMED):
    return [{columns.get(key, key): value for key, value in record.items()} for record in records]


def write_renamed_csv(path, records):
    """CSV of renamed records, their "gold" answers as JSON."""
    pd.DataFrame([dict(r, gold=json.dumps(r["gold"])) if "gold" in r else r for r in records]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("writer", ["json", "jsonl", "csv", "parquet"])
def test_flat_files_with_columns_named_otherwise(tmp_path, writer):
    write = {"json": write_json, "jsonl": write_jsonl, "csv": write_renamed_csv, "parquet": write_parquet}[writer]
    path = write(tmp_path / f"dev.{writer}", renamed_records())
    assert questions_from_file(path, columns=RENAMED).rows.to_list() == QUESTIONS


def test_hub_split_with_columns_named_otherwise():
    dataset = questions_from_hub(datasets.Dataset.from_list(renamed_records()), "my/qa[validation]", columns=RENAMED).rows
    assert dataset.features == QUESTION_FEATURES
    assert dataset.to_list() == QUESTIONS


def test_the_named_column_is_read_not_a_field_of_the_schemas_name(tmp_path):
    records = [dict(record, query=record["question"], question="Not this one?") for record in QUESTIONS]
    path = write_jsonl(tmp_path / "dev.jsonl", records)
    assert questions_from_file(path, columns=dict(RENAMED, context="context", answers="answers")).rows.to_list() == QUESTIONS
    # a record without the named column has no question, even though it has a "question" field
    records[1].pop("query")
    path = write_jsonl(tmp_path / "dev.jsonl", records)
    message = error_message(path, columns=dict(RENAMED, context="context", answers="answers"))
    assert "line 2 (id 'q2'): missing field(s) 'question'" in message


def test_a_missing_named_column_names_the_file_and_its_columns(tmp_path):
    path = write_jsonl(tmp_path / "dev.jsonl", renamed_records())
    message = error_message(path, columns=dict(RENAMED, question="questions"))
    assert message == (f"{path}: no column 'questions' (--question_column_name); its columns are 'id', 'title', "
                       "'passage', 'query', 'gold'")
    # the default names, absent from a file that names its columns otherwise
    message = error_message(path)
    assert "no column 'question' (--question_column_name), 'context' (--context_column_name), 'answers' " in message


def test_a_missing_named_column_of_a_hub_split_names_the_dataset_and_its_columns():
    with pytest.raises(QADataError) as caught:
        questions_from_hub(datasets.Dataset.from_list(renamed_records()), "my/qa[train]",
                           columns=dict(RENAMED, answers="answer")).rows
    assert str(caught.value) == ("my/qa[train]: no column 'answer' (--answer_column_name); its columns are 'id', "
                                 "'title', 'passage', 'query', 'gold'")


def test_questions_to_predict_on_may_lack_the_named_answers_column(tmp_path):
    records = [{key: value for key, value in record.items() if key != "gold"} for record in renamed_records()]
    path = write_renamed_csv(tmp_path / "test.csv", records)
    dataset = questions_from_file(path, answers_required=False, columns=RENAMED).rows
    assert dataset["question"] == [q["question"] for q in QUESTIONS]
    assert dataset["answers"] == [{"text": [], "answer_start": []}] * len(QUESTIONS)


def test_the_column_arguments_apply_to_hub_splits_and_flat_files_not_to_squad_json(tmp_path):
    folder = tmp_path / "my_qa"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", renamed_records())
    unanswered = [{key: value for key, value in r.items() if key != "gold"} for r in renamed_records()]
    test_file = write_jsonl(tmp_path / "test.jsonl", unanswered)
    splits = loaded(dataset_name=str(folder), validation_file=str(nested_file(tmp_path)), test_file=str(test_file),
                    version_2_with_negative=True, columns=RENAMED, cache_dir=str(tmp_path / "cache"))
    assert splits["train"].rows.to_list() == splits["validation"].rows.to_list() == QUESTIONS
    assert splits["test"].rows.to_list() == [dict(q, answers={"text": [], "answer_start": []}) for q in QUESTIONS]


# ---------------------------------------------------------------------------------------------- multi-span answers

# MultiSpanQA records: words, and a B/I/O label per context word. Two spans, then one span of one word beside another.
MULTISPAN_RECORDS = [
    {"id": "s1", "type": "HUM", "structure": "Conjunction", "num_span": 2,
     "question": ["who", "sang", "it", "?"],
     "context": ["In", "1981", ",", "Dave", "Stewart", "and", "Barbara", "Gaskin", "sang", "it", "."],
     "label": ["O", "O", "O", "B", "I", "O", "B", "I", "O", "O", "O"]},
    {"id": "s2", "type": "LOC", "structure": "Conjunction", "num_span": 2,
     "question": ["which", "ports", "?"],
     "context": ["Ferries", "sail", "to", "Oban", "Mull", "and", "the", "Isle", "of", "Skye"],
     "label": ["O", "O", "O", "B", "B", "O", "O", "B", "I", "I"]},
]


def write_multispanqa(path, records=MULTISPAN_RECORDS):
    return write_json(path, {"version": 1.0, "data": records})


def test_multispanqa_file_gives_every_span_of_each_answer_in_the_rebuilt_context(tmp_path):
    question_set = questions_from_file(write_multispanqa(tmp_path / "valid.json"))
    questions = question_set.rows
    assert question_set.multi_span and question_set.labelled
    assert questions[0]["context"] == "In 1981 , Dave Stewart and Barbara Gaskin sang it ."
    assert questions[0]["question"] == "who sang it ?"
    assert questions["answers"] == [{"text": ["Dave Stewart", "Barbara Gaskin"], "answer_start": [10, 27]},
                                    {"text": ["Oban", "Mull", "Isle of Skye"], "answer_start": [16, 21, 34]}]
    assert_offsets_point_at_texts(questions)
    assert question_set.first(1).multi_span and not questions_from_file(nested_file(tmp_path)).multi_span


def test_multispanqa_file_without_labels_is_questions_to_predict_on(tmp_path):
    records = [{key: value for key, value in record.items() if key != "label"} for record in MULTISPAN_RECORDS]
    questions = questions_from_file(write_multispanqa(tmp_path / "test.json", records), answers_required=False)
    assert questions.multi_span and not questions.labelled and questions.rows["answers"][0]["text"] == []


@pytest.mark.parametrize("change, problem", [
    ({"label": ["O", "B"]}, "record 0 (id 's1'): 'label' has 2 tags for 11 context words"),
    ({"label": ["O", "O", "O", "B", "X", "O", "B", "I", "O", "O", "O"]}, "label[4] is 'X', not one of 'B', 'I', 'O'"),
    ({"label": ["O", "O", "O", "O", "I", "O", "B", "I", "O", "O", "O"]},
     "label[4] is 'I' with no span open (after 'O')"),
    ({"label": ["I", "O", "O", "O", "O", "O", "B", "I", "O", "O", "O"]},
     "label[0] is 'I' with no span open (after the start)"),
    ({"context": "In 1981 Dave Stewart"}, "'context' must be a non-empty list of words (strings), found a string"),
    ({"question": []}, "'question' must be a non-empty list of words"),
])
def test_bad_multispanqa_records_name_the_file_record_and_problem(tmp_path, change, problem):
    path = write_multispanqa(tmp_path / "bad.json", [dict(MULTISPAN_RECORDS[0], **change), MULTISPAN_RECORDS[1]])
    message = error_message(path)
    assert str(path) in message and "record 0 (id 's1')" in message and problem in message
    assert "(id 's1') (id" not in message  # the record named once


def test_a_multispanqa_record_without_label_is_refused_where_answers_are_read(tmp_path):
    record = {key: value for key, value in MULTISPAN_RECORDS[1].items() if key != "label"}
    path = write_multispanqa(tmp_path / "dev.json", [MULTISPAN_RECORDS[0], record])
    assert "record 1 (id 's2'): missing field 'label' (a B/I/O tag per context word; all O for a question without " \
           "answer)" in error_message(path)
    assert not questions_from_file(path, answers_required=False).labelled  # questions to predict on need none


def multi_span_file(tmp_path, *spans, context="Ferries sail to Oban and Mull, and to the Isle of Skye."):
    """A flat multi-span file of one record per `spans` ({"text": [...], "answer_start": [...]}, or None: no field)."""
    records = [{"id": f"f{i}", "question": "Which ports?", "context": context, **({"spans": answer} if answer else {})}
               for i, answer in enumerate(spans)]
    return write_jsonl(tmp_path / "spans.jsonl", records)


def test_the_pieces_of_a_multi_span_answer_may_not_overlap(tmp_path):
    message = error_message(multi_span_file(tmp_path, {"text": ["Isle of Skye", "Skye"], "answer_start": [42, 50]}))
    assert ("line 1 (id 'f0'): answer spans 'Isle of Skye' (at 42) and 'Skye' (at 50) overlap: the pieces of a "
            "multi-span answer are disjoint") in message


def test_a_repaired_piece_moves_to_an_occurrence_no_other_piece_holds(tmp_path, caplog):
    context = "Oban, then Mull, then Oban again."
    path = multi_span_file(tmp_path, {"text": ["Oban", "Oban"], "answer_start": [0, 3]}, context=context)
    with caplog.at_level(logging.WARNING):
        answers = questions_from_file(path).rows["answers"][0]
    assert answers == {"text": ["Oban", "Oban"], "answer_start": [0, 22]} and "moved 1 answer_start" in caplog.text
    message = error_message(multi_span_file(tmp_path, {"text": ["Mull", "Mull"], "answer_start": [11, 0]},
                                            context=context))
    assert "answer text 'Mull' does not occur in the context where no other piece of the answer is" in message


def test_a_piece_of_zero_width_characters_and_a_record_without_spans_are_refused(tmp_path):
    zero_width = {"text": ["\u200b\u200d"], "answer_start": [4]}
    message = error_message(multi_span_file(tmp_path, zero_width, context="Oban\u200b\u200d and Mull."))
    assert "answer text '\\u200b\\u200d' holds no visible character (only zero-width or format ones)" in message
    message = error_message(multi_span_file(tmp_path, {"text": ["Oban"], "answer_start": [16]}, None))
    assert "line 2: missing field 'spans' (its answer's pieces; [] for a question without answer)" in message


def test_flat_multi_span_records_carry_spans_instead_of_answers(tmp_path):
    context = "Ferries sail to Oban, Mull and the Isle of Skye."
    records = [{"id": "f1", "question": "Which ports?", "context": context,
                "spans": {"text": ["Oban", "Mull", "Isle of Skye"], "answer_start": [16, 22, 35]}},
               {"id": "f2", "question": "Where do they sail?", "context": context,
                "spans": [{"text": "Oban", "answer_start": 16}, {"text": "Skye", "answer_start": 0}]}]
    questions = questions_from_file(write_jsonl(tmp_path / "spans.jsonl", records))
    assert questions.multi_span
    assert questions.rows["answers"][1] == {"text": ["Oban", "Skye"], "answer_start": [16, 43]}  # a start repaired
    records[1] = {**records[1], "answers": records[1].pop("spans")}
    message = error_message(write_jsonl(tmp_path / "mixed.jsonl", records))
    assert "line 2: gives 'answers' where the file's other records give 'spans'" in message
