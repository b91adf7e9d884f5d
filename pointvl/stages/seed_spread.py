"""DVC stage ``seed_spread`` (studies/sft_seeds): the spread of test metrics over SFT seeds
beside the spread over RL seeds of the RL arms (``pointvl.seed_spread``).

    python -m pointvl.stages.seed_spread --params studies/sft_seeds/params.yaml

Writes ``<out_dir>/seed_spread.json`` and ``seed_spread.md``. Every RL arm of the RL study
starts from the SFT checkpoint of seed 0, so its intervals are conditional on that one SFT
draw; this table shows how large the SFT draw's own spread is. ``paired`` differences
(``pointvl.seed_spread.paired_over_seeds``) compare groups aligned by SFT seed, e.g. GRCA and
GRPO each trained from SFT seeds 0, 1, 2: the t-interval over SFT seeds then includes it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pointvl.config import ConfigError
from pointvl.io import atomic_write_text
from pointvl.seed_spread import (
    paired_markdown,
    paired_over_seeds,
    seed_means,
    spread_markdown,
    spread_of_means,
)
from pointvl.stages._cli import Stage


@dataclasses.dataclass
class SeedSpreadConfig:
    """Section ``seed_spread`` of studies/sft_seeds/params.yaml."""

    groups: dict = dataclasses.field(default_factory=dict)
    """Group name -> evaluation JSONs of its seeds (``{profile}`` filled in)."""
    metrics: list = dataclasses.field(default_factory=lambda: ["iou3d", "kpa3d", "pck3d"])
    """Metrics of the evaluation JSONs to summarise."""
    out_dir: str = "results/sft_seeds"
    """Where ``seed_spread.{json,md}`` go."""
    paired: dict = dataclasses.field(default_factory=dict)
    """Difference name -> [group A, group B]: file k of A is paired with file k of B, so both
    must list their files in the same seed order (e.g. SFT seeds 0, 1, 2); position is the
    only alignment the stage knows, the params file states what it means."""

    def validate(self) -> None:
        short = {g: len(f) for g, f in self.groups.items() if not isinstance(f, list) or len(f) < 2}
        if not self.groups or short:
            raise ConfigError(
                f"seed_spread.groups: expected each group to list >= 2 evaluation files; {short}"
            )
        if not self.metrics:
            raise ConfigError("seed_spread.metrics is empty: expected at least one metric")
        for name, pair in (self.paired or {}).items():
            ok = isinstance(pair, list) and len(pair) == 2 and set(pair) <= set(self.groups)
            if not ok or pair[0] == pair[1]:
                raise ConfigError(
                    f"seed_spread.paired.{name}={pair!r}: expected [group A, group B], two "
                    f"different groups of seed_spread.groups {sorted(self.groups)}"
                )
            n = [len(self.groups[g]) for g in pair]
            if n[0] != n[1]:
                raise ConfigError(
                    f"seed_spread.paired.{name}={pair!r}: the groups list {n[0]} and {n[1]} "
                    "files; expected as many, aligned seed by seed"
                )


def run(cfg: SeedSpreadConfig, profile: str) -> dict:
    groups = {g: [f.format(profile=profile) for f in files] for g, files in cfg.groups.items()}
    means = seed_means(groups, cfg.metrics)  # every file read once
    spread = spread_of_means(means)
    paired = paired_over_seeds(means, cfg.paired or {}, cfg.metrics)
    out = Path(cfg.out_dir)
    record = {"groups": groups, "spread": spread, "paired": cfg.paired, "differences": paired}
    atomic_write_text(out / "seed_spread.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
    md = spread_markdown(spread, "Test metrics over seeds (ours): mean ± SD [min, max]")
    if paired:
        md += "\n" + paired_markdown(
            paired, "Paired differences over SFT seeds (ours): A − B, mean [95% t-interval]"
        )
    atomic_write_text(out / "seed_spread.md", md)
    return spread


STAGE = Stage(
    "seed_spread",
    __doc__,
    sections={"seed_spread": SeedSpreadConfig},
    run=lambda ctx: run(ctx.seed_spread, ctx.profile),
    show=lambda s: {g: {m: round(v["sd"], 4) for m, v in row.items()} for g, row in s.items()},
)
main = STAGE.main

if __name__ == "__main__":
    main()
