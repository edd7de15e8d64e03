#!/usr/bin/env bash
# Benchmarks (a)-(d) of BENCHMARKS.md, one log each:
#   bash experiments/run_benchmarks.sh REPRODUCE_WORKDIR OUT_DIR [VARIANT]
# REPRODUCE_WORKDIR: a finished `python -m experiments.reproduce --seeds=3` (its metrics are read);
# VARIANT: the config variant timed (default: default; on an accelerator e.g. run it per recipe with
# its accelerator variant: distill lr128, multitask full112, mutual cells128, semi_distill crops64,
# sr_recognition full).
set -euo pipefail
runs=${1:?the workdir of a finished experiments.reproduce run}; out=${2:?an output folder}; variant=${3:-default}
mkdir -p "$out"
recipes="distill multitask mutual semi_distill sr_recognition"
for r in $recipes; do  # (a) + (c) on one device
  env -u XLA_FLAGS python -m experiments.bench --config="configs/$r.py:$variant" --steps=50 --repeats=5 > "$out/a1_$r.log" 2>&1
done
for r in $recipes; do  # (a) on 8 simulated CPU devices (on an accelerator host: its real devices)
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.bench --config="configs/$r.py:$variant" \
    --steps=10 --repeats=3 --pipeline_steps=0 > "$out/a8_$r.log" 2>&1
done
python -m experiments.bench_multitask --config="configs/multitask.py:$variant" --results="$runs/multitask/results.json" \
  > "$out/b_multitask.log" 2>&1
python -m experiments.bench_students --config="configs/distill.py:$variant" --workdir="$runs/distill" > "$out/d_distill.log" 2>&1
python -m experiments.bench_students --config="configs/semi_distill.py:$variant" --workdir="$runs/semi_distill" \
  > "$out/d_semi_distill.log" 2>&1
grep -h -E "train step|ratio|input pipeline|throughput|speed-up|images/s" "$out"/*.log | grep -v "^[IW][0-9]"
