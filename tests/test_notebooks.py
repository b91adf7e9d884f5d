"""The paper notebooks: structure, committed state, and execution in fast mode.

Every ``notebooks/NN_*.py`` (py:percent) is executed with Papermill through the ``notebook``
stage (``pointvl.notebooks.run_notebook``) with ``fast=True``, into a temporary folder,
and its HTML export is checked to open offline. Structure checks: a ``parameters``-tagged
cell with ``profile``, ``fast``, ``seed``; a first cell naming the paper section; a last
section "What to try next" with code that runs; no function or class defined in a notebook
(the package is the source of truth). Committed ``.ipynb`` files must carry no outputs and,
next to a ``.py``, be in sync with it. Where Debian's ``chromium`` is installed (the set-up
installs it), each exported page is opened headless and must show no console error, no blank
figure and no raw TeX (``pointvl.viz.pagecheck``).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

from pointvl.notebooks import NOTEBOOK_DIR, NotebookConfig, notebook_names, run_notebook
from pointvl.paper_map import load_map, to_markdown, write_markdown
from pointvl.viz.pagecheck import check_page, chromium

ROOT = Path(__file__).resolve().parent.parent
NAMES = notebook_names()
REMOTE_SCRIPT = re.compile(r"<script[^>]*\ssrc=[\"']https?://", re.IGNORECASE)


def _cells(name: str):
    return jupytext.read(NOTEBOOK_DIR / f"{name}.py").cells


def _code_lines(source: str) -> int:
    """Non-blank lines of a code cell, not counting import statements."""
    imports = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            imports.update(range(node.lineno, node.end_lineno + 1))
    lines = source.splitlines()
    return sum(1 for i, line in enumerate(lines, 1) if line.strip() and i not in imports)


def _check_executed(ipynb: Path, html: Path, name: str) -> None:
    nb = nbformat.read(ipynb, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any(c.get("outputs") for c in code), f"{name}: executed notebook has no outputs"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "fast = True" in injected[0].source
    page = html.read_text()
    assert not REMOTE_SCRIPT.search(page), f"{name}.html loads a script from the network"
    assert page.count("# Parameters") == 1, f"{name}.html shows the parameters cell twice"
    if "plotly" in "".join(c.source for c in code) or "ReprojectionView" in page:
        mimes = {k for c in code for o in c.get("outputs", []) for k in o.get("data", {})}
        assert "application/vnd.plotly.v1+json" in mimes, f"{name}: no Plotly MIME output"
        assert "Plotly.newPlot" in page or "Plotly.react" in page  # the HTML fallback
        assert page.count("plotly.min.js") == 1 and "_static/plotly.min.js" in page
    if chromium() is not None:  # what a reader's browser shows (CI installs chromium)
        report = check_page(html)
        assert report.ok, report.summary()


def test_notebooks_exist():
    assert {
        "00_overview",
        "01_dataset",
        "02_architecture",
        "03_span_routing",
        "04_rewards_and_rpc",
        "05_variance_analysis",
        "06_training_launch",
        "07_ablations",
        "08_results",
    } <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_structure(name):
    cells = _cells(name)
    first = cells[0]
    assert first.cell_type == "markdown" and re.search(r"Section", first.source), (
        f"{name}: the first cell must say which paper section it follows"
    )
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{name}: expected exactly one cell tagged 'parameters'"
    for var in ("profile", "fast", "seed"):
        assert re.search(rf"^{var} = ", params[0].source, re.M), f"{name}: no `{var}` parameter"
    headings = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and "# " in c.source]
    last = headings[-1]
    assert "What to try next" in cells[last].source, f"{name}: must end with 'What to try next'"
    assert any(c.cell_type == "code" for c in cells[last:]), f"{name}: exercises must run"
    for c in cells:
        if c.cell_type == "code":
            assert not re.search(r"^\s*(def|class) ", c.source, re.M), (
                f"{name}: defines a function/class; move it into pointvl/"
            )
            n = _code_lines(c.source)
            assert n <= 16, f"{name}: a code cell has {n} lines (imports aside); keep cells short"


def test_committed_ipynb_have_no_outputs_and_match_their_py():
    out = subprocess.run(
        ["git", "ls-files", "--", "notebooks/*.ipynb"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    tracked = [ROOT / p for p in out.stdout.split()] if out.returncode == 0 else []
    present = sorted(set(tracked) | set(NOTEBOOK_DIR.glob("*.ipynb")))
    for path in present:
        nb = nbformat.read(path, as_version=4)
        if path in tracked:
            outputs = [c for c in nb.cells if c.cell_type == "code" and c.get("outputs")]
            assert not outputs, f"{path.name} has outputs (nbconvert --clear-output)"
        py = path.with_suffix(".py")
        if py.is_file():  # paired: same cells, same sources
            paired = jupytext.read(py)
            assert [c.source for c in nb.cells] == [c.source for c in paired.cells], (
                f"{path.name} and {py.name} are out of sync (jupytext --sync)"
            )


def test_paper_map_markdown(tmp_path):
    entries = load_map()
    table = to_markdown(entries)
    assert len(table.strip().splitlines()) == len(entries) + 2
    path = write_markdown(tmp_path / "map.md")
    text = path.read_text()
    for e in entries:
        assert str(e["section"]) in text
        assert f"`{str(e['notebook']).split(',')[0].strip()}`" in text


# 05 runs through the CLI below; the others in-process (each run starts its own kernel).
IN_PROCESS = [n for n in NAMES if n != "05_variance_analysis"]


@pytest.mark.parametrize("name", IN_PROCESS)
def test_notebook_executes_fast(name, tmp_path):
    cfg = NotebookConfig(fast=True, out_dir=str(tmp_path), cell_timeout=300)
    extra = {"map_md": str(tmp_path / "map.md")} if name == "00_overview" else None
    res = run_notebook(name, cfg, "smoke", extra_params=extra)
    _check_executed(Path(res["ipynb"]), Path(res["html"]), name)
    if name == "00_overview":
        assert "| Paper section |" in (tmp_path / "map.md").read_text()


def test_notebook_stage_cli(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.setdefault("notebooks", {})["out_dir"] = str(tmp_path / "nb")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-m", "pointvl.stages.notebook", "--name", "05_variance_analysis"]
    cmd += ["--params", str(tmp_path / "params.yaml"), "--profile", "smoke"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["profile"] == "smoke"
    _check_executed(Path(report["ipynb"]), Path(report["html"]), "05_variance_analysis")


def test_unknown_notebook_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="available"):
        run_notebook("99_nope", NotebookConfig(out_dir=str(tmp_path)), "smoke")


# ----------------------------------------------------------------------------- helpers


def test_token_partition_html_keeps_every_character_in_order():
    import html as html_lib

    import numpy as np

    from pointvl.demo import demo_completions, demo_target
    from pointvl.schema import parse_output
    from pointvl.spans import field_token_ids
    from pointvl.viz.partition import token_partition_html

    for text in demo_completions(demo_target(0), 100)[3:6]:
        cuts = np.arange(0, len(text) + 3, 3).clip(max=len(text))  # 3-character "tokens"
        offsets = np.stack([cuts[:-1], cuts[1:]], axis=1)  # (T, 2)
        offsets = np.concatenate([offsets, [[len(text), len(text)]]])  # + EOS
        ids = field_token_ids(parse_output(text).char_spans, offsets)  # (T,)
        page = token_partition_html(text, offsets, ids)
        pieces = re.findall(r'border-right:2px solid white">(.*?)</span>', page, re.S)
        assert html_lib.unescape("".join(pieces)) == text + "⟨eos⟩"
        assert page.count("#fdb462;border") == int((ids == 2).sum())  # bbox3d colour


def test_variance_helpers():
    import numpy as np

    from pointvl.variance import variance_gap_terms
    from pointvl.viz.variance import coupling_sweep, eq24_counterexample, samples_needed

    A, R, s = eq24_counterexample(n=20, ratio=-1.5)
    gap = variance_gap_terms(A, R, s)
    assert gap.cross_term_norm < 1e-14 and gap.condition_24 < 0
    assert gap.V_b == pytest.approx(gap.V_r / 4, rel=1e-12)
    sweep = coupling_sweep([0.0, 1.0], k=1)
    assert sweep["V_b"][0] > sweep["V_r"][0] and sweep["mean_gap"][0] < 1e-14
    assert sweep["V_b"][1] < sweep["V_r"][1] and sweep["condition_24"][1] < 0
    np.testing.assert_allclose(sweep["measured"], sweep["predicted"] + sweep["correction"])
    assert samples_needed(1.0, 0.01) == 100 and samples_needed(0.5, 1.0) == 1


def test_another_profile_never_overwrites_the_committed_pages(tmp_path):
    from pointvl.notebooks import committed_profile, output_dir

    committed = committed_profile()
    other = next(p for p in ("smoke", "tiny", "paper") if p != committed)
    assert output_dir("results/notebooks", committed) == ROOT / "results/notebooks"
    assert output_dir("results/notebooks", other) == ROOT / "results" / other / "notebooks"
    assert output_dir(tmp_path, other) == tmp_path  # a folder of the caller's: as given
    # already the profile's own results folder (paper_sim's notebooks.out_dir): not doubled
    # (the rehearsal wrote results/paper_sim/paper_sim/notebooks and DVC found no output)
    own = f"results/{other}/notebooks"
    assert output_dir(own, other) == ROOT / own
    ignored = subprocess.run(["git", "check-ignore", "-q", f"results/{other}/notebooks/x.html"],
                             cwd=ROOT, check=False)  # fmt: skip
    assert ignored.returncode == 0, f"results/{other}/ must be git-ignored"
