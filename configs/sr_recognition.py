r"""Joint super-resolution + face recognition, cascaded into one model (seed 001).

  python -m experiments.run --config=configs/sr_recognition.py --workdir=runs/sr          # ~10 min, 2-core CPU
  python -m experiments.run --config=configs/sr_recognition.py:smoke --workdir=/tmp/sr   # < 1 min, used by tests
  python -m experiments.run --config=configs/sr_recognition.py:full --workdir=runs/sr112 # accelerators, 112 -> 28 px
  python -m experiments.run --config=configs/sr_recognition.py:lfw --workdir=runs/sr_lfw  # real faces: TFDS lfw
  python -m experiments.predict --workdir=runs/sr face.png                               # embedding norm (JSON line)

Arms, all on the same identity-balanced batches and per-example degradations: (a) recognizer trained
on HR only, (b) on HR + bicubic LR, (c) the seed's joint SR + recognizer step, cascaded, (d) as (c) with
the recognizer's loss also flowing into SR. Expected result (results.md): on LR-LR verification of
test identities never seen in training, the cascade (c) beats (a) and (b).

The default reads `synthetic_faces/default` (600 training identities, of which the last 60 are held out
for validation, and 60 unseen test identities; 112x112, rendered offline on first use, ~2 min), box-
downscaled to 32x32 HR and degraded 4x to 8x8 LR so the four arms fit a CPU budget; `full` keeps 112x112
(LR 28x28) for accelerators.
"""

import ml_collections

# `--config=configs/sr_recognition.py:<variant>`; listed by `python -m experiments.run --help`.
VARIANTS = ("default", "smoke", "full", "lfw")


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r} of configs/sr_recognition.py; allowed: {', '.join(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.recipe = "sr_recognition"
    c.seed = 0
    c.num_seeds = 1  # --config.num_seeds=3: seeds 0-2 in <workdir>/seed_<k>/, a mean ± std table
    c.cascade_from = "joint"  # the arm whose SR + recognizer the exported cascade joins: 'joint' (seed) or 'joint_e2e'

    c.data = ml_collections.ConfigDict()
    c.data.name = "synthetic_faces"
    c.data.builder_config = "default"
    c.data.data_dir = ""              # '' = $JAXFACE_DATA_DIR or ~/.cache/jaxface/tfds; prepared on first use
    c.data.train_split = "train"
    c.data.eval_split = "test"        # 'validation': the table on the held-out identities (every choice is made there)
    c.data.image_size = 32            # HR side; the LR side is image_size / degradation.factor
    c.data.val_identities = 60        # the last training identities, held out: validation (verify threshold)
    c.data.lfw_crop = 150             # lfw only: the centred square of the 250x250 frame that is kept
    c.data.max_train_examples = -1    # -1 = the whole split
    c.data.max_eval_examples = -1

    # Per-example degradation (jaxface.data.degradations), drawn from example_rng(seed, step, row).
    c.degradation = ml_collections.ConfigDict()
    c.degradation.factor = 4
    c.degradation.blur_sigma = (0.5, 1.5)   # HR pixels
    c.degradation.noise_sigma = (0.0, 0.0)  # grey levels on the LR image; (0, 0) = none
    c.degradation.jpeg_quality = (0, 0)     # e.g. (30, 90); (0, 0) = none

    c.model = ml_collections.ConfigDict()
    c.model.sr = ml_collections.ConfigDict(dict(kind="fsrcnn", d=32, s=12, m=2, residual=True))  # or srcnn: n1, n2
    c.model.recognizer = ml_collections.ConfigDict(dict(widths=(16, 32, 64), blocks=(1, 1, 1), stem_width=16,
                                                        stem_stride=2, embed_dim=64))
    c.model.compute_dtype = "float32"  # 'bfloat16' on GPU/TPU

    c.loss = ml_collections.ConfigDict()
    c.loss.reconstruction = "l1"      # or 'l2'
    c.loss.margin = 1.0               # m of the pair loss (unit embeddings: distances in [0, 2])
    c.loss.identity_into_sr = 0.1     # lambda of arm (d): SR follows L_rec + lambda L_id

    # One optimizer per trained model, a fresh schedule per stage (jaxface.train.optimizers).
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 30
    c.optimizer.weight_decay = 1e-4
    c.optimizer.grad_clip_norm = 0.0
    c.optimizer.momentum = 0.9        # sgd only

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64           # P identities x K images
    c.train.images_per_identity = 4   # K
    c.train.checkpoint_every_steps = 500
    c.train.keep_checkpoints = 1
    c.train.log_every_seconds = 20.0
    c.train.data_workers = 0          # batch-reading threads; 0 = min(8, CPU cores - 1); same batches for any number
    c.train.steps = ml_collections.ConfigDict(dict(hr_only=600, hr_lr=600, joint=600, joint_e2e=600))

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 120
    c.eval.num_folds = 10
    c.eval.far = (1e-2, 1e-3)
    c.eval.num_sample_faces = 6

    if arg == "smoke":
        c.data.builder_config = "smoke"   # 12 train identities (3 held out), 4 test identities
        c.data.image_size = 16
        c.data.val_identities = 3
        c.model.sr = ml_collections.ConfigDict(dict(kind="fsrcnn", d=8, s=4, m=1, residual=True))
        c.model.recognizer = ml_collections.ConfigDict(dict(widths=(8,), blocks=(1,), stem_width=8, stem_stride=2,
                                                            embed_dim=8))
        c.train.batch_size = 8
        c.train.images_per_identity = 2
        c.optimizer.warmup_steps = 1
        c.train.checkpoint_every_steps = 10
        c.train.steps = ml_collections.ConfigDict(dict(hr_only=2, hr_lr=2, joint=3, joint_e2e=2))
        c.eval.batch_size = 8
        c.eval.num_folds = 2
        c.eval.num_sample_faces = 2
    elif arg in ("full", "lfw"):
        c.data.image_size = 112
        c.model.sr = ml_collections.ConfigDict(dict(kind="fsrcnn", d=56, s=12, m=4, residual=True))
        c.model.recognizer = ml_collections.ConfigDict(dict(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2),
                                                            stem_width=64, stem_stride=2, embed_dim=256))
        c.model.compute_dtype = "bfloat16"
        c.degradation.noise_sigma = (0.0, 5.0)
        c.degradation.jpeg_quality = (40, 90)
        c.train.batch_size = 256
        c.train.images_per_identity = 4
        c.optimizer.learning_rate = 2e-3
        c.train.steps = ml_collections.ConfigDict(dict(hr_only=6000, hr_lr=6000, joint=6000, joint_e2e=6000))
        c.eval.batch_size = 200
    if arg == "lfw":  # TFDS `lfw`, prepared once by the user (README); people split 80/10/10 by name
        c.data.name = "lfw"
        c.data.builder_config = ""
    return c.lock()  # a misspelt key (config.train.batch_sise = 8) raises instead of being added
