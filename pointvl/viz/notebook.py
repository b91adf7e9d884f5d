"""What every paper notebook calls first: ``notebook_setup()``.

- **Plotly** figures are stored as Plotly's own MIME type (``application/vnd.plotly.v1+json``:
  JupyterLab, VS Code and other front ends draw it without trusting the notebook) *and* an
  HTML fallback (a div and a ``Plotly.newPlot`` call, no plotly.js inlined) that the exported
  page draws with its one shared plotly.js (``pointvl.viz.page``). Div ids count up from 0,
  so an executed notebook is the same bytes at every run.
- numpy prints 4 decimals;
- known warnings that say nothing to a reader are silenced at their source (``QUIET``).
"""

from __future__ import annotations

import itertools
import os
import warnings

import numpy as np

EXECUTED_ENV = "POINTVL_NOTEBOOK_EXECUTED"
RENDERER = "pointvl"
# (category, message regex, module regex): warnings of libraries we call that a reader cannot
# act on; every other warning still shows
QUIET = (
    (FutureWarning, r".*", r"transformers\..*"),
    (UserWarning, r".*[Tt]orchvision.*", r".*"),
    (UserWarning, r".*do_sample.*|.*temperature.*|.*top_p.*|.*top_k.*", r"transformers\..*"),
    (UserWarning, r".*Glyph .* missing from font.*", r"matplotlib\..*"),
    (DeprecationWarning, r".*", r"(jupyter_client|zmq|ipykernel|papermill|nbformat)\..*"),
)


def silence_known_warnings() -> None:
    """Install the ``QUIET`` filters (idempotent) and lower transformers' log level."""
    for category, message, module in QUIET:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import shutil

    if shutil.which("nvidia-smi") is None:  # DeepSpeed warns when it has to guess the device
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:  # transformers is an optional dependency of this module
        pass


def _register_renderer() -> None:
    import plotly.io as pio
    from plotly.io._base_renderers import PlotlyRenderer

    if RENDERER in pio.renderers:
        return
    counter = itertools.count()

    class MimeWithHtml(PlotlyRenderer):
        """Plotly's MIME bundle plus an HTML fallback without plotly.js (see module doc)."""

        def to_mimebundle(self, fig_dict):
            from plotly.io import to_html

            bundle = super().to_mimebundle(fig_dict)
            bundle["text/html"] = to_html(
                fig_dict, include_plotlyjs=False, include_mathjax=False, full_html=False,
                div_id=f"plotly-{next(counter)}", default_width="100%", default_height=525,
                validate=False,
            )  # fmt: skip
            return bundle

    pio.renderers[RENDERER] = MimeWithHtml()


def notebook_setup() -> str:
    """Call once at the top of a notebook. Returns the Plotly renderer in use.

    Under ``pointvl.stages.notebook`` (env ``POINTVL_NOTEBOOK_EXECUTED=1``) Plotly renders
    with ``MimeWithHtml`` (see the module docstring); in a live JupyterLab the default
    renderer is kept.
    """
    import plotly.io as pio

    silence_known_warnings()
    if os.environ.get(EXECUTED_ENV) == "1":
        _register_renderer()
        pio.renderers.default = RENDERER
    np.set_printoptions(precision=4, suppress=True, linewidth=110)
    return str(pio.renderers.default)
