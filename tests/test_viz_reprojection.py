"""Reprojection views: figure structure, offline HTML, gallery, and footprint vs mask box."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pointvl.data.annotate import mask_box
from pointvl.data.build import BuildDatasetConfig, build
from pointvl.data.dataset import PointVLDataset
from pointvl.geometry import reprojected_footprint
from pointvl.viz.pagecheck import check_page, chromium
from pointvl.viz.reprojection import (
    BOX_EDGES,
    explorer_html,
    gallery_png,
    object_labels,
    projected_box_edges,
    reprojection_figure,
    write_explorer,
    write_html,
)

needs_chromium = pytest.mark.skipif(chromium() is None, reason="Debian chromium not installed")


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("viz") / "ds"
    cfg = BuildDatasetConfig(train_count=0, test_count=5, num_points=128, image_size=64, workers=1)
    build(cfg, out, 100, "smoke", progress=False)
    ds = PointVLDataset(out, "test", with_mask=True)
    return [ds[i] for i in range(len(ds))]


def test_box_edges_are_the_twelve_unit_edges():
    assert len(BOX_EDGES) == 12 and len(set(BOX_EDGES)) == 12
    assert all(bin(a ^ b).count("1") == 1 for a, b in BOX_EDGES)


def test_projected_edges_span_the_footprint(samples):
    for s in samples:
        K, R, t = (s[k].numpy() for k in ("K", "R", "t"))
        edges = projected_box_edges(s["bbox3d"], K, R, t)
        foot, ok = reprojected_footprint(s["bbox3d"].numpy(), K, R, t)
        assert ok
        got = [np.nanmin(edges[:, 0]), np.nanmin(edges[:, 1]), np.nanmax(edges[:, 0]),
               np.nanmax(edges[:, 1])]  # fmt: skip
        np.testing.assert_allclose(got, foot, atol=1e-9)


def test_footprint_against_mask_box_on_rendered_samples(samples):
    """The projected GT 3D box contains the mask's 2D box (1 px slack) on every render."""
    for s in samples:
        K, R, t = (s[k].numpy() for k in ("K", "R", "t"))
        foot, ok = reprojected_footprint(s["bbox3d"].numpy(), K, R, t)
        mb = mask_box(s["mask"].numpy())
        np.testing.assert_array_equal(mb, s["bbox2d"].numpy())
        assert foot[0] <= mb[0] + 1 and foot[1] <= mb[1] + 1
        assert foot[2] >= mb[2] - 1 and foot[3] >= mb[3] - 1
        # and it stays close: the footprint is the silhouette's box grown by the box corners
        assert foot[2] - foot[0] < 2.0 * (mb[2] - mb[0])


def test_figure_dropdown_and_predictions(samples):
    preds = [None, {"bbox2d": samples[1]["bbox2d"] + 2, "bbox3d": samples[1]["bbox3d"] * 0.9,
                    "kpts2d": samples[1]["kpts2d"], "kpts3d": samples[1]["kpts3d"]}] + [None] * 3  # fmt: skip
    fig = reprojection_figure(samples, preds)
    ranges = fig.layout.meta["sample_trace_ranges"]
    assert len(ranges) == 5 and ranges[-1][1] == len(fig.data)
    sizes = [b - a for a, b in ranges]
    assert sizes[1] == sizes[0] + 5  # 3D box, projected box, 3D kpts, 2D box, 2D kpts
    buttons = fig.layout.updatemenus[0].buttons
    assert len(buttons) == 5
    for i, (a, b) in enumerate(ranges):
        vis = buttons[i].args[0]["visible"]
        assert [j for j, v in enumerate(vis) if v] == list(range(a, b))
    assert [bool(tr.visible) for tr in fig.data[: ranges[0][1]]] == [True] * sizes[0]
    assert not any(tr.visible for tr in fig.data[ranges[0][1] :])
    names = {tr.name for tr in fig.data}
    assert {"bbox3d (pred)", "camera", "projected bbox3d (GT)", "kpts2d (GT)"} <= names
    with pytest.raises(ValueError, match="predictions"):
        reprojection_figure(samples, preds[:2])


def test_write_html_links_the_shared_plotly_and_gallery(samples, tmp_path):
    path = write_html(reprojection_figure(samples[:2]), tmp_path / "f" / "repro.html")
    html = path.read_text()
    assert path.stat().st_size < 200_000  # plotly.js is not inlined ...
    assert '<script charset="utf-8" src="_static/plotly.min.js">' in html  # ... but shared
    assert (tmp_path / "f" / "_static" / "plotly.min.js").stat().st_size > 1_000_000
    assert 'src="https://' not in html and "Plotly.newPlot" in html
    png = gallery_png(samples, tmp_path / "gallery.png", cols=3)
    with Image.open(png) as im:
        w, h = im.size
    assert w > h > 100  # 2 rows x 3 columns


def test_title_and_object_menu_do_not_share_a_corner(samples):
    fig = reprojection_figure(samples[:3], labels=["a", "b", "c"])
    menu = fig.layout.updatemenus[0]
    assert fig.layout.title.xanchor == "left" and fig.layout.title.x < 0.1
    assert menu.xanchor == "right" and menu.x == 1.0 and menu.yanchor == "bottom"
    assert [b.label for b in menu.buttons] == ["a", "b", "c"]
    assert not reprojection_figure(samples[:1]).layout.updatemenus  # one object: no menu


def test_object_labels_carry_per_object_metrics(samples):
    per = {"iou3d": [0.5, 0.25], "rpc": [1.0, 0.125], "iou2d": [0.0, 1.0]}
    labels = object_labels(samples[:2], per, metrics=("iou3d", "rpc"))
    assert labels[1] == f"{samples[1]['uid']} | {samples[1]['category']} | IoU3D 0.250 | RPC 0.125"


def test_explorer_holds_every_object(samples):
    """One figure per object (any of them reachable by search or prev / next), labels kept."""
    import json
    import re

    labels = object_labels(samples)
    html = explorer_html(samples, labels=labels, max_points=64)
    figs = json.loads(re.search(r"var figs = (\[.*?\]), labels = ", html, re.S).group(1))
    assert len(figs) == len(samples)
    assert [f["layout"]["title"]["text"] for f in figs] == labels
    assert all(f'<option value="{lab}">' in html for lab in labels)
    with pytest.raises(ValueError, match="labels"):
        explorer_html(samples, labels=labels[:2])


@needs_chromium
def test_explorer_page_draws_in_a_browser(samples, tmp_path):
    page = write_explorer(samples, tmp_path / "explorer.html", labels=object_labels(samples),
                          title="test objects")  # fmt: skip
    report = check_page(page)
    assert report.ok, report.summary()
    assert report.figures == 1
