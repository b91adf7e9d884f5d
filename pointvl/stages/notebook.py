"""DVC stage ``notebooks``: execute paper notebooks and export them as offline HTML.

    python -m pointvl.stages.notebook --name 03_span_routing [...] --params params.yaml [--profile tiny]

``pointvl.notebooks.run_notebook`` for each ``--name``: ``notebooks/<name>.py`` -> Papermill
(``profile``, ``fast``, ``seed`` injected) -> ``results/notebooks/<name>.{ipynb,html}``,
written atomically (a failed run leaves the previous results untouched).
"""

from __future__ import annotations

import json

from pointvl.notebooks import NotebookConfig, notebook_names, run_notebook
from pointvl.stages._cli import Context, Flag, Stage


def _run(ctx: Context) -> list[dict]:
    """Each notebook in turn; one JSON line per notebook as it finishes."""
    done = []
    for name in ctx.args.name:
        done.append({"notebook": name, "profile": ctx.profile,
                     **run_notebook(name, ctx.notebooks, ctx.profile)})  # fmt: skip
        print(json.dumps(done[-1]), flush=True)
    return done


STAGE = Stage(
    "notebooks",
    __doc__,
    sections={"notebooks": NotebookConfig},
    flags=[
        Flag(
            "--name",
            nargs="+",
            required=True,
            choices=notebook_names(),
            help="notebook name(s), e.g. 03_span_routing",
        ),
    ],  # fmt: skip
    run=_run,
    show=lambda done: None,  # printed line by line
)
main = STAGE.main

if __name__ == "__main__":
    main()
