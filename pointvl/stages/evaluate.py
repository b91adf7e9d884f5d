"""DVC stage ``evaluate``: one trained system on the test split, metrics with 95% CIs.

    python -m pointvl.stages.evaluate --params params.yaml --system grca_rpc [--profile smoke]
    python -m pointvl.stages.evaluate --system grca_seed1 --checkpoint checkpoints/tiny/rl/grca_seed1/final

checkpoint -> greedy generation (``pointvl.eval.generate``) -> ``results/predictions/<system>.jsonl``
-> ``pointvl.eval.metrics.evaluate`` -> ``results/metrics/eval/<system>.json``. The saved
predictions let anyone recompute every number without a model
(``python -m pointvl.stages.evaluate --system X --from-predictions``). Sweep points and seed
repeats are not listed in ``evaluate.systems``: their stages pass ``--checkpoint``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from pointvl.config import ConfigError, load_params, load_section
from pointvl.io import atomic_write_json, atomic_write_text


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
    max_new_tokens: int = 400
    """Generation budget per completion (a truncated JSON loses the fields after the cut)."""
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
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("evaluate.batch_size and evaluate.max_new_tokens must be >= 1")
        if self.n_boot < 100:
            raise ConfigError(f"evaluate.n_boot={self.n_boot}: expected >= 100")


def run(
    cfg: EvaluateConfig,
    system: str,
    profile: str,
    from_predictions: bool = False,
    checkpoint: str | None = None,
) -> dict:
    from pointvl.eval.metrics import evaluate
    from pointvl.eval.targets import load_targets

    if checkpoint is not None:
        cfg = dataclasses.replace(cfg, systems={**cfg.systems, system: checkpoint})
    if system not in cfg.systems and not from_predictions:
        raise ConfigError(
            f"evaluate: unknown system {system!r}; params.yaml evaluate.systems has "
            f"{sorted(cfg.systems)} (or pass --checkpoint)"
        )
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

        ckpt = cfg.systems[system].format(profile=profile)
        model, processor = load_checkpoint(ckpt)
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--system", required=True)
    ap.add_argument(
        "--from-predictions",
        action="store_true",
        help="recompute metrics from results/predictions/<system>.jsonl",
    )
    ap.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint folder of a system not listed in evaluate.systems (sweeps, seeds)",
    )
    args = ap.parse_args(argv)
    profile = load_params(args.params, args.profile)["profile"]
    cfg = load_section(args.params, "evaluate", EvaluateConfig, args.profile)
    res = run(cfg, args.system, profile, args.from_predictions, args.checkpoint)
    keys = ("iou2d", "iou3d", "kpa2d", "kpa3d", "rpc", "pck3d", "qa_acc", "parse_fail")
    print(json.dumps({k: round(res[k]["mean"], 4) for k in keys if k in res}, indent=1))


if __name__ == "__main__":
    main()
