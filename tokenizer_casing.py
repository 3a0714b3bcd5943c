"""The run's tokenizer, and the check that it keeps the case of a cased checkpoint.

A cased BERT-family checkpoint whose repo carries only `vocab.txt` (SpanBERT, cased SciBERT and BioBERT) loads
through `AutoTokenizer` as a lowercasing tokenizer: BERT's tokenizer lowercases unless told otherwise, and then the
checkpoint's cased word pieces are never used. `--do_lower_case false` fixes it; the run warns when it is needed.
"""

import logging
import os
import re

from transformers import AutoTokenizer, PreTrainedConfig

logger = logging.getLogger(__name__)

# Words whose case a tokenizer keeps or drops; a tokenizer that lowercases turns them into lower case only.
CASING_PROBE = "Paris THE Question"
# Vocabulary entries that are special tokens, not word pieces: [CLS], [unused0], <s>, <extra_id_0> ...
SPECIAL_ENTRY = re.compile(r"\[[^\]]*\]|<[^>]*>")


class CheckpointError(ValueError):
    """A checkpoint (model or tokenizer) that cannot serve the run; the message names it and the problem."""


def load_tokenizer(checkpoint, hub_kwargs, tokenizer_name=None, config_name=None, do_lower_case=None):
    """The run's tokenizer: `tokenizer_name`'s (--tokenizer_name) or the checkpoint's, lowercasing as
    `do_lower_case` (--do_lower_case) says when it is given (else as the tokenizer's files say). It must be fast
    (windows need its offset mapping) and have a vocabulary; a tokenizer that lowercases the input of a cased
    checkpoint (its config: `config_name`'s or its own) is logged as a warning."""
    source = tokenizer_name or checkpoint
    casing = {} if do_lower_case is None else {"do_lower_case": do_lower_case}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **hub_kwargs, **casing)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{source}: cannot load its tokenizer: {err}") from err
    if not tokenizer.is_fast:
        raise CheckpointError(f"{source}: its tokenizer ({type(tokenizer).__name__}) is not a fast tokenizer: windows "
                              f"need the character offsets only fast tokenizers give")
    if set(tokenizer.get_vocab()) <= set(tokenizer.all_special_tokens):
        # transformers builds an empty tokenizer of the model's type from a folder without tokenizer files
        raise CheckpointError(f"{source}: no tokenizer files (tokenizer.json, vocab.txt, ...): its tokenizer would "
                              f"know only its {len(tokenizer)} special tokens and read every word as unknown; give "
                              f"--tokenizer_name")
    warn_on_casing_mismatch(tokenizer, checkpoint, config_name or checkpoint, hub_kwargs)
    return tokenizer


def tokenizer_lowercases(tokenizer):
    """Whether the tokenizer lowercases its input: its normalizer turns upper-case letters into lower case (fast
    tokenizers), or no token it makes of upper-case words keeps an upper-case letter."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.normalizer is not None:
        return not any(char.isupper() for char in backend.normalizer.normalize_str(CASING_PROBE))
    pieces = [piece for piece in tokenizer.tokenize(CASING_PROBE) if piece != tokenizer.unk_token]
    return bool(pieces) and not any(char.isupper() for piece in pieces for char in piece)


def cased_vocabulary(tokenizer, min_fraction=0.01):
    """Whether at least `min_fraction` of the vocabulary's word pieces (special tokens aside) hold an upper-case
    letter: a cased vocabulary has thousands (BERT cased: "Paris", "##A"), an uncased one next to none (BERT
    uncased has "ℝ", whose lower case is itself, and no other)."""
    special = set(tokenizer.all_special_tokens)
    pieces = [entry for entry in tokenizer.get_vocab() if entry not in special and not SPECIAL_ENTRY.fullmatch(entry)]
    cased = sum(entry != entry.lower() for entry in pieces)
    return cased > 0 and cased >= min_fraction * len(pieces)


def checkpoint_cased_because(tokenizer, name, config_name, hub_kwargs):
    """Why the checkpoint `name` is cased, or None: its name (a Hub id's model name, a folder's own name: not the
    folders above it) says "cased" and not "uncased", its config (`config_name`'s) says do_lower_case false, or its
    vocabulary holds cased word pieces."""
    own_name = os.path.basename(os.path.normpath(name)).lower()
    if "cased" in own_name and "uncased" not in own_name:
        return f"its name {name} says cased"
    try:
        config, _ = PreTrainedConfig.get_config_dict(
            config_name, **{key: hub_kwargs[key] for key in ("cache_dir", "revision", "token")})
    except (OSError, ValueError) as err:
        logger.debug(f"No config read for the casing check of {config_name}: {err}")
        config = {}
    if config.get("do_lower_case") is False:
        return f"the config of {config_name} says do_lower_case false"
    if cased_vocabulary(tokenizer):
        return "its vocabulary holds cased word pieces"
    return None


def warn_on_casing_mismatch(tokenizer, checkpoint, config_name, hub_kwargs):
    """Log a warning when the tokenizer lowercases the input of a cased checkpoint (a cased BERT-family checkpoint
    whose repo has only vocab.txt, such as SpanBERT, loads a lowercasing tokenizer); returns whether it warned."""
    if not tokenizer_lowercases(tokenizer):
        return False
    reason = checkpoint_cased_because(tokenizer, checkpoint, config_name, hub_kwargs)
    if reason is None:
        return False
    logger.warning(
        f"The tokenizer lowercases its input but the checkpoint {checkpoint} is cased ({reason}): "
        f"its cased word pieces would never be used. Pass --do_lower_case false (\"do_lower_case\": false in a "
        f"JSON config) to keep the case.")
    return True
