import { z } from 'zod';
import { relatedKeys } from './issues.js';

/**
 * The paper's JSON config (`base`, `model`, `train`, `data`, `loss`, `gbn`), accepted as the paper's code writes
 * it, plus gdp's own keys (marked "gdp:"). Every object is strict: an unknown key is an error with its path. Each of
 * the paper's keys means here what it means in the paper's code, and a value gdp cannot honour is refused naming
 * what to use instead; `base.cuda` and `base.multi_gpus` are device hints that gdp's flags govern (configNotes says
 * so when they are set).
 */
const base = z
  .object({
    task_name: z.string().regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, dot, dash and underscore only (it names a folder)'),
    /** The paper's device switch: a hint here; each worker's --backend and --gpu place its work. */
    cuda: z.boolean().default(false),
    seed: z.number().int().default(0),
    /** The paper's starting weights file; a relative path in a config file is relative to that file's folder (see model.weights). */
    checkpoint_path: z.string().default(''),
    /** The paper's starting epoch: the train stage runs epochs epoch+1..max_epoch from the starting weights. */
    epoch: z.number().int().min(0).default(0),
    model_saving_interval: z.number().int().positive().default(10),
    /** The paper's nn.DataParallel switch: a hint here; gdp's data parallelism is its workers (--workers). */
    multi_gpus: z.boolean().default(false),
    /**
     * The paper's code only re-enables cuDNN with it (PyTorch's default) and trains in float32, as gdp does; true is
     * refused so that nobody expects half-precision training from it.
     */
    fp16: z
      .boolean()
      .refine((v) => !v, {
        message:
          'gdp trains in float32, as the paper\'s code does (its fp16 switch only re-enables cuDNN); set it false, and for half-precision gradient uploads set dist.grad_dtype: "float16"',
      })
      .default(false),
    /** gdp: where logs/<task_name>/ goes; relative in a config file: to its folder, else to the working directory. */
    log_dir: z.string().default('logs'),
    /**
     * gdp: write the resume point (logs/<task_name>/resume.safetensors) every this many global steps, besides the
     * epoch, Tick/Tock and stage boundaries where it is always written; 0: at the boundaries only.
     */
    resume_every_steps: z.number().int().nonnegative().default(100),
  })
  .strict();

const model = z
  .object({
    name: z.string(),
    num_class: z.number().int().positive(),
    /** The paper's torchvision-weights switch: gdp downloads nothing, so true is refused (model.weights names a file). */
    pretrained: z
      .boolean()
      .refine((v) => !v, {
        message:
          'gdp downloads no weights: convert the pretrained weights to safetensors (PyTorch names) and name the file in model.weights; set pretrained false',
      })
      .default(false),
    /**
     * gdp: safetensors weights to start from (PyTorch names and layout). A relative path in a config file is relative
     * to that file's folder; given with `--set`, to the working directory (as model.file, data.dir, base.checkpoint_path).
     */
    weights: z.string().optional(),
    /**
     * gdp: a TF.js layers model (its model.json) or Keras file to train and prune: model.name 'graph', starting weights
     * from it. Relative: to the config file's folder, or with `--set` to the working directory.
     */
    file: z.string().optional(),
    /**
     * gdp: the TF.js layers topology architecture 'graph' is built from; filled when the config is loaded, from
     * model.file or from model.weights' `graph` metadata (a `gdp-model import` output), and so sent to workers.
     */
    graph: z.record(z.string(), z.unknown()).optional(),
    /** gdp: channel multiplier of a scalable architecture (mobilenet_v2; widths rounded to multiples of 8). */
    width_mult: z.number().gt(0).max(4).optional(),
    /** gdp: input height and width of a scalable architecture (mobilenet_v2; its default is 224). */
    input_size: z.number().int().positive().max(4096).optional(),
  })
  .strict();

const sgdr = z
  .object({
    lr_min: z.number().nonnegative(),
    lr_max: z.number().positive(),
    restart_period: z.number().positive(),
    warm_up: z.number().nonnegative().default(0),
  })
  .strict();

const train = z
  .object({
    trainer: z.enum(['normal']).default('normal'),
    max_epoch: z.number().int().nonnegative(),
    optim: z.enum(['sgd']).default('sgd'),
    steplr: z
      .array(z.tuple([z.number().int().positive(), z.number().nonnegative()]))
      .min(1)
      .optional(),
    sgdr: sgdr.optional(),
    weight_decay: z.number().nonnegative().default(0),
    momentum: z.number().min(0).max(1).default(0),
    nesterov: z.boolean().default(false),
    /** gdp: stop each epoch after this many global batches (smoke runs). */
    max_steps_per_epoch: z.number().int().positive().optional(),
  })
  .strict()
  .refine((t) => t.steplr !== undefined || t.sgdr !== undefined || t.max_epoch === 0, {
    message: 'train needs a learning-rate schedule: steplr or sgdr',
    ...relatedKeys('train.steplr', 'train.sgdr', 'train.max_epoch'),
  });

/** Keys that only `data.type: "folder"` reads. */
const FOLDER_KEYS = ['image_size', 'channels', 'mean', 'std'] as const;

const data = z
  .object({
    type: z.enum(['mnist', 'cifar10', 'cifar100', 'imagenet', 'folder']),
    /** The paper's DataLoader switch: every training sample order (train, Tock, Tick, finetune) is a fresh permutation per epoch, or the identity. */
    shuffle: z.boolean().default(true),
    batch_size: z.number().int().positive(),
    test_batch_size: z.number().int().positive(),
    num_workers: z.number().int().nonnegative().default(2),
    /**
     * gdp: dataset folder (CIFAR binary batches, ImageNet or folder train/ and val/); `--data-dir` overrides. Relative:
     * to the config file's folder, or with `--set` to the working directory.
     */
    dir: z.string().optional(),
    /** gdp: evaluate on N test samples, every class in proportion (the same N on every worker and run). */
    test_subset: z.number().int().positive().optional(),
    /** gdp (folder): side of the square images, pixels; default: the model's input side. */
    image_size: z.number().int().min(4).max(2048).optional(),
    /** gdp (folder): 3 (RGB) or 1 (greyscale); default: the model's input channels. */
    channels: z.union([z.literal(1), z.literal(3)]).optional(),
    /** gdp (folder): per-channel mean and std of pixels in [0, 1]; default: computed from the training images. */
    mean: z.array(z.number()).min(1).max(3).optional(),
    std: z.array(z.number().positive()).min(1).max(3).optional(),
  })
  .strict()
  .superRefine((d, ctx) => {
    for (const key of FOLDER_KEYS) {
      if (d[key] !== undefined && d.type !== 'folder')
        ctx.addIssue({ code: 'custom', path: [key], message: `applies to data.type 'folder' only, not '${d.type}'`, ...relatedKeys('data.type') });
    }
    if ((d.mean === undefined) !== (d.std === undefined))
      ctx.addIssue({ code: 'custom', path: [d.mean ? 'std' : 'mean'], message: 'data.mean and data.std go together', ...relatedKeys('data.mean', 'data.std') });
    else if (d.mean && d.std && d.mean.length !== d.std.length)
      ctx.addIssue({ code: 'custom', path: ['std'], message: `${d.std.length} value(s), data.mean has ${d.mean.length}`, ...relatedKeys('data.mean') });
    if (d.mean && d.channels !== undefined && d.mean.length !== d.channels)
      ctx.addIssue({ code: 'custom', path: ['mean'], message: `${d.mean.length} value(s) for ${d.channels} channel(s)`, ...relatedKeys('data.channels') });
  });

const loss = z.object({ criterion: z.enum(['softmax']) }).strict();

const gbn = z
  .object({
    sparse_lambda: z.number().nonnegative(),
    flops_eta: z.number().nonnegative().default(0),
    lr_min: z.number().nonnegative(),
    lr_max: z.number().positive(),
    tock_epoch: z.number().int().nonnegative(),
    T: z.number().int().positive(),
    p: z.number().gt(0).lt(1),
    finetune_epoch: z.number().int().nonnegative(),
    /** gdp: stop pruning when MACs fall to this fraction of the baseline's. */
    target_flops: z.number().gt(0).lt(1).optional(),
    /** gdp: save a checkpoint the first time the MACs ratio falls under each of these fractions. */
    save_points: z.array(z.number().gt(0).lt(1)).default([]),
    /** gdp: channel importance. */
    criterion: z.enum(['gate', 'l1', 'random']).default('gate'),
    /** gdp: every layer keeps at least this fraction of its channels (rounded as minimal_rounding says). */
    minimal_ratio: z.number().gt(0).max(1).default(0.1),
    /**
     * gdp: `ceil`: a group keeps at least ceil(minimal_ratio * width) channels. `floor`: max(1, int(width *
     * minimal_ratio)), the paper's `GatedBatchNorm2d.minimal_filter` (prune/universal.py), e.g. 1, 3 and 6 of
     * ResNet-56's 16, 32 and 64 channels where ceil keeps 2, 4 and 7.
     */
    minimal_rounding: z.enum(['ceil', 'floor']).default('ceil'),
    /**
     * gdp: every group keeps at least this many alive channels (or all it has, when narrower), besides
     * minimal_ratio. The paper's notebooks pass `minium_filter = 3` to `IterRecoverFramework` (prune/universal.py),
     * whose constructor ignores it: the paper's code keeps `max(1, int(0.1 * width))` (minimal_rounding: floor).
     */
    min_filters: z.number().int().positive().default(1),
    /**
     * gdp: which parameters a Tick trains. `gates`: the gates alone. `all_but_conv`: every parameter but those of
     * the convolutions (gates, BN biases, the linear layer), as the paper's `IterRecoverFramework.freeze_conv`
     * (prune/universal.py) leaves trainable; a gated BN's weight is frozen in both.
     */
    tick_trains: z.enum(['gates', 'all_but_conv']).default('gates'),
    /**
     * gdp: a Tick also applies weight decay and momentum to the parameters it does not train but that trained since
     * the last momentum reset (the Tock's convolutions), with a zero gradient. This replicates PyTorch 1.x, where the
     * paper's `optimizer.zero_grad()` leaves zero tensors in the frozen convolutions' `.grad`, so `SGD.step` still
     * moves them; PyTorch 2's zero_grad sets them to None and skips them, as `false` does.
     */
    tick_decay_frozen: z.boolean().default(false),
    /**
     * gdp: the filter count `left` a Tick's `num = int(left * p)` comes from (every candidate up to ranked entry num
     * is pruned: num + 1 filters, ties and whole group channels included, as the paper's `get_threshold`).
     * `alive`: the filters alive now. `lagged`: the paper's run loop (run/resnet-56/resnet56_prune.ipynb,
     * run/vgg16/vgg16_prune_demo.py), whose `left` counts the filters alive before the previous Tick's prune (its
     * `pruned_filters` is updated from the count taken before each prune); the first Tick uses the filters alive at
     * its start.
     */
    prune_count: z.enum(['alive', 'lagged']).default('alive'),
    /**
     * gdp: global batches per Tick. Unset: one pass over the training set (capped by train.max_steps_per_epoch), as
     * the paper's code does (its notebooks train each Tick on the whole train_loader).
     */
    tick_batches: z.number().int().positive().optional(),
    /** gdp: momentum while finetuning (the paper's code uses 0). */
    finetune_momentum: z.number().min(0).max(1).default(0),
    /** gdp: every group keeps a multiple of this many channels, or its full width (hardware-friendly widths). */
    round_to: z.number().int().positive().default(1),
    /** gdp: at most this many Ticks (safety bound). */
    max_ticks: z.number().int().positive().default(10000),
  })
  .strict();

/** gdp: distributed settings. */
const dist = z
  .object({
    checksum_every: z.number().int().positive().default(50),
    /**
     * Largest gradient bucket, in MiB. The star's buckets are also at most an eighth of the model (never under 64 KiB:
     * protocol/version.ts exchangeBucketElements), so that a small model's exchange pipelines too.
     */
    bucket_mib: z.number().positive().max(64).default(16),
    grad_dtype: z.enum(['float32', 'float16']).default('float32'),
    /**
     * How a step's gradients are averaged: 'star' (every worker uploads to the coordinator, which averages and
     * broadcasts), 'ring' (a ring all-reduce among the workers; the coordinator receives the average from one), or
     * 'auto' (ring from 2 workers on, coordinator/ring_step.ts RING_AUTO_MIN_WORKERS: README, Running distributed). grad_dtype is for star only.
     */
    allreduce: z.enum(['star', 'ring', 'auto']).default('star'),
    heartbeat_ms: z.number().int().positive().default(2000),
    /**
     * A worker silent this long (no heartbeat, no answer) is dropped and its shard recomputed by the others. A
     * worker cannot send heartbeats while its tensor backend computes, so during a request the allowance grows to
     * twice its longest answer so far.
     */
    heartbeat_timeout_ms: z.number().int().positive().default(30000),
    /** At most this long for any one answer (and for the coordinator's silence, as a worker sees it). */
    step_timeout_ms: z.number().int().positive().default(600000),
  })
  .strict()
  .refine((d) => d.heartbeat_timeout_ms >= 3 * d.heartbeat_ms, {
    message: 'heartbeat_timeout_ms must be at least 3 heartbeat_ms periods, or a worker on time is dropped',
    path: ['heartbeat_timeout_ms'],
    ...relatedKeys('dist.heartbeat_ms'),
  });

export const STAGES = ['train', 'prune', 'finetune'] as const;

export const configSchema = z
  .object({
    base,
    model,
    train,
    data,
    loss,
    gbn: gbn.optional(),
    dist: dist.default(dist.parse({})),
    /** gdp: stages to run, in order: train the baseline, prune with Tick-Tock (then melt), finetune. */
    stages: z.array(z.enum(STAGES)).min(1).default(['train']),
  })
  .strict()
  // Checked now rather than when the stage starts, after hours of baseline training.
  .refine((c) => c.gbn !== undefined || !c.stages.some((s) => s === 'prune' || s === 'finetune'), {
    message: "stages 'prune' and 'finetune' need a 'gbn' section",
    path: ['gbn'],
    ...relatedKeys('stages'),
  })
  // The paper's main.py continues from base.checkpoint_path at epoch base.epoch+1: without weights it would train
  // a fresh network on the tail of the schedule.
  .refine((c) => c.base.epoch === 0 || c.base.checkpoint_path !== '' || c.model.weights !== undefined, {
    message:
      'continuing from epoch base.epoch+1 needs the weights that epoch ended with: set base.checkpoint_path or model.weights (or continue a gdp run exactly with --resume DIR)',
    path: ['base', 'epoch'],
    ...relatedKeys('base.checkpoint_path', 'model.weights'),
  });

export type Config = z.infer<typeof configSchema>;
