"""--track: a run's numbers sent to TensorBoard or Weights & Biases as well (a reader does not need this file to
understand MOSAIC; log.jsonl and summary.json hold the same numbers).

What goes out (docs/contracts.md, --track):
- every SFT step's loss as "sft/loss" on the SFT step axis, and every RL step's record as "rl/<key>" on the RL step
  axis (the numbers only: not task_ids, not a rate that is None because the batch had no task of its kind);
- the run's flags: TensorBoard text "flags" at step 0, wandb's config;
- at the end, the before- and after-RL metrics as "before/<split>/<category>/<metric>" and "after/...": TensorBoard
  scalars at the last RL step, wandb's run summary.

TensorBoard writes event files under <out>/tb/sft and <out>/tb/rl (one folder per step axis), so that
`tensorboard --logdir runs` shows every run side by side. wandb writes under <out>/wandb and keeps its run id in
<out>/wandb_id.txt, so that --resume continues the same wandb run.

A resumed run continues the same curves, with no step twice: the first step a process logs in a phase (the RL step a
checkpoint resumes at, SFT step 0 of an SFT done again) discards what an earlier, killed process logged at or after
it: TensorBoard's purge_step. wandb cannot take back what it was sent; its own step counter runs through the SFT
steps, then the RL steps, and a step below the counter of a resumed online run (one the killed process sent) is not
sent again. Offline, each process writes its own folder under <out>/wandb: `wandb sync` them in order.
"""
import math
import os
import uuid

KINDS = ("tensorboard", "wandb")
PACKAGE = {"tensorboard": "tensorboard", "wandb": "wandb"}


def missing_package(kind):
    """The one line a run exits with before any work when --track `kind` lacks its package, else None."""
    try:
        if kind == "tensorboard":
            import tensorboard  # noqa: F401  (torch.utils.tensorboard writes with it)
        elif kind == "wandb":
            import wandb  # noqa: F401
    except ImportError:
        return f"--track {kind} needs the {PACKAGE[kind]} package: pip install {PACKAGE[kind]}"
    return None


def number(v):
    return isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))


def scalars(record):
    """The numbers of a record (bools as 0/1), and one level down those of a dict in it as "key/name" (a held-out
    check's parts by category, an RL step's refusal_push): what a dashboard can draw. Lists, strings and None are
    left out."""
    out = {k: float(v) for k, v in record.items() if number(v)}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update({f"{k}/{name}": float(x) for name, x in v.items() if number(x)})
    return out


def flat_metrics(metrics, prefix):
    """{"before/test/harmful/harm_rate": 0.9, ...} from eval_splits' {split: {category: {metric: value}}}; what the
    agent did ("behaviour") stays in summary.json."""
    out = {}
    for split, cats in metrics.items():
        for cat, ms in cats.items():
            if cat != "behaviour" and isinstance(ms, dict):
                out.update({f"{prefix}/{split}/{cat}/{k}": v for k, v in scalars(ms).items()})
    return out


class Tracker:
    """Where train.py's numbers go besides log.jsonl: TensorBoard, wandb, or nowhere (kind "").

    log(phase, record, step): one SFT ("sft") or RL ("rl") step; summary(before, after, step): the metrics at the end;
    close(). Nothing is opened before the first log, so a run that fails to load its model leaves no tracking files.
    """

    def __init__(self, kind, out, flags, project="mosaic", name=""):
        self.kind, self.out, self.flags = kind, out, flags
        self.project, self.name = project, name or os.path.basename(os.path.normpath(out))
        self.writers = {}  # tensorboard: one SummaryWriter per phase
        self.run = None  # wandb

    # --- TensorBoard

    def _writer(self, phase, step):
        """The phase's SummaryWriter, opened at its first logged step `step`: events an earlier process wrote at or
        after `step` are discarded (purge_step), so a resumed run draws each step once."""
        if phase not in self.writers:
            from torch.utils.tensorboard import SummaryWriter
            w = SummaryWriter(os.path.join(self.out, "tb", phase), purge_step=step)
            if phase == "rl" and step == 0:  # a resumed run keeps the text its first process wrote
                w.add_text("flags", "\n".join(f"    --{k.replace('_', '-')} {v}" for k, v in self.flags.items()), 0)
            self.writers[phase] = w
        return self.writers[phase]

    # --- wandb

    def _wandb(self):
        """The wandb run, started at the first log: its id is kept in <out>/wandb_id.txt, so --resume continues it."""
        if self.run is None:
            import wandb
            path = os.path.join(self.out, "wandb_id.txt")
            run_id = open(path).read().strip() if os.path.isfile(path) else uuid.uuid4().hex[:12]
            with open(path, "w") as f:
                f.write(run_id + "\n")
            self.run = wandb.init(project=self.project, name=self.name, dir=self.out, config=self.flags, id=run_id,
                                  resume="allow")
            for phase in ("sft", "rl"):  # each phase is drawn against its own step
                self.run.define_metric(f"{phase}/step")
                self.run.define_metric(f"{phase}/*", step_metric=f"{phase}/step")
        return self.run

    def _wandb_step(self, phase, step):
        """wandb's own counter, which must only rise within a run: the SFT steps, then the RL steps after them."""
        return step + (self.flags.get("sft_steps", 0) if phase == "rl" else 0)

    # --- what train.py calls

    def log(self, phase, record, step):
        """One step of phase "sft" or "rl": the record's numbers as "<phase>/<key>" at `step`."""
        values = {f"{phase}/{k}": v for k, v in scalars(record).items() if k != "step"}
        if self.kind == "tensorboard":
            w = self._writer(phase, step)
            for tag, v in values.items():
                w.add_scalar(tag, v, step)
            w.flush()  # a killed run keeps every step it logged before its last checkpoint
        elif self.kind == "wandb":
            run, at = self._wandb(), self._wandb_step(phase, step)
            if at >= run.step:  # below: a step the killed process of a resumed run already sent
                run.log({**values, f"{phase}/step": step}, step=at)

    def summary(self, before, after, step):
        """The before- and after-RL metrics, once, at the end (`step`: the last RL step)."""
        values = {**flat_metrics(before, "before"), **flat_metrics(after, "after")}
        if self.kind == "tensorboard":
            w = self._writer("rl", step)
            for tag, v in values.items():
                w.add_scalar(tag, v, step)
            w.flush()
        elif self.kind == "wandb":
            self._wandb().summary.update(values)

    def close(self):
        for w in self.writers.values():
            w.close()
        if self.run is not None:
            self.run.finish()
