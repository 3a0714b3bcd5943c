# Source me: offline Hugging Face libraries with a project-local cache (the tests and CI use the same).
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_HOME="${HF_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.cache/huggingface}"
