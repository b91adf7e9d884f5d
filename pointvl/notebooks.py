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

import ast
import dataclasses
import hashlib
import os
import re
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
    ``results/<profile>/notebooks`` (git-ignored). A folder already under
    ``results/<profile>/`` (the profile's own ``active.results_root``, e.g. paper_sim's) and
    other folders are used as given."""
    out = Path(out_dir)
    out = out if out.is_absolute() else ROOT / out
    results = (ROOT / "results").resolve()
    if (
        profile != committed_profile()
        and out.resolve().is_relative_to(results)
        and not out.resolve().is_relative_to(results / profile)
    ):
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


# ----------------------------------------------------------------------------- code deps
_LAUNCHED = re.compile(r"""sandbox\.(?:stage|accelerate)\(\s*["'](\w+)["']""")


def _module_file(name: str) -> Path | None:
    """``pointvl.a.b`` -> its source file in this checkout (package: ``__init__.py``)."""
    path = ROOT / Path(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _pointvl_imports(source: str) -> set[str]:
    """Every ``pointvl...`` module an ``import`` anywhere in ``source`` names (also inside
    functions: a lazy import runs when its function does), with each parent package and
    each ``from m import x`` also tried as ``m.x`` (a submodule)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    out = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == "pointvl":
            out |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    return out


def code_closure(name: str) -> list[str]:
    """The pointvl source files notebook ``name`` can run, relative to the checkout: the
    static import closure of the notebook, of the stage that executes it
    (``pointvl.stages.notebook``) and of every stage it launches in a sandbox
    (``sandbox.stage("x")`` / ``sandbox.accelerate("x")``). An over-approximation: a module
    imported only inside a function the notebook never calls still counts."""
    src = (NOTEBOOK_DIR / f"{name}.py").read_text()
    todo = [ROOT / "pointvl/stages/notebook.py"]
    todo += [ROOT / f"pointvl/stages/{stage}.py" for stage in _LAUNCHED.findall(src)]
    seen: set[Path] = set(todo)
    sources = [src]
    while sources or todo:
        text = sources.pop() if sources else todo.pop().read_text()
        for module in sorted(_pointvl_imports(text)):
            path = _module_file(module)
            if path is not None and path not in seen:
                seen.add(path)
                todo.append(path)
    return sorted(p.relative_to(ROOT).as_posix() for p in seen)


def code_fingerprint(name: str) -> str:
    """One line per file of ``code_closure(name)``: ``<sha256>  <path>`` (sha256sum's format).
    The notebook stage depends on this text, not on the whole package: DVC reruns a notebook
    only when a module it can run changes."""
    lines = []
    for rel in code_closure(name):
        digest = hashlib.sha256((ROOT / rel).read_bytes()).hexdigest()
        lines.append(f"{digest}  {rel}")
    return "\n".join(lines) + "\n"


def write_fingerprints(out_dir: str | os.PathLike) -> dict[str, int]:
    """``<out_dir>/<name>.txt`` for every paper notebook (written atomically, one by one;
    unchanged files keep their bytes); -> {name: number of files in its closure}."""
    out = Path(out_dir)
    counts = {}
    for name in notebook_names():
        text = code_fingerprint(name)
        path = out / f"{name}.txt"
        if not path.is_file() or path.read_text() != text:
            atomic_write_text(path, text)
        counts[name] = text.count("\n")
    return counts
