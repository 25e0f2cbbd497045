"""Stage 2 training with a time budget and the held-out PSNR over time (issue 24, gpu_check.sh).

    python scripts/gpu_train.py --data DATA --out OUT --preset gpu-paper --images stylized \
        --device cuda --budget 240 --eval-every 15 --json train_summary.json

It calls ``backend.train.session.train_and_export``, the function behind ``python -m backend
train``, with that command's overrides (``--images``: one phase on those images; ``--iters``,
``--seed``) plus what the command has no flag for:

* ``time_budget_s`` (the trainer's own budget, config.py): training stops after ``--budget``
  seconds of wall time, then evaluates and writes the avatar as the command does;
* ``checkpoint_every`` raised to the run's length (one checkpoint at the end, not a ~0.7 GB
  write every 500 steps at the gpu-paper size; it does not change what is learned);
* an ``on_step`` hook that runs ``backend.train.evaluate.evaluate`` (the final evaluation's own
  function: PSNR of the held-out frames, the last 10% of the clip) every ``--eval-every``
  seconds of training time, so "time to 30 dB" is measured, not extrapolated. Training time
  excludes those evaluations; the resolution of the time to the target is one interval.

``--tiny`` keeps the preset but uses the ``tiny`` preset's model and densification sizes (the
dry run on a CPU). Writes one JSON summary (``--json``) and prints one line per evaluation.
The backend is not modified by this script.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True,
                        help="prepared-data folder (stylized/, masks/, tracking.npz)")
    parser.add_argument("--out", required=True, help="training output folder")
    parser.add_argument("--preset", default="gpu-paper")
    parser.add_argument("--images", default="stylized", choices=("frames", "stylized"))
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--budget", type=float, default=240.0, help="training wall-time budget, s")
    parser.add_argument("--stop-at", type=float, default=0.0,
                        help="also stop training at this Unix time (the budget is then fixed after "
                             "the set-up, whatever the set-up took)")
    parser.add_argument("--iters", type=int, default=None, help="iterations (the preset's if unset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=float, default=15.0,
                        help="seconds of training between held-out evaluations")
    parser.add_argument("--eval-every-steps", type=int, default=0,
                        help="evaluate every N steps instead (dry run)")
    parser.add_argument("--eval-frames", type=int, default=0, help="held-out frames per evaluation (0: all)")
    parser.add_argument("--target-db", type=float, default=30.0)
    parser.add_argument("--tiny", action="store_true", help="the tiny preset's model sizes (CPU dry run)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", required=True, help="summary JSON to write")
    return parser.parse_args(argv)


def overrides_for(args: argparse.Namespace) -> dict:
    """The train command's overrides plus the time budget and checkpoint interval."""
    from backend.train.config import PRESETS

    overrides: dict = {"phases": [{"name": "photoreal", "images": args.images}],
                       "time_budget_s": float(args.budget), "seed": args.seed,
                       "checkpoint_every": 10 ** 9}
    if args.iters is not None:
        overrides["iterations"] = args.iters
    if args.tiny:
        overrides["model"] = dict(PRESETS["tiny"]["model"])
        overrides["densify"] = dict(PRESETS["tiny"]["densify"])
    return overrides


class HeldOutClock:
    """``on_step`` hook: held-out PSNR every ``every`` seconds (or steps) of training time."""

    def __init__(self, out_dir: str, every_s: float, every_steps: int, frames: int, target_db: float,
                 sync, stop_at: float = 0.0):
        self.out_dir, self.every_s, self.every_steps = out_dir, every_s, every_steps
        self.stop_at = stop_at
        self.frames, self.target_db, self.sync = frames, target_db, sync
        self.eval_s = 0.0
        self.next_s = every_s
        self.curve: list[dict] = []
        self.reached: dict | None = None
        self.last_s = 0.0  # training seconds at the latest step

    def train_seconds(self, trainer) -> float:
        return time.monotonic() - trainer._started - self.eval_s

    def __call__(self, trainer, loss: float) -> None:
        self.sync()  # the trainer's float(loss) has synchronized already; this is cheap
        self.last_s = self.train_seconds(trainer)
        if self.stop_at and trainer.step == 1:  # the trainer reads its budget at every step
            elapsed = time.monotonic() - trainer._started
            budget = min(trainer.config.time_budget_s, elapsed + self.stop_at - time.time())
            trainer.config.time_budget_s = max(budget, 1.0)
            print(f"training budget {trainer.config.time_budget_s:.0f} s (until --stop-at)", flush=True)
        due = trainer.step % self.every_steps == 0 if self.every_steps else self.last_s >= self.next_s
        if due:
            self.evaluate(trainer, loss)

    def evaluate(self, trainer, loss: float) -> dict:
        from backend.train.evaluate import evaluate

        self.sync()
        train_s = self.train_seconds(trainer)
        start = time.monotonic()
        report = evaluate(trainer, self.out_dir, max_frames=self.frames, n_pictures=0)
        self.sync()
        spent = time.monotonic() - start
        self.eval_s += spent
        self.next_s = train_s + self.every_s
        row = {"step": trainer.step, "train_s": round(train_s, 2), "psnr": round(report["psnr"], 3),
               "psnr_head": round(report["psnr_head"], 3), "ssim": round(report["ssim"], 4),
               "loss": round(loss, 5), "n_gaussians": trainer.model.n_gaussians,
               "eval_s": round(spent, 2), "frames": report["frames"]}
        self.curve.append(row)
        if self.reached is None and report["psnr"] >= self.target_db:
            self.reached = row
        print("held-out " + json.dumps(row), flush=True)
        return row


def peak_memory(device: str) -> dict:
    import torch

    if device != "cuda":
        return {}
    return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 3),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2 ** 30, 3)}


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, REPO)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    import torch

    from backend.train.session import train_and_export

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    clock = HeldOutClock(os.path.join(args.out, "eval_periodic"), args.eval_every, args.eval_every_steps,
                         args.eval_frames, args.target_db, sync, args.stop_at)
    started = time.monotonic()
    outputs = train_and_export(args.data, args.out, args.preset, overrides_for(args), device=args.device,
                               progress=None, on_step=clock)
    total = time.monotonic() - started
    trainer, report = outputs["trainer"], outputs["report"]
    sample, _ = trainer.render_frame(int(trainer.data.test[0]))
    if clock.reached is None and report["psnr"] >= args.target_db:  # first seen at the final evaluation
        clock.reached = {"train_s": round(clock.last_s, 2), "step": trainer.step}
    summary = {
        "data": args.data, "preset": args.preset, "images": args.images, "device": args.device,
        "overrides": overrides_for(args), "time_budget_s": round(trainer.config.time_budget_s, 1),
        "frames": trainer.data.n_frames,
        "train_frames": len(trainer.data.train), "held_out_frames": len(trainer.data.test),
        "size": [trainer.data.width, trainer.data.height], "render_backend": sample.info.get("backend"),
        "steps": trainer.step, "iterations": trainer.config.iterations,
        "train_s": round(clock.last_s, 2),
        "steps_per_s": round(trainer.step / max(clock.last_s, 1e-9), 2),
        "setup_s": round(trainer._started - started, 2) if trainer._started else None,
        "periodic_eval_s": round(clock.eval_s, 2), "total_s": round(total, 2),
        "target_db": args.target_db,
        "time_to_target_s": clock.reached["train_s"] if clock.reached else None,
        "step_at_target": clock.reached["step"] if clock.reached else None,
        "final": {k: report[k] for k in ("psnr", "ssim", "psnr_head", "ssim_head", "baseline_psnr",
                                         "split", "frames", "step", "n_gaussians")},
        "curve": clock.curve, "avatar": outputs["avatar"], "eval_dir": outputs["eval_dir"],
        "torch": torch.__version__, **peak_memory(args.device),
    }
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    reached = (f"{args.target_db:g} dB after {summary['time_to_target_s']} s of training "
               f"(step {summary['step_at_target']})" if clock.reached else
               f"{args.target_db:g} dB not reached")
    print(f"trained {trainer.step} steps in {summary['train_s']} s ({summary['steps_per_s']} steps/s, "
          f"backend {summary['render_backend']}); {reached}; final held-out PSNR "
          f"{report['psnr']:.2f} dB, SSIM {report['ssim']:.4f}, {report['n_gaussians']} Gaussians",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
