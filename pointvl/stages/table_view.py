"""DVC stage ``table_view`` (studies/view): Table 3 on the ``view`` task.

    python -m pointvl.stages.table_view --params studies/view/params.yaml [--profile smoke]

Reads the evaluated arms (``<metrics_dir>/sft.json``, ``<arm>_seed<s>.json``), the trivial
predictors and probes of ``eval_trivial``, and writes ``<tables_dir>/table3_view.{md,csv,tex}``
(``pointvl.eval.view_table``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from pointvl.config import ConfigError
from pointvl.eval.view_table import view_table
from pointvl.stages._cli import Stage


@dataclasses.dataclass
class TableViewConfig:
    """Section ``table_view`` of studies/view/params.yaml (also read by its dvc.yaml)."""

    arms: list = dataclasses.field(default_factory=lambda: ["grpo", "grca", "grca_rpc"])
    """RL variants (``rl --variant``), each trained from the view SFT checkpoint."""
    seeds: list = dataclasses.field(default_factory=lambda: [0])
    """RL seeds of every arm (``rl --seed``; system ``<arm>_seed<s>``)."""
    metrics_dir: str = "results/view/metrics/eval"
    """Where ``evaluate`` and ``eval_trivial`` of the study wrote their JSONs."""
    probes: str = "results/view/metrics/eval/trivial_probes.json"
    """``eval_trivial``'s unquantized probes (summarised under the table)."""
    tables_dir: str = "results/view/tables"
    """Output folder of table3_view.{md,csv,tex}."""

    def validate(self) -> None:
        from pointvl.train.config import RL_VARIANTS

        bad = [a for a in self.arms if a not in RL_VARIANTS]
        if bad:
            raise ConfigError(f"table_view.arms: unknown {bad}; accepted: {list(RL_VARIANTS)}")
        if not self.arms or not self.seeds:
            raise ConfigError("table_view.arms and table_view.seeds: expected non-empty lists")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"table_view.seeds={self.seeds}: expected distinct seeds")


def run(cfg: TableViewConfig) -> dict:
    """Table 3 (view) from the study's evaluations (the probes summarised when present)."""
    probes = Path(cfg.probes)
    return view_table(
        cfg.metrics_dir, cfg.tables_dir, cfg.arms, cfg.seeds,
        json.loads(probes.read_text()) if probes.is_file() else None,
    )  # fmt: skip


STAGE = Stage(
    "table_view",
    __doc__,
    sections={"table_view": TableViewConfig},
    run=lambda ctx: run(ctx.table_view),
    show=lambda out: {"seeds_run": out["seeds_run"], "paths": out["paths"]},
)


def main(argv: list[str] | None = None) -> dict:
    """``--params`` defaults to the study's params (the section lives only there)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not any(a == "--params" or a.startswith("--params=") for a in args):
        args = ["--params", "studies/view/params.yaml", *args]
    return STAGE.main(args)


if __name__ == "__main__":
    main()
