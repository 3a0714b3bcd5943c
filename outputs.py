"""A run's output files, written whole or not at all: each goes to a temporary file beside its final name and is
renamed into place, so a run stopped midway never leaves a half-written file under a final name, and a write that
fails (a full disk, no permission) ends the run with a message naming the file."""

import contextlib
import itertools
import json
import logging
import os
import secrets

import orjson

logger = logging.getLogger(__name__)


class OutputError(RuntimeError):
    """An output file could not be written (a full disk, no permission); the message names it and says why."""


def write_atomically(path, data):
    """Write bytes, or an iterable of byte strings one after the other, to a temporary file beside `path` and rename
    it to `path`, so an interrupted run never leaves a half-written file.

    The temporary file has a random name and is created exclusively: never through an existing file or a link
    planted there. A failed write removes it, leaves `path` as it was, and raises `OutputError` naming `path`."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp, created = os.path.join(folder, f".{name}.{secrets.token_hex(8)}.tmp"), False
    try:
        with open(tmp, "xb") as f:
            created = True
            for chunk in [data] if isinstance(data, bytes) else data:
                f.write(chunk)
        os.replace(tmp, path)
    except OSError as err:
        if created:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise OutputError(f"Cannot write {path}: {err.strerror or err}. Outputs written before it are complete; "
                          f"free some space or fix the folder's permissions and run again") from err


def write_json_atomically(path, payload, indent=True):
    """Write JSON (UTF-8, indented by 2 or compact) atomically. orjson: the n-best file of the SQuAD v2 dev set
    takes 1 s with `json`. A compact dict is encoded an entry at a time: that n-best file (190 MB from an untrained
    CRF's long spans) would otherwise sit in memory whole, beside the answers it is made of (and it is written in a
    third of the time: 0.16 against 0.51 s)."""
    options = orjson.OPT_SERIALIZE_NUMPY
    if indent or not isinstance(payload, dict):
        options |= orjson.OPT_APPEND_NEWLINE | (orjson.OPT_INDENT_2 if indent else 0)
        return write_atomically(path, orjson.dumps(payload, option=options))
    entries = (b"%s%s:%s" % (b"," if i else b"", orjson.dumps(key), orjson.dumps(value, option=options))
               for i, (key, value) in enumerate(payload.items()))
    write_atomically(path, itertools.chain([b"{"], entries, [b"}\n"]))


def write_prediction_files(result, output_dir, prefix):
    """`{prefix}_predictions.json`, `{prefix}_nbest_predictions.json` and, for SQuAD v2, `{prefix}_null_odds.json`."""
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomically(os.path.join(output_dir, f"{prefix}_predictions.json"), result.predictions)
    # compact: the n-best file is by far the largest (54 MB for the SQuAD v2 dev set indented)
    write_json_atomically(os.path.join(output_dir, f"{prefix}_nbest_predictions.json"), result.nbest, indent=False)
    if result.null_odds:
        write_json_atomically(os.path.join(output_dir, f"{prefix}_null_odds.json"), result.null_odds)
    logger.info(f"Wrote {prefix} predictions of {len(result.predictions)} questions to {output_dir}")


def save_metrics(output_dir, split, metrics):
    """`{split}_results.json`, and `metrics` merged into `all_results.json` (the transformers examples' files)."""
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomically(os.path.join(output_dir, f"{split}_results.json"), metrics)
    all_path = os.path.join(output_dir, "all_results.json")
    combined = {}
    if os.path.exists(all_path):
        with open(all_path, encoding="utf-8") as f:
            combined = json.load(f)
    combined.update(metrics)
    write_json_atomically(all_path, combined)


def write_config(config, output_dir):
    """Write a model's config.json into its saved folder again (after evaluation tuned its settings), as
    `save_pretrained` writes it (validated, the difference from the defaults), without touching the folder's other
    files (the weights, the code `auto_map` names)."""
    if hasattr(config, "validate"):
        config.validate()
    write_atomically(os.path.join(output_dir, "config.json"), config.to_json_string(use_diff=True).encode("utf-8"))
