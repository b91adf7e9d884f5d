"""Execute a paper notebook with Papermill and export it as offline HTML (the ``notebooks`` stage).

``notebooks/<name>.py`` (py:percent, the source of truth; no ``.ipynb`` is committed) ->
``jupytext`` -> a temporary ``.ipynb`` -> Papermill, which injects the ``parameters`` cell
values ``profile``, ``fast`` and ``seed`` -> ``results/notebooks/<name>.ipynb`` (executed,
with outputs; Plotly figures as their own MIME type plus an HTML fallback, see
``pointvl.viz.notebook``) and ``results/notebooks/<name>.html`` (``pointvl.viz.page``: MathJax
and one plotly.js served from ``results/_static/``, no network: opens offline). Both files
are written atomically (temporary file, then rename): a failed run leaves the previous
results untouched. A run of another profile than the checkout's writes under
``results/<profile>/`` (``output_dir``), never over the committed pages. The kernel runs in ``notebooks/`` (as ``make lab`` does) with
``POINTVL_NOTEBOOK_EXECUTED=1`` in its environment and this checkout first on ``PYTHONPATH``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from pointvl.config import PositiveInt
from pointvl.io import atomic_write_text
from pointvl.viz.notebook import EXECUTED_ENV
from pointvl.viz.page import export_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"


@dataclasses.dataclass
class NotebookConfig:
    """Section ``notebooks`` of params.yaml: how the paper notebooks are executed."""

    fast: bool = False
    """Passed to every notebook's ``fast`` parameter: seconds-long runs (smoke, CI) when True."""
    seed: int = 0
    """Passed to every notebook's ``seed`` parameter."""
    out_dir: str = "results/notebooks"
    """Where ``<name>.ipynb`` (executed) and ``<name>.html`` (offline) are written."""
    kernel: str = "python3"
    """Jupyter kernel name; ``python3`` is the interpreter running this stage."""
    cell_timeout: PositiveInt = 1800
    """Seconds one cell may run before Papermill stops the notebook."""
    html: bool = True
    """Also export ``<name>.html`` with nbconvert."""


def notebook_names() -> list[str]:
    """Every paper notebook present, ``NN_topic`` for each ``notebooks/NN_topic.py``."""
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


@contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def committed_profile() -> str:
    """The profile whose results this checkout commits: ``profile`` of params.yaml as written
    (not ``POINTVL_PROFILE``, which only switches the Python side)."""
    import yaml

    return str(yaml.safe_load((ROOT / "params.yaml").read_text())["profile"])


def output_dir(out_dir: str | os.PathLike, profile: str) -> Path:
    """Where a run's pages go. A run of another profile than the checkout's (``--profile smoke``
    on a ``tiny`` checkout) never overwrites the committed pages: ``results/notebooks`` becomes
    ``results/<profile>/notebooks`` (git-ignored). Other folders are used as given."""
    out = Path(out_dir)
    out = out if out.is_absolute() else ROOT / out
    results = (ROOT / "results").resolve()
    if profile != committed_profile() and out.resolve().is_relative_to(results):
        return results / profile / out.resolve().relative_to(results)
    return out


def run_notebook(
    name: str, cfg: NotebookConfig, profile: str, extra_params: dict | None = None
) -> dict:
    """Execute ``notebooks/<name>.py`` with Papermill; write ``<out_dir>/<name>.ipynb`` / ``.html``.

    ``extra_params`` overrides further names of the notebook's ``parameters`` cell (tests use
    it, e.g. ``map_md`` of 00_overview, to keep writes out of the repository). Pages of another
    profile than the checkout's go to ``results/<profile>/...`` (``output_dir``).

    Returns ``{"ipynb": path, "html": path or None, "seconds": wall time}``. Raises
    ``FileNotFoundError`` for an unknown name and Papermill's ``PapermillExecutionError``
    (naming the failing cell) when a cell raises; nothing is written then.
    """
    import jupytext
    import nbformat
    import papermill as pm

    src = NOTEBOOK_DIR / f"{name}.py"
    if not src.is_file():
        raise FileNotFoundError(f"no notebook {src}; available: {notebook_names()}")
    out_dir = output_dir(cfg.out_dir, profile)
    params = {"profile": profile, "fast": bool(cfg.fast), "seed": int(cfg.seed)}
    params.update(extra_params or {})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"nb-{name}-") as tmp:
        nb_in, nb_out = Path(tmp) / f"{name}.in.ipynb", Path(tmp) / f"{name}.ipynb"
        nbformat.write(jupytext.read(src), nb_in)
        # the kernel imports this checkout's pointvl, whatever copy the venv has installed
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        with _env(EXECUTED_ENV, "1"), _env("PYTHONPATH", pythonpath):
            pm.execute_notebook(
                str(nb_in),
                str(nb_out),
                parameters=params,
                kernel_name=cfg.kernel,
                cwd=str(NOTEBOOK_DIR),
                progress_bar=False,
                log_output=False,
                execution_timeout=cfg.cell_timeout,
            )
        html = export_notebook(nb_out, out_dir / f"{name}.html") if cfg.html else None
        ipynb_path = atomic_write_text(out_dir / f"{name}.ipynb", nb_out.read_text())
        html_path = atomic_write_text(out_dir / f"{name}.html", html) if html else None
    return {"ipynb": str(ipynb_path), "html": str(html_path) if html_path else None,
            "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
