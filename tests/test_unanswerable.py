"""Unanswerable training questions made from answerable ones: cut, paired and edited copies."""

import datasets
import numpy as np

from qa_data import QUESTION_FEATURES
from unanswerable import name_swapped, negated, number_changed, question_edit, with_unanswerable_copies


def sample_questions(rows, contexts):
    return datasets.Dataset.from_dict({
        "id": [r[0] for r in rows], "title": [r[1] for r in rows], "context": [contexts[r[1]][r[2]] for r in rows],
        "question": [r[3] for r in rows],
        "answers": [{"text": [r[4]], "answer_start": [contexts[r[1]][r[2]].index(r[4])]} if r[4] else
                    {"text": [], "answer_start": []} for r in rows],
    }, features=QUESTION_FEATURES)


def test_unanswerable_pairs_ask_a_question_of_another_paragraph_of_its_article():
    contexts = {"A": ["Paris is in France.", "Berlin is in Germany.", "Rome is in Italy, not France."],
                "B": ["Oslo is in Norway."]}
    rows = [("a1", "A", 0, "Where is Paris?", "France"), ("a2", "A", 1, "Where is Berlin?", "Germany"),
            ("a3", "A", 2, "What is in Italy?", "Rome"), ("b1", "B", 0, "Where is Oslo?", "Norway"),
            ("u1", "A", 0, "Where is Lyon?", None)]
    questions = sample_questions(rows, contexts)
    paired = with_unanswerable_copies(questions, pairs=1.0, seed=0)
    assert paired.select(range(len(questions))).to_dict() == questions.to_dict()
    copies = {row["id"]: row for row in paired.select(range(len(questions), len(paired)))}
    # b1's article has no other paragraph; a1's answer occurs in A's third paragraph, so only the second is left;
    # the unanswerable u1 gets no copy
    assert set(copies) == {"a1-pair", "a2-pair", "a3-pair"}
    assert copies["a1-pair"]["context"] == contexts["A"][1]
    for qid, row in copies.items():
        original = questions[[r[0] for r in rows].index(qid.removesuffix("-pair"))]
        assert row["question"] == original["question"] and row["title"] == original["title"]
        assert row["context"] in contexts["A"] and row["context"] != original["context"]
        assert row["answers"] == {"text": [], "answer_start": []}
    assert with_unanswerable_copies(questions, pairs=1.0, seed=0).to_dict() == paired.to_dict()
    assert len(with_unanswerable_copies(questions, seed=0)) == len(questions)


def test_unanswerable_cuts_drop_the_sentences_holding_the_answer():
    contexts = {"A": ["The tower was built in 1889. It is in Paris! Many visit it each year.",
                      "Berlin is big. Berlin is in Germany.",
                      "Rome is old."]}
    rows = [("a1", "A", 0, "When was the tower built?", "1889"), ("a2", "A", 1, "Where is Berlin?", "Berlin"),
            ("a3", "A", 2, "What is old?", "Rome")]
    copies = with_unanswerable_copies(sample_questions(rows, contexts), cuts=1.0, seed=0)
    cut = {row["id"]: row for row in copies.select(range(len(rows), len(copies)))}
    # a2's answer text is in both sentences, a3's paragraph is one sentence: neither gets a copy
    assert set(cut) == {"a1-cut"}
    assert cut["a1-cut"]["context"] == "It is in Paris! Many visit it each year."
    assert cut["a1-cut"]["question"] == "When was the tower built?" and cut["a1-cut"]["answers"]["text"] == []


def test_cuts_and_pairs_are_drawn_once_per_question():
    contexts = {"A": [f"Fact {i} is here. Filler {i} is there." for i in range(40)]}
    rows = [(f"q{i}", "A", i, f"What is fact {i}?", f"Fact {i} is here") for i in range(40)]
    copies = with_unanswerable_copies(sample_questions(rows, contexts), cuts=0.5, pairs=0.5, seed=1)
    ids = copies["id"][40:]
    originals = [qid.rsplit("-", 1)[0] for qid in ids]
    assert len(set(originals)) == len(originals) == 40  # every question, each with exactly one copy
    assert 5 < sum(qid.endswith("-cut") for qid in ids) < 35


def test_question_edits_negate_change_a_number_or_swap_a_name_the_context_holds():
    rng = np.random.default_rng(0)
    context = "In 1889 Eiffel built the tower in Paris for the fair, and Koechlin drew it."
    answers = {"text": ["Eiffel"], "answer_start": [8]}
    assert negated("Who did build the tower?", context, answers, rng) == "Who did not build the tower?"
    assert negated("Who did not build it?", context, answers, rng) is None
    assert negated("Which tower?", context, answers, rng) is None
    for _ in range(20):
        changed = number_changed("Who built the tower in 1889?", context, answers, rng)
        year = int(changed.removeprefix("Who built the tower in ").removesuffix("?"))
        assert year != 1889 and abs(year - 1889) < 10
        # the only other name of the context: never the answer, never one the question already holds
        assert name_swapped("Who built the tower in Paris?", context, answers, rng) == "Who built the tower in Koechlin?"
    assert number_changed("Who built the tower?", context, answers, rng) is None
    # 1 moved by -2 is -1, whose absolute value is 1 again: that is no edit
    assert all(number_changed("Who won 1 prize?", "No count here.", answers, rng) != "Who won 1 prize?" for _ in range(200))
    assert name_swapped("Who built the tower in Rome?", context, answers, rng) is None
    assert question_edit("Which tower?", context, answers, rng) is None


def test_unanswerable_edits_ask_an_edited_question_of_the_same_context():
    contexts = {"A": ["In 1889 Eiffel built the tower in Paris, and Koechlin drew it.", "Rome is old."]}
    rows = [("a1", "A", 0, "Who did build the tower in 1889?", "Eiffel"), ("a2", "A", 1, "Which city?", "Rome")]
    questions = sample_questions(rows, contexts)
    edited = with_unanswerable_copies(questions, edits=1.0, seed=0)
    assert edited["id"][2:] == ["a1-edit"]  # no edit applies to a2's question
    copy = edited[2]
    assert copy["context"] == contexts["A"][0] and copy["answers"] == {"text": [], "answer_start": []}
    assert copy["question"] in {"Who did not build the tower in 1889?", "Who did build the tower in Koechlin?"} or (
        copy["question"].startswith("Who did build the tower in ") and copy["question"][-5:-1] != "1889")
    assert with_unanswerable_copies(questions, edits=1.0, seed=0).to_dict() == edited.to_dict()
