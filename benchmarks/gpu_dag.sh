#!/bin/bash
# The whole DAG on generated images on a GPU machine (issue 19): ViT-S/16 with random weights at 224 px, per-stage
# wall time and peak RSS at 1,000 and 10,000 training images (+5% held out), then the DINO step time with per-image
# and batched crops. Run from the repository root:
#     bash benchmarks/gpu_dag.sh OUTDIR [SIZES...]          # default sizes: 1000 10000
#     RECIPE=vits448 bash benchmarks/gpu_dag.sh OUTDIR 1000 # docs/scale.md's recipe: 448 px, merge.parts 150, k 20
# Writes OUTDIR/dag.json (benchmarks/bench.py's JSON: "stages" rows) and OUTDIR/pretrain.json.
# Machines without the project's requirements (the lent GPU machine has torch and timm but no dvclive, pydantic or
# pycocotools): those two from wheels in .whl/ (pip download ... -d .whl pydantic pydantic-core annotated-types
# typing-inspection pycocotools),
# and a stand-in for dvclive that writes the same .tsv curves (the stages run one by one, without dvc). The dense CRF
# (pydensecrf2 builds from source) is switched off: crf.predictions=false.
set -u
out=${1:?usage: bash benchmarks/gpu_dag.sh OUTDIR [SIZES...]}; shift
sizes=${*:-1000 10000}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=$(command -v python3 || command -v python)
if ! $py -c "import pydantic, pycocotools" 2>/dev/null; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $py -c "import dvclive" 2>/dev/null; then
    mkdir -p /tmp/shim/dvclive
    cat > /tmp/shim/dvclive/__init__.py <<'PY'
"""Stand-in for dvclive.Live on machines without it: the metrics as dvclive's plots/metrics/<name>.tsv."""
from pathlib import Path


class Live:
    def __init__(self, dir="dvclive", resume=False, **_):
        self.dir, self.step = Path(dir), 0

    def log_metric(self, name, value, plot=True, **_):
        f = self.dir / "plots" / "metrics" / f"{name}.tsv"
        f.parent.mkdir(parents=True, exist_ok=True)
        new = not f.exists()
        with open(f, "a") as fh:
            fh.write(("step\t" + name.split("/")[-1] + "\n" if new else "") + f"{self.step}\t{value}\n")

    def next_step(self):
        self.step += 1

    def end(self):
        pass
PY
    export PYTHONPATH=/tmp/shim${PYTHONPATH:+:$PYTHONPATH}
fi
nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
sets="backbone.name=vit_small_patch16_224 backbone.source=random backbone.overrides={} data.image_size=224 \
workers=0 features.batch_size=128 train.batch_size=64 train.workers=8 crf.predictions=false"
if [ "${RECIPE:-default}" = vits448 ]; then
    sets="$sets data.image_size=448 merge.parts=150 cluster.k=20 features.batch_size=64 train.batch_size=16"
fi
for n in $sizes; do
    # shellcheck disable=SC2086
    $py -m benchmarks.bench --sections stages --stage-sizes "$n" --train-epochs 1 --stage-eval-share 0.05 \
        --stage-set $sets --out "$out/dag_$n.json" || { echo "DAG at $n images stopped: the larger sizes skipped"; break; }
done
$py -m benchmarks.bench --sections pretrain --out "$out/pretrain.json" 2>&1 | tail -20 || echo "no pretrain section"
