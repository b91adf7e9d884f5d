"""DVC stage ``report``: Tables 1-5 with the paper's numbers beside ours, claims, RL acceptance.

    python -m pointvl.stages.report --params params.yaml

``pointvl.eval.tables.write_report`` on section ``report`` and ``--reported``
(``paper/reported.yaml``): ``<tables_dir>/table{1..5}.{md,csv,tex}``, ``claims.{md,json}``,
``rl_acceptance.{md,json}``, ``<figures_dir>/{rl_validation_curves,table5_lambda}.png``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pointvl.eval.results import ReportConfig
from pointvl.eval.tables import write_report
from pointvl.stages._cli import Flag, Stage

STAGE = Stage(
    "report",
    __doc__,
    sections={"report": ReportConfig},
    flags=[Flag("--reported", default="paper/reported.yaml", help="the paper's numbers")],
    run=lambda ctx: write_report(
        ctx.report, ctx.profile, yaml.safe_load(Path(ctx.args.reported).read_text())
    ),
)
main = STAGE.main


if __name__ == "__main__":
    main()
