"""Tokenized windows cached on disk, so that reruns and the other processes of a launch do not tokenize again.

A cache file is named by a key of everything its windows depend on: the questions (their `datasets` fingerprint,
which hashes their content), the tokenizer (its vocabulary, normalisation and special tokens; not the truncation
and padding state its calls leave behind, which the windows set themselves), the settings that cut windows and label
them, and the code that builds them. Any change makes another key, so a stale file is never read. Beside the files,
a record of their digests is written once they are complete: a file that does not match it (cut short by a full
disk, replaced by other windows) is not read but tokenized again, with a warning.
"""

import hashlib
import json
import logging
import os
from pathlib import Path

import datasets
import pyarrow

from outputs import OutputError, write_json_atomically

logger = logging.getLogger(__name__)

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
    `spanbert_qa_windows/`; OutputError naming the folder where it cannot be made or written to."""
    folder = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "spanbert_qa_windows"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"[Errno 13] Permission denied: '{folder}'")
    except OSError as err:  # a file, a dangling link or an unwritable folder where the cache folder goes
        raise OutputError(f"Cannot keep tokenized windows in {folder}: {err.strerror or err}. Give another folder "
                          "with --cache_dir, or remove or fix what stands at that path") from err
    return str(folder / f"{key}.arrow")


def file_digests(windows):
    """{file name: sha256} of the Arrow files `windows` (a Dataset) is read from."""
    digests = {}
    for cache in windows.cache_files:
        digest = hashlib.sha256()
        with open(cache["filename"], "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        digests[os.path.basename(cache["filename"])] = digest.hexdigest()
    return digests


def digests_file(cache_file):
    return f"{cache_file}.digests.json"


def verified_windows(map_windows, cache_file):
    """The windows read from `cache_file` (`map_windows(load_from_cache_file=True)`), or None, with a warning, when
    they cannot be read or are not the files this cache wrote there (their digests differ from its record)."""
    try:
        windows = map_windows(load_from_cache_file=True)
        with open(digests_file(cache_file), encoding="utf-8") as f:
            recorded = json.load(f)
        if file_digests(windows) == recorded:
            return windows
        problem = "they are not the files written there (their digests differ)"
    except (OSError, ValueError, pyarrow.ArrowException) as err:  # ValueError: a record that is no JSON
        problem = f"they cannot be read ({type(err).__name__}: {err})"
    logger.warning(f"Cached windows at {cache_file}: {problem}; tokenizing them again (--overwrite_cache does so "
                   "from the start)")
    return None


def cached_windows(questions, build, key, cache_dir=None, recompute=False, num_proc=None, description=None):
    """`questions.map(build)` (batched, with indices, replacing the question columns by the windows'), read from the
    cache file of `key` when it is there and verified (and `recompute` is off), else computed, with `num_proc`
    processes, and written there with a record of its digests."""
    cache_file = windows_cache_file(key, cache_dir)

    def map_windows(load_from_cache_file):
        return questions.map(
            build, batched=True, with_indices=True, remove_columns=questions.column_names, num_proc=num_proc,
            cache_file_name=cache_file, load_from_cache_file=load_from_cache_file, new_fingerprint=key,
            desc=description,
        )

    if not recompute and os.path.exists(digests_file(cache_file)):
        windows = verified_windows(map_windows, cache_file)
        if windows is not None:
            return windows
    windows = map_windows(load_from_cache_file=False)
    write_json_atomically(digests_file(cache_file), file_digests(windows))
    return windows
