"""DVC stage ``eval_trivial``: the trivial 3D predictors every 3D table shows (Sec. 4.3).

    python -m pointvl.stages.eval_trivial --params params.yaml [--profile smoke]

Training-mean box, centroid + mean size, the cloud's own AABB, keypoints at the box centre,
the cloud's AABB with FPS keypoints (``pointvl.eval.trivial``), written as completion texts and scored by the same parser and metrics as the models, with
95% bootstrap CIs over the test samples. Only ``trivial.REPORTED_METRICS`` are kept (their
2D and text fields are copied from the ground truth, so other metrics would mean nothing).
``probes`` (``trivial.probes``): the same predictors without quantization on the test split's
own columns (and, for a ``view`` dataset, the object-frame AABB and the occluded keypoints).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from pointvl.config import ConfigError, load_params, load_section
from pointvl.eval.metrics import evaluate
from pointvl.eval.targets import load_targets
from pointvl.eval.trivial import REPORTED_METRICS, probes, trivial_completions
from pointvl.io import atomic_write_json


@dataclasses.dataclass
class EvalTrivialConfig:
    """Section ``eval_trivial`` of params.yaml."""

    data_dir: str = "data/{profile}"
    """The built benchmark ({profile} is replaced by the active profile)."""
    n_boot: int = 1000
    """Bootstrap resamples for the 95% CIs."""
    seed: int = 0
    """Seeds the bootstrap."""
    metrics: str = "results/metrics/eval/trivial.json"
    """Output: {predictor: {metric: {mean, lo, hi, n}}}."""
    probes: str = "results/metrics/eval/trivial_probes.json"
    """Output: {probe: {mean, lo, hi, n}} of ``trivial.probes`` on the test split."""

    def validate(self) -> None:
        if self.n_boot < 100:
            raise ConfigError(f"eval_trivial.n_boot={self.n_boot}: expected >= 100")


def run(cfg: EvalTrivialConfig, profile: str) -> dict:
    data_dir = cfg.data_dir.format(profile=profile)
    train, _, _ = load_targets(data_dir, "train")
    test, points, quant_bins = load_targets(data_dir, "test")
    out = {}
    for name, texts in trivial_completions(train, test, quant_bins, points).items():
        res = evaluate(texts, test, quant_bins, seed=cfg.seed, n_boot=cfg.n_boot, language=False)
        out[name] = {m: res[m] for m in REPORTED_METRICS if m in res}
    atomic_write_json(cfg.metrics, out)
    atomic_write_json(cfg.probes, probes(data_dir, "test", n_boot=cfg.n_boot, seed=cfg.seed))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    args = ap.parse_args(argv)
    profile = load_params(args.params, args.profile)["profile"]
    cfg = load_section(args.params, "eval_trivial", EvalTrivialConfig, args.profile)
    out = run(cfg, profile)
    print(
        json.dumps(
            {k: {m: round(v["mean"], 3) for m, v in r.items()} for k, r in out.items()}, indent=1
        )
    )


if __name__ == "__main__":
    main()
