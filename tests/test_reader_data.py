"""Reader files and the benchmark built from SQuAD (`reader_data.py`)."""

import json

import pytest
from transformers import pipeline

from qa_data import QADataError, load_questions, questions_from_file
from model_folder.qa_passages import SEPARATOR, split_passages
from reader_data import collections_from_squad, question_words, with_distractors
from tests.conftest import HEADS, LEARNED_WINDOWS, TRAIN, read_json, train_heads

PARAGRAPHS = [
    "Rivers of Europe: the Danube flows through Vienna.",
    "The castle of Vienna was rebuilt after the fire.",
    "Mountains rise north of the river.",
    "Vienna's castle fire destroyed the library in 1740.",
]
SQUAD = {"data": [
    {"title": "Vienna", "paragraphs": [
        {"context": text, "qas": [] if p else [
            {"id": "q1", "question": "When did the castle fire destroy the library?", "is_impossible": False,
             "answers": [{"text": "Danube", "answer_start": 22}]},
            {"id": "q2", "question": "Which sea?", "is_impossible": True, "answers": []},
        ]} for p, text in enumerate(PARAGRAPHS)]},
    {"title": "Short", "paragraphs": [{"context": "Only one paragraph here.", "qas": [
        {"id": "q3", "question": "How many?", "answers": [{"text": "one", "answer_start": 5}]}]}]},
]}


def test_question_words_leave_out_case_punctuation_and_stopwords():
    assert question_words("When did the Castle fire destroy the library?") == {"castle", "fire", "destroy", "library"}


def test_each_question_gets_its_own_paragraph_and_those_sharing_the_most_words_ranked():
    records = collections_from_squad(SQUAD, passages=3)
    assert [r["id"] for r in records] == ["q1", "q2", "q3"]
    q1 = records[0]
    # shared words: paragraph 3 has castle, fire, destroy(ed: no), library -> 3; paragraph 1 castle, fire -> 2;
    # paragraph 0 (its own) none; paragraph 2 none, left out (3 passages)
    assert [p["id"] for p in q1["passages"]] == ["0-3", "0-1", "0-0"]
    assert q1["passages"][2]["text"] == PARAGRAPHS[0] and q1["passages"][0]["title"] == "Vienna"
    assert q1["answers"] == {"text": ["Danube"]} and q1["article"] == 0
    assert records[1]["answers"] == {"text": []}
    assert [p["id"] for p in records[2]["passages"]] == ["1-0"]  # an article with fewer paragraphs: all of them
    assert collections_from_squad(SQUAD, passages=3) == records  # deterministic


def test_a_reader_file_reads_as_json_and_as_json_lines_into_questions_over_joined_passages(tmp_path):
    records = collections_from_squad(SQUAD, passages=2)
    (tmp_path / "r.json").write_text(json.dumps({"version": "x", "data": records}))
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    read = [questions_from_file(tmp_path / name) for name in ("r.json", "r.jsonl")]
    assert all(questions.over_passages and questions.labelled for questions in read)
    assert read[0].rows[:] == read[1].rows[:]
    rows = read[0].rows
    assert rows["id"] == ["q1", "q2", "q3"] and rows["question"] == [r["question"] for r in records]
    for row, record in zip(rows, records):
        texts = [p["text"] for p in record["passages"]]
        assert row["context"] == SEPARATOR.join(texts)
        assert split_passages(row["context"], row["passage_starts"]) == texts
        assert row["answers"]["text"] == record["answers"]["text"]
        assert [row["context"][s : s + len(t)] for s, t in zip(row["answers"]["answer_start"], row["answers"]["text"])
                ] == row["answers"]["text"]


@pytest.mark.parametrize("change, problem", [
    (lambda r: r.pop("passages"), "record 1 (id 'q2'): no 'passages' key"),
    (lambda r: r.update(passages=[]), "record 1 (id 'q2'): 'passages': no passages; give at least one"),
    (lambda r: r["passages"].append({"title": "t"}), "record 1 (id 'q2'): 'passages', passage 2: the passage dict has "
                                                     "no 'text' key"),
    (lambda r: r.update(answers={"text": [""]}), "record 1 (id 'q2'): 'answers' must be {'text': [non-empty"),
    (lambda r: r.update(id="q1"), "record 1 (id 'q1'): an id given to an earlier record"),
    (lambda r: r.update(question=" "), "record 1 (id 'q2'): 'question' must be a non-empty string"),
    (lambda r: r.update(question="Wh\ud83d?"), "record 1 (id 'q2'): 'question' holds an unpaired surrogate"),
], ids=["no-passages", "empty-passages", "passage-without-text", "blank-answer", "id-twice", "blank-question",
        "lone-surrogate"])
def test_a_bad_record_is_named_with_its_problem(tmp_path, change, problem):
    records = collections_from_squad(SQUAD, passages=2)
    change(records[1])
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"data": records}))
    with pytest.raises(QADataError) as error:
        questions_from_file(path)
    assert str(path) in str(error.value) and problem in str(error.value), str(error.value)


def test_a_reader_file_cannot_be_trained_on(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"data": collections_from_squad(SQUAD, passages=2)}))
    with pytest.raises(QADataError, match="questions over passages .* are evaluated and predicted on"):
        load_questions({"train": str(path)}, version_2_with_negative=True)


def test_evaluation_over_passages_answers_as_the_pipeline_does(learned, learned_questions, unseen_contexts, tmp_path):
    """run_qa.py / run_qa_crf.py --do_eval on a reader file: each of the first 120 sample training questions over its
    own context and two contexts the learned models were not trained on (the CRF: the first 24, the questions it
    learned). Predictions, n-best answers naming their passages, the extra metric, the same answers from the
    pipeline asked the same questions over the same passages, and (span head) --calibrate fitted on them."""
    questions = questions_from_file(TRAIN).rows.select(range(120))
    records = []
    for k, q in enumerate(questions):
        others = [c for c in unseen_contexts if c != q["context"]]
        records.append({"id": q["id"], "question": q["question"], "answers": {"text": q["answers"]["text"]},
                        "passages": [others[k % 7], {"text": q["context"], "id": "own"},
                                     {"text": others[k % 7 + 1], "title": "t"}]})
    path = tmp_path / "reader.json"
    path.write_text(json.dumps({"data": records}))
    out = {head: tmp_path / head for head in HEADS}
    train_heads({head: ["--model_name_or_path", learned[head], "--validation_file", path, "--version_2_with_negative",
                        "--do_eval", *LEARNED_WINDOWS, "--per_device_eval_batch_size", 32, "--output_dir", out[head],
                        "--report_to", "none", *(["--calibrate"] if head == "span" else ["--max_eval_samples", 24])]
                 for head in HEADS})
    for head in HEADS:
        predictions = read_json(out[head], "eval_predictions.json")
        records = records[: len(predictions)]
        nbest = read_json(out[head], "eval_nbest_predictions.json")
        results = read_json(out[head], "eval_results.json")
        assert list(predictions) == [r["id"] for r in records]
        assert 0 < results["eval_HasAns_top_from_gold_passage"] <= 100, results
        learned_ids = set(learned_questions["id"])
        own = [nbest[r["id"]][0]["passage"] == 1 for r in records if r["id"] in learned_ids and predictions[r["id"]]]
        assert sum(own) >= 0.8 * len(own) and len(own) >= 10, own  # the questions they learned: from their passage
        for record in records:
            for answer in nbest[record["id"]]:
                if answer["text"]:
                    text = record["passages"][answer["passage"]]
                    assert (text if isinstance(text, str) else text["text"])[answer["start"]:answer["end"]] == \
                        answer["text"]
                else:
                    assert answer["passage"] is None
        qa = pipeline("question-answering", model=str(out[head]), trust_remote_code=True)
        # evaluation's threshold (the run's default, 0); the folder keeps the F1-best one for later use
        answers = qa([{"question": r["question"], "passages": r["passages"]} for r in records],
                     handle_impossible_answer=True, align_to_words=False, null_score_diff_threshold=0.0,
                     batch_size=32)
        assert [a["answer"] for a in answers] == list(predictions.values())
        # --calibrate fitted on these questions over passages: the folder applies it to them
        assert ("probability" in answers[0]) == (head == "span")
    assert read_json(out["span"], "eval_calibration.json")["calibration_questions"] == len(questions)


def test_training_questions_are_asked_of_distractor_paragraphs_of_their_article_that_hold_none_of_their_answers(
        tmp_path):
    holding = "The castle fire and the library by the Danube."  # shares the most words with q1, and holds its answer
    squad = json.loads(json.dumps(SQUAD))
    vienna = squad["data"][0]["paragraphs"]
    for p in (1, 2, 3):  # a paragraph is a distractor where training questions are asked of it
        vienna[p]["qas"] = [{"id": f"p{p}", "question": "Why?", "is_impossible": True, "answers": []}]
    vienna.append({"context": holding, "qas": [
        {"id": "q4", "question": "Which castle?", "answers": [{"text": "castle", "answer_start": 4}]}]})
    path = tmp_path / "train.json"
    path.write_text(json.dumps(squad))
    questions = questions_from_file(path)
    over = with_distractors(questions, 2, asked=6)  # the last question stands for an unanswerable copy
    assert over.over_passages and over.rows["id"] == questions.rows["id"] == ["q1", "q2", "p1", "p2", "p3", "q4", "q3"]
    passages = {row["id"]: split_passages(row["context"], row["passage_starts"]) for row in over.rows}
    # q1 (castle, fire, destroy, library): paragraph 3 (castle, fire, library), 1 (castle, fire); not `holding`
    # (castle, fire, library), which holds its answer; its own shares none: last
    assert passages["q1"] == [PARAGRAPHS[3], PARAGRAPHS[1], PARAGRAPHS[0]]
    # q4 (castle) is answered "castle": paragraphs 1 and 3 hold it, so the two that share no word, in article order
    assert passages["q4"] == [holding, PARAGRAPHS[0], PARAGRAPHS[2]]
    assert passages["p1"] == [PARAGRAPHS[0], PARAGRAPHS[1], PARAGRAPHS[2]]  # "Why?" shares none: article order
    assert passages["q3"] == ["Only one paragraph here."]  # not asked: its context alone
    for row, before in zip(over.rows, questions.rows):
        assert row["answers"]["text"] == before["answers"]["text"]
        assert [row["context"][s : s + len(t)] for s, t in zip(row["answers"]["answer_start"],
                                                                 row["answers"]["text"])] == row["answers"]["text"]
    assert over.rows[0]["answers"]["answer_start"] == [over.rows[0]["passage_starts"][2] + 22]  # in its own passage
