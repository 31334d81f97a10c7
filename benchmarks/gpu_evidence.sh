#!/usr/bin/env bash
# Everything only a GPU shows (issue 38), in priority order, each part under its own time cap, into $OUT (the
# device tool's folder that comes back; ./gpu_evidence when unset).
#
#   bash benchmarks/gpu_evidence.sh --prepare   # here, with PyPI: the wheels the device image lacks, MNIST and CIFAR-10 (JPEG) into .gpu/
#   bash benchmarks/gpu_evidence.sh --smoke     # here, on the CPU: every part at tiny sizes, in about three minutes
#   bash benchmarks/gpu_evidence.sh 1 2         # on the GPU (device run, carry [".gpu"]): the priorities named, in order
#
# At most 64 MiB travel to the device: with a resume state in .gpu/resume (29 MB), carry only what the
# priorities read (3 alone: .gpu/wheels, .gpu/data/mnist and .gpu/resume).
#
#   1. every CUDA path, smoke-tested (benchmarks/cuda_smoke.py)                                         cap 200 s
#   2. the study benchmark: ResNet-20 fp32 and bf16-mixed at pack 32, deterministic on and off;
#      LeNet-300-100 at packs 16, 48, 96 (each against the reference loop in the same process)        cap 4 × 85 s
#   3. LeNet-300-100 at Frankle & Carbin's 50,000 iterations per level, three seeds packed, as many levels
#      as fit; stopped by SIGUSR1 (checkpointed); what a later lease needs to continue comes back        LENET_CAP (270 s)
#   4. ResNet-20 dense on CIFAR-10 (JPEG copy), three seeds packed, the paper's schedule shortened to
#      RESNET_EPOCHS epochs (milestones at the same fractions, 1/2 and 3/4)                              RESNET_CAP (170 s)
#
# What comes back, at most 8 files a command: summary.txt; evidence.tar.gz (every log and the JSON of parts 1 and
# 2, rewritten after each part); the ledgers and reports of parts 3 and 4 (*.tar.gz); part 3's resume state
# (lenet300-resume.tar.part-*, 15 MB each: copy them into .gpu/resume/, and the next lease's `... 3` continues
# the run at the level it had reached).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-}
OUT=${OUT:-gpu_evidence}
LOGS=$(mktemp -d)  # bundled into $OUT/evidence.tar.gz after every part: the device returns at most 8 files
mkdir -p "$OUT"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1

if [[ $MODE == --prepare ]]; then
    # torch-pruning (lth.channels) and mnist1d (the quickstart) are not on the device image, which has no network.
    mkdir -p .gpu/wheels .gpu/data .gpu/resume
    grep -qx '/.gpu/' .gitignore || echo '/.gpu/' >> .gitignore
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .gpu/wheels torch-pruning mnist1d
    cp -r ../shared/data/mnist .gpu/data/
    cp ../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz .gpu/data/
    du -sh .gpu
    exit 0
fi
if [[ $MODE == --smoke ]]; then
    PRIORITIES=" 1 2 3 4 "
elif [[ $# -gt 0 && " $* " =~ ^(\ [1-4])+\ $ ]]; then
    PRIORITIES=" $* "
else
    echo "usage: $0 --prepare | --smoke | PRIORITY... (1 to 4)" >&2
    exit 2
fi

if [[ $MODE != --smoke ]]; then
    # The image's python has torch, Lightning and the rest; lth runs from this tree, the wheels from /tmp/site.
    [[ -d /tmp/site ]] || python -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl
    export PYTHONPATH=$PWD:/tmp/site
fi

part() {  # part NAME CAP COMMAND...: run it under its cap (SIGUSR1: lth checkpoints and exits 3), log it, say how it ended
    local name=$1 cap=$2 start=$SECONDS
    shift 2
    timeout --signal=USR1 --kill-after=30 "$cap" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc after $((SECONDS - start)) s (cap $cap s)$([[ $rc == 124 || $rc == 3 ]] && echo ', stopped at its cap')" | tee -a "$OUT/summary.txt"
    tar czf "$OUT/evidence.tar.gz" -C "$LOGS" .
    return $rc
}

if [[ $MODE == --smoke ]]; then
    DEVICE=cpu; STEPS="--steps=8 --warmup=2"; R_PACKS="--packs=2"; L_PACKS="--packs=2"
    LENET="--train.duration=20it --train.eval_every=10it --train.checkpoint_every=10it --prune.levels=1 --data.val_size=500"
    RESNET="--train.duration=20it --train.milestones=[10it,15it] --train.eval_every=10it --train.checkpoint_every=10it --prune.rewind=0 --data.val_size=100"
    DATA=../shared/data; IMAGES=$(mktemp -d)/cifar-part.tar.gz; RUNS=$(mktemp -d)
    # 30 images a class and split: the smoke times nothing, it only shows every part runs.
    python - "$DATA/cifar10-jpeg/cifar10-jpeg.tar.gz" "$IMAGES" <<'EOF'
import collections, sys, tarfile
seen = collections.Counter()
with tarfile.open(sys.argv[1]) as source, tarfile.open(sys.argv[2], "w:gz") as part:
    for member in source:
        folder = member.name.rsplit("/", 1)[0]
        if member.isfile() and seen[folder] < 30:
            seen[folder] += 1
            part.addfile(member, source.extractfile(member))
EOF
else
    DEVICE=cuda; STEPS="--steps=200"; R_PACKS="--packs=32"; L_PACKS="--packs=16,48,96"
    LENET="--train.duration=50000it --train.checkpoint_every=5000it"
    E=${RESNET_EPOCHS:-30}; RESNET="--train.duration=${E}ep --train.milestones=[$((E / 2))ep,$((E * 3 / 4))ep]"
    DATA=.gpu/data; IMAGES=$DATA/cifar10-jpeg.tar.gz; RUNS=gpu_runs  # gpu_runs: where a later lease unpacks the resume state
fi
echo "$(date -u +%FT%TZ) ${*} on $(python -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU", torch.__version__)')" | tee -a "$OUT/summary.txt"

if [[ $PRIORITIES == *" 1 "* ]]; then
    SMOKE=$(mktemp -d)
    part cuda-smoke 200 python benchmarks/cuda_smoke.py --images "$IMAGES" --json "$LOGS/cuda_smoke.json" --work "$SMOKE"
    cp "$SMOKE"/*.log "$LOGS/" 2>/dev/null; grep -h ": \(ok\|FAILED\)" "$LOGS/cuda-smoke.log" | tee -a "$OUT/summary.txt"
    tar czf "$OUT/evidence.tar.gz" -C "$LOGS" .
fi

if [[ $PRIORITIES == *" 2 "* ]]; then
    # The JSON is rewritten after every configuration, so a part stopped at its cap keeps what it measured.
    bench() {  # bench NAME ARGS...
        part "$1" 85 python benchmarks/throughput.py --device $DEVICE $STEPS "${@:2}" --json "$LOGS/$1.json"
    }
    bench resnet20 --model resnet20 $R_PACKS --precision=32
    bench resnet20-bf16 --model resnet20 $R_PACKS --precision=bf16-mixed
    bench lenet300 --model lenet_300_100 $L_PACKS --precision=32
    bench resnet20-nondeterministic --model resnet20 $R_PACKS --precision=32 --no-deterministic
fi

if [[ $PRIORITIES == *" 3 "* ]]; then
    # Priority 3: LeNet-300-100 at Frankle & Carbin's scale, ticket, reinit and random pruning, three seeds packed.
    LENET_RUN=(python -m lth.cli run experiments/lenet300_mnist.yaml --data.root=$DATA --seed=[0,1,2] --arms=[ticket,reinit,random_prune] $LENET
               --out_dir=$RUNS --name=lenet300_mnist_paper)
    # A later lease continues where the last one stopped: its resume state, saved in .gpu/resume, is unpacked first.
    if [[ $MODE != --smoke && ! -d $RUNS/lenet300_mnist_paper ]] && compgen -G ".gpu/resume/lenet300-resume.tar.part-*" > /dev/null; then
        cat .gpu/resume/lenet300-resume.tar.part-* | tar xf -
    fi
    part lenet300-paper "${LENET_CAP:-270}" "${LENET_RUN[@]}"; FINISHED=$?
    python -m lth.cli report $RUNS/lenet300_mnist_paper/lenet* --out $RUNS/lenet300_mnist_paper/report > "$LOGS/lenet300-report.log" 2>&1
    tar czf "$OUT/lenet300_mnist_paper.tar.gz" $(find $RUNS/lenet300_mnist_paper -name results.jsonl -o -name config.yaml -o -path '*report/*' -type f)
    # What rerunning the same command on a later lease needs to continue (at a level's start): each seed's records,
    # masks and rewind point, and the newest trained network of the chains later levels are pruned from. The
    # checkpoints of the level in progress stay behind (hundreds of MB with their optimizer states).
    if [[ $FINISHED != 0 ]]; then
        find $RUNS/lenet300_mnist_paper -maxdepth 1 -mindepth 1 -type d -name 'lenet*' | while read -r run; do
            find "$run" -maxdepth 1 -type f ! -name '*.lock'
            find "$run" -name mask.pt
            for arm in ticket random_prune; do ls -d "$run"/level_*/"$arm"/final.ckpt 2>/dev/null | sort | tail -n 1; done
        done > "$LOGS/resume-files.txt"
        tar cf - -T "$LOGS/resume-files.txt" | split -b 15M - "$OUT/lenet300-resume.tar.part-"
    fi
fi

if [[ $PRIORITIES == *" 4 "* ]]; then
    # Priority 4: ResNet-20 dense on the CIFAR-10 JPEG copy, the paper's schedule (160 epochs, LR ×0.1 at 80 and 120)
    # shortened to RESNET_EPOCHS with its milestones at the same fractions.
    part resnet20-cifar10-jpeg "${RESNET_CAP:-170}" python -m lth.cli run experiments/resnet20_cifar10.yaml --data.name=imagefolder --data.root="$IMAGES" \
        --seed=[0,1,2] --arms=[ticket] --prune.levels=0 $RESNET --out_dir=$RUNS --name=resnet20_cifar10_jpeg
    tar czf "$OUT/resnet20_cifar10_jpeg.tar.gz" $(find $RUNS/resnet20_cifar10_jpeg -name results.jsonl -o -name config.yaml -o -name dataset.json \
        -o -path '*report/*' -type f)
fi
