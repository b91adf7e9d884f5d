"""Offline pages: every exported HTML opens from disk, with no network, in any browser.

    results/_static/plotly.min.js     one copy of plotly.js for every page under results/
    results/_static/mathjax/          MathJax 3 (TeX in, SVG out, one file), from the pip
                                      package ``django-static-mathjax``: no CDN at run time
    results/notebooks/*.html          link them relatively: ../_static/...
    results/figures/*.html            (a page outside results/ gets a ``_static/`` beside it)

``write_figure`` saves a Plotly figure as a full page that links the shared plotly.js;
``export_notebook`` turns an executed notebook into such a page: the lab template, MathJax
served locally, plotly.js linked once in the head (figures are stored in the notebook as
Plotly's own MIME type with an HTML fallback that the page draws, see
``pointvl.viz.notebook``), the ``parameters`` cell hidden behind Papermill's injected one,
and no script from the network. The assets are copied once per folder and version
(``_static/VERSIONS.json``); writers call ``ensure_assets`` and may run concurrently.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
RESULTS = ROOT / "results"
STATIC = "_static"
PLOTLY_JS = "plotly.min.js"
MATHJAX = "mathjax"
MATHJAX_JS = "tex-svg-full.js"
"""MathJax 3 (TeX in, SVG out, every TeX extension and the fonts in one file: nothing else is
fetched), from the pip package ``django-static-mathjax`` (the ``es5`` build of mathjax-full)."""
MATHJAX_CONFIG = r"""<script>
window.MathJax = {
  tex: {inlineMath: [["$", "$"], ["\\(", "\\)"]], displayMath: [["$$", "$$"], ["\\[", "\\]"]],
        processEscapes: true, processEnvironments: true},
  svg: {fontCache: "global"},
  options: {ignoreHtmlClass: "tex2jax_ignore", processHtmlClass: "tex2jax_process"}
};
</script>"""
_NB_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)
_EMPTY_SCRIPT = re.compile(r"<script[^>]*\ssrc=[\"']{2}[^>]*>\s*</script>", re.I)
# <script src="https://...">: e.g. the MathJax CDN tag Plotly's HTML renderers emit
_REMOTE_SCRIPT = re.compile(r"<script[^>]*\ssrc=[\"']https?://[^>]*>\s*</script>", re.I)


def static_dir(page: str | os.PathLike) -> Path:
    """Where a page's shared assets live: ``results/_static`` for a page under this
    repository's ``results/``, else ``_static`` beside the page."""
    page = Path(page).resolve()
    if RESULTS.resolve() in page.parents:
        return RESULTS / STATIC
    return page.parent / STATIC


def _mathjax_root() -> Path:
    import mathjax  # the pip package django-static-mathjax

    return Path(mathjax.__file__).parent / "static" / "mathjax"


def _versions() -> dict[str, str]:
    import plotly

    package = json.loads((_mathjax_root() / "package.json").read_text())
    return {"plotly": plotly.__version__, "mathjax": package["version"]}


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
    os.close(fd)
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dst)


def ensure_assets(static: str | os.PathLike) -> Path:
    """Copy plotly.min.js and the MathJax subset into ``static`` unless the same versions
    are there already (``VERSIONS.json``). Returns ``static``."""
    import plotly

    static = Path(static)
    stamp = static / "VERSIONS.json"
    want = _versions()
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return static
    _copy_atomic(Path(plotly.__file__).parent / "package_data" / PLOTLY_JS, static / PLOTLY_JS)
    _copy_atomic(_mathjax_root() / "es5" / MATHJAX_JS, static / MATHJAX / MATHJAX_JS)
    _copy_atomic(_mathjax_root() / "LICENSE", static / MATHJAX / "LICENSE")
    _copy_atomic_text(stamp, json.dumps(want, indent=1, sort_keys=True) + "\n")
    return static


def _copy_atomic_text(path: Path, text: str) -> None:
    from pointvl.io import atomic_write_text

    atomic_write_text(path, text)


def asset_url(page: str | os.PathLike, name: str) -> str:
    """The relative URL from ``page`` to a shared asset (``plotly.min.js``, ``mathjax/...``)."""
    page = Path(page).resolve()
    return Path(os.path.relpath(static_dir(page) / name, page.parent)).as_posix()


def plotly_script(page: str | os.PathLike) -> str:
    """The one ``<script>`` tag that loads the shared plotly.js into ``page``."""
    return f'<script src="{asset_url(page, PLOTLY_JS)}" charset="utf-8"></script>'


def mathjax_script(page: str | os.PathLike) -> str:
    """MathJax's configuration and loader, served from the shared static folder."""
    src = asset_url(page, f"{MATHJAX}/{MATHJAX_JS}")
    return MATHJAX_CONFIG + f'\n<script src="{src}" id="MathJax-script"></script>'


def write_figure(fig, path: str | os.PathLike, div_id: str = "figure") -> Path:
    """A full offline page of one Plotly figure, linking the shared plotly.js. A fixed
    ``div_id`` keeps the file byte-identical across runs (Plotly draws a random one)."""
    from pointvl.io import atomic_write_text

    path = Path(path)
    ensure_assets(static_dir(path))
    html = fig.to_html(include_plotlyjs=asset_url(path, PLOTLY_JS), full_html=True,
                       div_id=div_id, include_mathjax=False)  # fmt: skip
    return atomic_write_text(path, html)


def export_notebook(ipynb_path: str | os.PathLike, page: str | os.PathLike) -> str:
    """An executed notebook as an offline page destined for ``page`` (the path sets the
    relative links; the caller writes the text). See the module docstring."""
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    ensure_assets(static_dir(page))
    exporter = HTMLExporter(template_name="lab", require_js_url="", mathjax_url="")
    hide = TagRemovePreprocessor(remove_cell_tags={"parameters"}, enabled=True)
    exporter.register_preprocessor(hide, enabled=True)
    body, _ = exporter.from_filename(str(ipynb_path))
    if not _NB_MATHJAX.search(body):
        raise RuntimeError("nbconvert's MathJax block was not found: the lab template changed")
    head = mathjax_script(page)
    if "plotly-graph-div" in body:
        head += "\n" + plotly_script(page)
    body = _NB_MATHJAX.sub(lambda _: head, body, count=1)
    body = _EMPTY_SCRIPT.sub("", body)
    return _REMOTE_SCRIPT.sub("", body)
