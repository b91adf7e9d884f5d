"""DVC stage ``zeroshot``: Table 1's zero-shot VLM rows on our test split (Sec. 4.4.1).

    python -m pointvl.stages.zeroshot --params params.yaml [--profile smoke] [--only NAME]

For each entry of ``zeroshot.models`` (paper row name -> local folder of a Hugging Face VLM):
test image + grounding instruction -> greedy reply -> IoU2D and KPA-2D with 95% CIs
(``pointvl.eval.zeroshot_table``). A model whose folder is absent, or that asks for CUDA on a
machine without it, is recorded as "not run: <reason>"; nothing is faked. ``--only NAME``
runs one entry and keeps the others already in the metrics file.
"""

from __future__ import annotations

from pointvl.config import ConfigError
from pointvl.eval.zeroshot_table import ZeroShotConfig, run, summary_line
from pointvl.stages._cli import Context, Flag, Stage


def _check(ctx: Context) -> None:
    only = ctx.args.only
    if only is not None and only not in ctx.zeroshot.models:
        raise ConfigError(
            f"zeroshot: --only {only!r} is not in zeroshot.models {sorted(ctx.zeroshot.models)}"
        )


def _run(ctx: Context) -> dict:
    out = run(ctx.zeroshot, ctx.profile, ctx.args.only)
    for name, entry in out.items():
        print(summary_line(name, entry))
    return out


STAGE = Stage(
    "zeroshot",
    __doc__,
    sections={"zeroshot": ZeroShotConfig},
    flags=[Flag("--only", help="run only this entry of zeroshot.models")],
    prepare=_check,
    run=_run,
    show=lambda out: None,  # one line per model, printed by _run
)
main = STAGE.main

if __name__ == "__main__":
    main()
