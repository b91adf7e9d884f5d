"""DVC stage ``evaluate``: one trained system on the test split, metrics with 95% CIs.

    python -m pointvl.stages.evaluate --params params.yaml --system grca_rpc [--profile smoke]
    python -m pointvl.stages.evaluate --system grca_seed1 --checkpoint checkpoints/tiny/rl/grca_seed1/final

checkpoint -> greedy generation (``pointvl.eval.generate``: batched, KV cache; on the GPU in
bfloat16 when CUDA is present, else the CPU in float32) -> ``results/predictions/<system>.jsonl``
-> ``pointvl.eval.metrics.evaluate`` -> ``results/metrics/eval/<system>.json``. The saved
predictions let anyone recompute every number without a model
(``python -m pointvl.stages.evaluate --system X --from-predictions``). Sweep points and seed
repeats are not listed in ``evaluate.systems``: their stages pass ``--checkpoint``.
Before any generation, ``max_new_tokens`` is checked against the longest valid target of the
dataset under the checkpoint's tokenizer (``pointvl.budget``; ``auto`` becomes the budget).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from pointvl.config import ConfigError, TokenBudget
from pointvl.io import atomic_write_json, atomic_write_text
from pointvl.stages._cli import Context, Flag, Stage
from pointvl.train.launch import LaunchConfig


@dataclasses.dataclass
class EvaluateConfig:
    """Section ``evaluate`` of params.yaml ({profile} is replaced by the active profile)."""

    systems: dict = dataclasses.field(default_factory=dict)
    """System name -> checkpoint folder (e.g. sft: checkpoints/{profile}/sft/final)."""
    data_dir: str = "data/{profile}"
    """The built benchmark; the ``test`` split is evaluated (one QA pair per object)."""
    limit: int = 0
    """Evaluate only the first N test samples (0: all)."""
    batch_size: int = 16
    """Generation batch size."""
    max_new_tokens: TokenBudget = 400
    """Generation budget per completion (a truncated JSON loses the fields after the cut);
    ``auto``: derived from the longest valid target (``pointvl.budget``)."""
    n_boot: int = 1000
    """Bootstrap resamples for the 95% CIs."""
    bertscore: bool = False
    """Also compute BERTScore with the local MiniLM encoder (slow on CPU)."""
    seed: int = 0
    """Seeds the bootstrap (generation is greedy)."""
    predictions_dir: str = "results/predictions"
    """Where ``<system>.jsonl`` goes."""
    metrics_dir: str = "results/metrics/eval"
    """Where ``<system>.json`` goes."""

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"evaluate.batch_size={self.batch_size}: expected >= 1")
        if self.n_boot < 100:
            raise ConfigError(f"evaluate.n_boot={self.n_boot}: expected >= 100")


def checkpoint_of(cfg: EvaluateConfig, system: str, profile: str) -> str:
    """The checkpoint folder of ``system`` (``ConfigError`` if unknown or missing)."""
    if system not in cfg.systems:
        raise ConfigError(
            f"evaluate: unknown system {system!r}; params.yaml evaluate.systems has "
            f"{sorted(cfg.systems)} (or pass --checkpoint)"
        )
    ckpt = cfg.systems[system].format(profile=profile)
    if not (Path(ckpt) / "config.json").is_file():
        raise ConfigError(
            f"evaluate.systems.{system}={ckpt!r}: no checkpoint there (run its stage first)"
        )
    return ckpt


def run(
    cfg: EvaluateConfig,
    system: str,
    profile: str,
    from_predictions: bool = False,
    attn_implementation: str | None = None,
) -> dict:
    """Generate (or read) ``system``'s test completions and score them; ``cfg.max_new_tokens``
    is an integer here (``_prepare`` resolves ``auto``)."""
    from pointvl.eval.metrics import evaluate
    from pointvl.eval.targets import load_targets

    data_dir = cfg.data_dir.format(profile=profile)
    targets, _, quant_bins = load_targets(data_dir, "test")
    n = len(targets) if cfg.limit <= 0 else min(cfg.limit, len(targets))
    targets = targets[:n]
    pred_path = Path(cfg.predictions_dir) / f"{system}.jsonl"
    t0 = time.perf_counter()
    if from_predictions:
        rows = [json.loads(line) for line in pred_path.read_text().splitlines()]
        texts = [r["completion"] for r in rows]
        if [r["uid"] for r in rows] != [t["uid"] for t in targets]:
            raise ValueError(f"{pred_path}: uids do not match the test split of {data_dir}")
    else:
        from pointvl.data.dataset import PointVLDataset
        from pointvl.eval.generate import generate_completions, load_checkpoint

        model, processor = load_checkpoint(
            checkpoint_of(cfg, system, profile), device="auto",
            attn_implementation=attn_implementation,
        )  # fmt: skip
        w = next(model.parameters())
        print(f"evaluate: {system} on {w.device} in {w.dtype}, max_new_tokens "
              f"{cfg.max_new_tokens}", file=sys.stderr)  # fmt: skip
        ds = PointVLDataset(data_dir, "test", qa_mode="rotate")
        samples = [ds[i] for i in range(n)]
        texts = generate_completions(model, processor, samples, cfg.batch_size, cfg.max_new_tokens)
        atomic_write_text(
            pred_path,
            "".join(
                json.dumps({"uid": t["uid"], "question": t["question"], "completion": c}) + "\n"
                for t, c in zip(targets, texts)
            ),
        )
    gen_s = time.perf_counter() - t0
    result = evaluate(
        texts, targets, quant_bins, seed=cfg.seed, n_boot=cfg.n_boot, bertscore=cfg.bertscore
    )
    result["_meta"] = {"system": system, "profile": profile, "n": n, "generate_s": gen_s}
    atomic_write_json(Path(cfg.metrics_dir) / f"{system}.json", result)
    return result


def _prepare(ctx: Context) -> None:
    """The system's checkpoint exists and its generation budget completes every valid target."""
    from pointvl.budget import dataset_target_length, resolve_budget

    cfg, args = ctx.evaluate, ctx.args
    if args.checkpoint is not None:
        cfg = dataclasses.replace(cfg, systems={**cfg.systems, args.system: args.checkpoint})
    if args.from_predictions:
        ctx.configs["evaluate"] = cfg
        return
    from transformers import AutoTokenizer

    ckpt = checkpoint_of(cfg, args.system, ctx.profile)
    length = dataset_target_length(cfg.data_dir, AutoTokenizer.from_pretrained(ckpt))
    budget = resolve_budget("evaluate.max_new_tokens", cfg.max_new_tokens, length)
    ctx.configs["evaluate"] = dataclasses.replace(cfg, max_new_tokens=budget)


KEYS = ("iou2d", "iou3d", "kpa2d", "kpa3d", "rpc", "pck3d", "qa_acc", "parse_fail")

STAGE = Stage(
    "evaluate",
    __doc__,
    sections={"evaluate": EvaluateConfig, "launch": LaunchConfig},
    flags=[
        Flag("--system", required=True, help="a name of evaluate.systems (or with --checkpoint)"),
        Flag(
            "--from-predictions",
            action="store_true",
            help="recompute metrics from <predictions_dir>/<system>.jsonl",
        ),
        Flag(
            "--checkpoint",
            help="checkpoint folder of a system not listed in evaluate.systems (sweeps, seeds)",
        ),
    ],  # fmt: skip
    prepare=_prepare,
    run=lambda ctx: run(
        ctx.evaluate,
        ctx.args.system,
        ctx.profile,
        ctx.args.from_predictions,
        ctx.launch.attn_implementation,
    ),  # fmt: skip
    show=lambda res: {k: round(res[k]["mean"], 4) for k in KEYS if k in res},
)
main = STAGE.main

if __name__ == "__main__":
    main()
