"""scripts/quickstart.sh, the first run a newcomer makes, at a small size (EPOCHS, MAX_TRAIN_SAMPLES): it sets up,
trains, evaluates, and prints each held-out question's answer beside the expected one, with a right/wrong verdict
and a count that an independent scorer agrees with."""

import re

from qa_data import questions_from_file
from tests.conftest import DEV, ROOT, SCRIPT_ENV, read_json, run_script
from tests.independent_scorer import independent_question_scores

ANSWER = re.compile(r"^       answer: (.*) \(score ([0-9.]+)\)   expected: (.*)$")


def test_quickstart_answers_the_held_out_questions_beside_the_expected_answers(tmp_path):
    out = tmp_path / "quickstart"
    result = run_script(["bash", str(ROOT / "scripts" / "quickstart.sh")],
                        env={**SCRIPT_ENV, "EPOCHS": "1", "MAX_TRAIN_SAMPLES": "16", "OUT": str(out)})
    assert result.returncode == 0, result.stdout[-5000:]
    assert read_json(out, "eval_results.json")["eval_total"] == 19
    dev = questions_from_file(DEV).rows
    lines = result.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(("right  ", "wrong  ")))
    shown = lines[first : first + 2 * len(dev)]
    right = 0
    for k, question in enumerate(dev):
        verdict, answer_line = shown[2 * k], ANSWER.match(shown[2 * k + 1])
        assert verdict[7:] == question["question"] and answer_line, shown[2 * k : 2 * k + 2]
        answer, score, expected = answer_line.groups()
        answer = "" if answer == "(no answer)" else answer
        assert answer in question["context"] and 0 <= float(score) <= 1
        assert expected == (" | ".join(question["answers"]["text"]) or "(no answer)")
        correct = independent_question_scores(answer, question["answers"]["text"])[0] == 1
        assert verdict.startswith("right" if correct else "wrong")
        right += correct
    assert lines[first + 2 * len(dev)] == f"{right} of {len(dev)} questions answered right"
