"""Model folders saved whole (`PublishingTrainer`); the pushes to a Hub are tested against a loopback Hub in
test_hub.py."""

from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForQuestionAnswering, TrainingArguments

from publishing import PublishingTrainer


def test_a_save_interrupted_midway_leaves_the_previous_files_whole(tiny_bert_dir, tmp_path):
    bundled = tmp_path / "code.py"
    bundled.write_text("X = 1\n")
    out = tmp_path / "out"
    qa_trainer = PublishingTrainer(model=AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir),
                                   args=TrainingArguments(output_dir=str(out), report_to="none", use_cpu=True),
                                   bundled_files=[str(bundled)])
    qa_trainer.save_model()
    saved = load_file(out / "model.safetensors")
    assert (out / "code.py").read_text() == "X = 1\n" and (out / "config.json").exists()

    def killed_while_writing(folder, **kwargs):
        (Path(folder) / "model.safetensors").write_bytes(b"the first bytes of a weights file")
        raise KeyboardInterrupt

    qa_trainer.model.save_pretrained = killed_while_writing
    with pytest.raises(KeyboardInterrupt):
        qa_trainer.save_model()
    assert load_file(out / "model.safetensors").keys() == saved.keys()
    assert not [p for p in out.iterdir() if p.name.startswith(".saving-")]
