"""DVC stage ``notebook_code``: what each paper notebook can run, as hashes.

    python -m pointvl.stages.notebook_code --out results/notebooks/code

Writes ``<out>/<name>.txt`` for every ``notebooks/<name>.py``: one ``<sha256>  <path>`` line
per pointvl file of the notebook's import closure (``pointvl.notebooks.code_closure``: the
notebook, the stage that executes it, the stages it launches in a sandbox). The
``notebooks`` stage depends on that file instead of the whole package, so a change to a
module reruns only the notebooks that can run it (a refactor of ``pointvl/train`` reruns
06, not the other eight). Files whose closure did not change keep their bytes.
"""

from __future__ import annotations

from pointvl.notebooks import write_fingerprints
from pointvl.stages._cli import Flag, Stage

STAGE = Stage(
    "notebook_code",
    __doc__,
    sections={},
    flags=[Flag("--out", required=True, help="output folder of <name>.txt")],
    run=lambda ctx: write_fingerprints(ctx.args.out),
)
main = STAGE.main

if __name__ == "__main__":
    main()
