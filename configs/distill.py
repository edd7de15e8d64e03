r"""Two-teacher detector distillation (seed 003) on the offline synthetic hand-gesture set.

  python -m experiments.run --config=configs/distill.py --workdir=runs/distill          # 3 student seeds, 11 min
  python -m experiments.run --config=configs/distill.py:smoke --workdir=/tmp/distill    # < 1 min, used by tests
  python -m experiments.run --config=configs/distill.py:lr128 --workdir=runs/distill128  # accelerators

Stages: teacher_big (4x the student's parameters, same 64x64 input), teacher_hr (the 2x larger
128x128 image, early strides 2x larger), student alone, then the student distilled from the big
teacher, from the high-resolution teacher, and from both (feature + head terms, averaged over teachers).
The teachers train once; the student arms run for seeds 0, 1, 2 (`num_seeds`, runs/distill/seed_<k>/).
Measured (results.md, test split, mean ± std over the 3 seeds, 2026-12-02): student 0.244 ± 0.038,
kd_big 0.259 ± 0.071, kd_hr 0.240 ± 0.056, kd_both 0.276 ± 0.027 mAP@0.5: kd_both beats the student on
every seed (+0.033 ± 0.021 paired) but not beyond the spread (2 x std = 0.076).
"""

import ml_collections

# Embedded CPU defaults; the accelerator variant scales widths, input size and steps.
# Sizes follow the CPU budget (a default run of ~10 min on 2 cores); forward MFLOP per image in brackets.
STUDENT = dict(widths=(16, 32, 64), stem_stride=2, blocks_per_level=1, stem_width=8, neck_width=16,
               head_width=16)                                                    # 133k params [13]
TEACHER_BIG = dict(widths=(32, 64, 160), stem_stride=2, blocks_per_level=1, stem_width=16, neck_width=32,
                   head_width=32)                                                # 716k params, 5.4x [54]
TEACHER_HR = dict(widths=(24, 48, 96), stem_stride=4, blocks_per_level=1, stem_width=8, neck_width=24,
                  head_width=24)                                                 # 298k params, 128x128 [30]


# `--config=configs/distill.py:<variant>`; listed by `python -m experiments.run --help`.
VARIANTS = ("default", "smoke", "lr128")


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r} of configs/distill.py; allowed: {', '.join(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.recipe = "distill"
    c.seed = 0
    c.num_seeds = 3  # student seeds 0, 1, 2 in runs/distill/seed_<k>/; the teachers are trained once (seed 0)

    c.data = ml_collections.ConfigDict()
    c.data.name = "synthetic_gestures"
    c.data.builder_config = "lr64"    # 64x64 student input, 128x128 high-resolution input
    c.data.data_dir = ""              # '' = $JAXFACE_DATA_DIR or ~/.cache/jaxface/tfds; prepared on first use
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.resolution_factor = 2      # L: the high-resolution image is L times larger per side
    c.data.in_memory = True           # hold the train split in memory (lr64: 315 MB); same batches either way

    # Reuse teachers trained in an earlier run instead of training them again: the workdir of that
    # distill run (or its checkpoints/teacher_big directory); '' trains the teacher in this run.
    c.teachers = ml_collections.ConfigDict()
    c.teachers.big_checkpoint = ""
    c.teachers.hr_checkpoint = ""

    c.models = ml_collections.ConfigDict()
    c.models.student = dict(STUDENT)
    c.models.teacher_big = dict(TEACHER_BIG)
    c.models.teacher_hr = dict(TEACHER_HR)
    c.models.compute_dtype = "float32"  # 'bfloat16' on GPU/TPU

    # One optimizer per trained model, a fresh schedule per stage (jaxface.train.optimizers).
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-2  # best of 2e-3 / 5e-3 / 1e-2 for the student at this budget
    c.optimizer.schedule = "cosine"   # linear warmup from 0, cosine decay to 0 at the stage's last step
    c.optimizer.warmup_steps = 50
    c.optimizer.weight_decay = 1e-4
    c.optimizer.grad_clip_norm = 0.0  # 0 = no clipping
    c.optimizer.momentum = 0.9        # sgd only

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32
    c.train.checkpoint_every_steps = 200
    c.train.keep_checkpoints = 2
    c.train.log_every_seconds = 10.0
    c.train.data_workers = 0  # batch-reading threads; 0 = min(8, CPU cores - 1); same batches for any number
    # Teachers near their plateau (at 900 steps the big teacher, 0.29 mAP on validation, was below a student
    # trained 1500 steps, 0.32); students at 1000 steps (500 left them on the steep part of the curve).
    c.train.steps = ml_collections.ConfigDict(dict(
        teacher_big=2000, teacher_hr=2000, student=1000, student_kd_big=1000, student_kd_hr=1000,
        student_kd_both=1000))

    c.loss = ml_collections.ConfigDict()
    c.loss.wh_weight = 0.1
    c.loss.offset_weight = 1.0
    # Distillation terms per teacher (claims 2-7): feature maps of the N levels and the M head maps; with two
    # teachers each term is halved (the recipe averages over teachers). Chosen on the validation split,
    # student_kd_both mAP@0.5 after 1000 steps, seeds 0 / 1 (teachers of 2000 steps): feature/head weights
    # 0.1/1.0 summed over teachers 0.269/0.114, averaged 0.313/0.184; 0.05/0.5 averaged 0.308/0.277;
    # 0.025/0.25 averaged 0.282/0.168 (the student alone: 0.279/0.207).
    c.loss.feature_weight_big = 0.05
    c.loss.head_weight_big = 0.5
    c.loss.feature_weight_hr = 0.05
    c.loss.head_weight_hr = 0.5
    # Inside the head term: weight of the heatmap term (squared error summed over cells per object;
    # 1.0 beat 3.0 on validation at the earlier 500-step budget: 0.166 vs 0.155).
    c.loss.kd_heatmap_weight = 1.0

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 64
    c.eval.top_k = 20
    c.eval.score_threshold = 0.3   # only for drawing boxes; mAP uses every detection
    c.eval.num_examples = -1       # -1 = the whole split

    if arg == "smoke":
        c.num_seeds = 1
        c.data.builder_config = "smoke"
        c.train.batch_size = 16
        c.optimizer.warmup_steps = 2
        c.train.checkpoint_every_steps = 5
        c.train.steps = ml_collections.ConfigDict({k: 6 for k in c.train.steps})
        c.eval.batch_size = 16
        c.eval.num_examples = 32
    elif arg == "lr128":
        c.data.builder_config = "lr128"
        c.models.student = dict(STUDENT, widths=(32, 64, 128))
        c.models.teacher_big = dict(TEACHER_BIG, widths=(64, 128, 256))
        c.models.teacher_hr = dict(TEACHER_HR, widths=(48, 96, 192))
        c.models.compute_dtype = "bfloat16"
        c.train.batch_size = 256
        c.train.steps = ml_collections.ConfigDict({k: 4000 for k in c.train.steps})
        c.eval.batch_size = 256
    return c.lock()  # a misspelt key (config.train.batch_sise = 8) raises instead of being added
