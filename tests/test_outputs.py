"""A run's output files, written whole or not at all: atomic writes, compact JSON an entry at a time, the messages of
a failed write, and config.json written again after evaluation."""

import builtins
import json
import os

import numpy as np
import pytest
from transformers import BertConfig

from outputs import OutputError, write_atomically, write_config, write_json_atomically


class _StoppedMidway:
    """A file opened for writing that writes the first half of what it is given, then fails (a full disk, a
    killed process)."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError("write stopped midway (simulated)")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.fixture
def stop_writes_midway(monkeypatch, tmp_path):
    """Call it to make every `open(..., "w"/"wb"/...)` under tmp_path, by any code, write half and fail."""
    real_open = builtins.open

    def open_stopping_midway(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        inside = isinstance(file, (str, os.PathLike)) and os.path.abspath(file).startswith(str(tmp_path))
        return _StoppedMidway(f) if inside and any(flag in mode for flag in "wax+") else f

    return lambda: monkeypatch.setattr(builtins, "open", open_stopping_midway)


def final_files(folder):
    return sorted(name for name in os.listdir(folder) if not name.endswith(".tmp"))


def test_compact_json_is_written_an_entry_at_a_time_as_one_document(tmp_path, monkeypatch):
    nbest = {"q1": [{"text": "Normandé \"x\"", "score": np.float32(1.5), "probability": 0.25}], "q2": [], "q\n3": []}
    written = []
    real_open = builtins.open

    def recording_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if "w" in mode or "x" in mode:
            write = f.write
            f.write = lambda data: written.append(data) or write(data)
        return f

    monkeypatch.setattr(builtins, "open", recording_open)
    write_json_atomically(tmp_path / "nbest.json", nbest, indent=False)
    text = (tmp_path / "nbest.json").read_text(encoding="utf-8")
    assert text == json.dumps({**nbest, "q1": [{**nbest["q1"][0], "score": 1.5}]}, ensure_ascii=False,
                              separators=(",", ":")) + "\n"
    assert len(written) > len(nbest)  # never the whole document in one piece
    write_json_atomically(tmp_path / "empty.json", {}, indent=False)
    assert (tmp_path / "empty.json").read_text() == "{}\n"


def test_a_write_stopped_midway_leaves_the_old_file_or_none(tmp_path, stop_writes_midway, monkeypatch):
    old = tmp_path / "eval_results.json"
    write_json_atomically(old, {"eval_f1": 50.0})
    stop_writes_midway()
    with pytest.raises(OutputError, match=f"Cannot write {old}: write stopped midway"):
        write_json_atomically(old, {"eval_f1": 60.0, "eval_exact": list(range(100))})
    with pytest.raises(OutputError, match="eval_predictions.json: write stopped midway"):
        write_atomically(tmp_path / "eval_predictions.json", b'{"a": "' + b"x" * 1000 + b'"}')
    assert json.loads(old.read_text()) == {"eval_f1": 50.0}  # the old content, complete
    assert os.listdir(tmp_path) == ["eval_results.json"]  # no temporary file left, the new file absent
    monkeypatch.undo()
    # stopped between the write and the rename
    monkeypatch.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(OSError("stopped before the rename")))
    with pytest.raises(OutputError, match="rename"):
        write_json_atomically(old, {"eval_f1": 70.0})
    assert json.loads(old.read_text()) == {"eval_f1": 50.0} and os.listdir(tmp_path) == ["eval_results.json"]


def test_a_full_disk_or_a_read_only_folder_ends_with_a_message_naming_the_file(tmp_path, monkeypatch):
    import errno

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(full))
    with pytest.raises(OutputError, match=f"Cannot write {tmp_path / 'a.json'}: No space left on device"):
        write_json_atomically(tmp_path / "a.json", {"x": 1})
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    (tmp_path / "locked").mkdir(mode=0o500)
    if os.access(tmp_path / "locked", os.W_OK):
        pytest.skip("running as a user who may write anywhere (root): no read-only folder to test with")
    with pytest.raises(OutputError, match="locked/a.json: Permission denied"):
        write_json_atomically(tmp_path / "locked" / "a.json", {"x": 1})


def test_the_temporary_file_is_never_opened_through_a_link_planted_at_its_name(tmp_path, monkeypatch):
    import secrets

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    monkeypatch.setattr(secrets, "token_hex", lambda n: "0" * (2 * n))
    (tmp_path / f".out.json.{'0' * 16}.tmp").symlink_to(victim)
    with pytest.raises(OutputError, match="out.json: File exists"):
        write_json_atomically(tmp_path / "out.json", {"x": 1})
    assert victim.read_text() == "keep me" and not (tmp_path / "out.json").exists()
    monkeypatch.undo()
    write_json_atomically(tmp_path / "out.json", {"x": 1})  # another name: written
    assert json.loads((tmp_path / "out.json").read_text()) == {"x": 1}


def saved_config(output_dir):
    """A tiny model config, saved in `output_dir` as training saves it."""
    config = BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    config.qa_settings = {"max_seq_length": 64, "null_score_diff_threshold": 0.0}
    config.save_pretrained(output_dir)
    return config


def test_a_config_rewritten_after_evaluation_goes_to_config_json_under_a_temporary_name(tmp_path, stop_writes_midway):
    config = saved_config(tmp_path)
    config.qa_settings = {**config.qa_settings, "null_score_diff_threshold": -61.25}  # null odds, past sigmoid's range
    stop_writes_midway()
    with pytest.raises(OutputError, match="config.json: write stopped midway"):
        write_config(config, tmp_path)
    # config.json is still the old one, complete
    assert json.loads((tmp_path / "config.json").read_text())["qa_settings"]["null_score_diff_threshold"] == 0.0
    assert final_files(tmp_path) == ["config.json"]


def test_a_rewritten_config_is_what_save_pretrained_writes(tmp_path):
    config = saved_config(tmp_path / "model")
    config.qa_settings = {**config.qa_settings, "null_score_diff_threshold": -61.25}
    write_config(config, tmp_path / "model")
    config.save_pretrained(tmp_path / "reference")
    assert (tmp_path / "model" / "config.json").read_text() == (tmp_path / "reference" / "config.json").read_text()
    assert BertConfig.from_pretrained(tmp_path / "model").qa_settings["null_score_diff_threshold"] == -61.25
    assert final_files(tmp_path / "model") == os.listdir(tmp_path / "model") == ["config.json"]
