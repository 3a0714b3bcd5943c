"""Tokenized windows cached on disk, so that reruns and the other processes of a launch do not tokenize again.

A cache file is named by a key of everything its windows depend on: the questions (their `datasets` fingerprint,
which hashes their content), the tokenizer (its vocabulary, normalisation and special tokens; not the truncation
and padding state its calls leave behind), the settings that cut windows and label them, and the code that builds
them. Any change makes another key, so a stale file is never read.
"""

import hashlib
import json
from pathlib import Path

import datasets

# The files whose code decides what a window holds.
WINDOW_CODE = tuple(Path(__file__).resolve().parent / name for name in ("model_folder/qa_windows.py", "utils_qa.py"))


def tokenizer_identity(tokenizer):
    """A string that changes with whatever changes how `tokenizer` tokenizes (the backend's truncation and padding
    state, which calls overwrite, left out: windows set their own)."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    backend.pop("truncation", None)
    backend.pop("padding", None)
    extra = {"class": type(tokenizer).__name__, "inputs": list(tokenizer.model_input_names),
             "specials": tokenizer.special_tokens_map}
    return json.dumps([backend, extra], sort_keys=True, default=str)


def windows_key(questions, tokenizer, settings):
    """Hex key of the windows of `questions` cut by `tokenizer` with `settings` (a JSON-able dict)."""
    digest = hashlib.sha256()
    for part in (questions._fingerprint, tokenizer_identity(tokenizer), json.dumps(settings, sort_keys=True)):
        digest.update(part.encode("utf-8"))
    for path in WINDOW_CODE:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def windows_cache_file(key, cache_dir=None):
    """Where the windows of `key` are cached: `cache_dir` (--cache_dir) or the datasets cache, under
    `spanbert_qa_windows/`."""
    folder = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "spanbert_qa_windows"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"{key}.arrow")


def cached_windows(questions, build, key, cache_dir=None, recompute=False, num_proc=None, description=None):
    """`questions.map(build)` (batched, with indices, replacing the question columns by the windows'), read from the
    cache file of `key` when it is there (and `recompute` is off), else computed, with `num_proc` processes, and
    written there."""
    return questions.map(
        build, batched=True, with_indices=True, remove_columns=questions.column_names, num_proc=num_proc,
        cache_file_name=windows_cache_file(key, cache_dir), load_from_cache_file=not recompute, new_fingerprint=key,
        desc=description,
    )
