"""DVC stage ``figures``: Figure 3 (Sec. 4.6) on our test samples, and routed advantages on
real completions of the policy RL starts from (Secs. 3.3-3.5, Figure 2's idea on a model).

    python -m pointvl.stages.figures --params params.yaml [--profile smoke]

(a) Figure 3: one test sample (``sample_index``) with our saved greedy completion
    (``predictions``, written by ``evaluate`` from ``checkpoint``) -> ``pointvl.viz.figure3``
    -> ``figure3.png``; ``html_samples`` samples from there on -> ``figure3_reprojection.html``
    (``pointvl.viz.reprojection``, ours dashed).
(b) One group, the rl step of DESIGN.md on a real model (``pointvl.viz.routed_group``):
    ``policy_checkpoint`` samples G = ``num_generations`` completions of test sample
    ``group_index`` with the RL rollout sampler (seeded) -> ``pointvl.step.score_and_route``
    (Eqs. 6-14, 16; what ``GRCATrainer`` computes) -> ``routed_advantages_real.{png,html}``
    and ``routed_group.json``.

Metrics (``metrics``): the printed RPC of Figure 3, the group's mean rewards, span coverage,
zero-spread fractions and the fraction of tokens whose advantage GRCA changes / flips in
sign relative to broadcast GRPO (as ``credit_demo``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from pointvl.config import ConfigError, SchemaConfig, TokenBudget, check_unit_interval
from pointvl.credit import BACKGROUND_MODES, CreditConfig
from pointvl.io import read_jsonl, write_metrics
from pointvl.stages._cli import Context, Stage
from pointvl.step import Scoring
from pointvl.train.launch import LaunchConfig
from pointvl.viz.page import write_figure

SYSTEM_NAMES = {"grca_rpc": "GRCA + RPC", "grca": "GRCA", "grpo": "GRPO", "sft": "SFT"}


@dataclasses.dataclass
class FiguresConfig:
    """Section ``figures`` of params.yaml ({profile} is replaced by the active profile)."""

    data_dir: str = "data/{profile}"
    """The built benchmark; samples come from its ``test`` split (``qa_mode="rotate"``)."""
    checkpoint: str = "checkpoints/{profile}/rl/grca_rpc/final"
    """The system whose greedy completions ``predictions`` holds (provenance, in the JSON)."""
    predictions: str = "results/predictions/grca_rpc.jsonl"
    """Saved greedy completions (``evaluate`` stage): lines {"uid", "question", "completion"}."""
    policy_checkpoint: str = "checkpoints/{profile}/sft/final"
    """The policy RL starts from (SFT): it samples the group of panel (b)."""
    sample_index: int = 0
    """Test sample drawn in Figure 3 (and the first of the HTML view)."""
    group_index: int = 0
    """Test sample whose G sampled completions make the advantage heatmap."""
    num_generations: int = 8
    """G, completions in the group (>= 2: Eq. (9) standardizes inside the group)."""
    temperature: float = 0.7
    """Sampling temperature of the group (as ``rl.temperature``)."""
    max_new_tokens: TokenBudget = 400
    """Generation budget per sampled completion (as ``rl.max_completion_length``; ``auto``:
    derived from the longest valid target, ``pointvl.budget``)."""
    lam: float = 0.15
    """Eq. (14) RPC mixing weight λ of the GRCA+RPC panel, in [0, 1]."""
    background: str = "seq"
    """Eq. (10b) background advantage: "seq" or "zero"."""
    seed: int = 0
    """``torch.manual_seed`` right before sampling the group."""
    out_dir: str = "results/figures"
    """Where the PNGs, HTMLs and ``routed_group.json`` go (files replaced one by one)."""
    html_samples: int = 8
    """Test samples (from ``sample_index`` on) in ``figure3_reprojection.html``."""
    metrics: str = "results/metrics/figures.json"
    """The stage's metrics file (``dvc metrics show``)."""

    def validate(self, num_test: int | None = None) -> None:
        """Raise ``ConfigError`` naming the bad value; index ranges need ``num_test``."""
        if self.num_generations < 2:
            raise ConfigError(
                f"figures.num_generations={self.num_generations}: expected >= 2 "
                "(advantages are standardized inside the group)"
            )
        if not self.temperature > 0:
            raise ConfigError(f"figures.temperature={self.temperature}: expected > 0")
        if self.html_samples < 1:
            raise ConfigError(f"figures.html_samples={self.html_samples}: expected >= 1")
        check_unit_interval("figures.lam", self.lam)
        if self.background not in BACKGROUND_MODES:
            raise ConfigError(
                f"figures.background={self.background!r}: expected one of {BACKGROUND_MODES}"
            )
        for name in ("sample_index", "group_index"):
            value = getattr(self, name)
            if value < 0 or (num_test is not None and value >= num_test):
                bound = f"[0, {num_test})" if num_test is not None else ">= 0"
                raise ConfigError(
                    f"figures.{name}={value}: out of range of the test split, expected {bound}"
                )


# ----------------------------------------------------------------------------- (a) Figure 3
def read_predictions(path: str | os.PathLike, checkpoint: str) -> dict[str, dict]:
    """uid -> {"uid", "question", "completion"} of a predictions JSONL."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"figures.predictions={str(path)!r} does not exist: run the evaluate stage for the "
            f"system of {checkpoint} first (python -m pointvl.stages.evaluate --system ...)"
        )
    return {r["uid"]: r for r in read_jsonl(path)}


def system_name(predictions: str) -> str:
    """``results/predictions/grca_rpc.jsonl`` -> "GRCA + RPC"."""
    stem = Path(predictions).stem
    return SYSTEM_NAMES.get(stem, stem)


def completion_for(preds: Mapping[str, dict], sample: Mapping, where: str) -> str:
    """The saved completion of ``sample`` (matched by uid, question checked)."""
    row = preds.get(sample["uid"])
    if row is None:
        raise ConfigError(f"{where}: no prediction for test uid {sample['uid']!r}")
    if row.get("question") not in (None, sample["question"]):
        raise ConfigError(f"{where}: uid {sample['uid']!r} was asked another question")
    return str(row["completion"])


def write_figure3(cfg: FiguresConfig, ds, quant_bins: int, profile: str, out: Path) -> dict:
    """figure3.png and figure3_reprojection.html into ``out``; returns their metrics."""
    from pointvl.viz.figure3 import figure3_png, prediction_dict, view_prediction
    from pointvl.viz.reprojection import reprojection_figure, write_html

    preds = read_predictions(cfg.predictions, cfg.checkpoint.format(profile=profile))
    system = system_name(cfg.predictions)
    sample = ds[cfg.sample_index]
    text = completion_for(preds, sample, cfg.predictions)
    info = figure3_png(out / "figure3.png", sample, text, quant_bins, system=system)
    n = len(ds)
    idx = [(cfg.sample_index + k) % n for k in range(min(cfg.html_samples, n))]
    samples = [s for s in (ds[i] for i in idx) if s["uid"] in preds]  # skip unpredicted uids
    views = [
        view_prediction(completion_for(preds, s, cfg.predictions), quant_bins, len(s["kpts3d"]))
        for s in samples
    ]  # parsed with the GT keypoint count M, as eval.metrics
    label = f"GT solid, ours ({system}) dashed red"
    shown = [{**s, "category": f"{s['category']} | {label}"} for s in samples]
    fig = reprojection_figure(shown, [prediction_dict(v) for v in views])
    write_html(fig, out / "figure3_reprojection.html")
    failed = [f for f, e in info["errors"].items() if e is not None]
    return {
        "figure3/rpc": float(info["rpc"]),
        "figure3/parse_fail_fields": len(failed),
        "figure3/html_samples": len(samples),
        "reprojection/objects": write_test_explorer(ds, preds, quant_bins, system, out),
    }


def write_test_explorer(ds, preds: Mapping[str, dict], quant_bins: int, system: str, out: Path):
    """``reprojection_test.html``: every test object with a prediction, searchable, each
    labelled with its IoU2D / IoU3D / RPC (``pointvl.viz.reprojection.write_explorer``).
    Returns how many objects it holds."""
    from pointvl.eval.metrics import per_sample_metrics
    from pointvl.eval.targets import question_group
    from pointvl.viz.reprojection import object_labels, prediction_values, write_explorer

    samples = [s for s in (ds[i] for i in range(len(ds))) if s["uid"] in preds]
    texts = [completion_for(preds, s, "reprojection_test.html") for s in samples]
    targets = [{**s, "question_type": question_group(s["qa_type"])} for s in samples]
    per = per_sample_metrics(texts, targets, quant_bins)
    values = [prediction_values(t, quant_bins, len(s["kpts3d"])) for t, s in zip(texts, samples)]
    title = f"Every test object with its {system} prediction (ours; GT solid, ours dashed red)"
    write_explorer(samples, out / "reprojection_test.html", values, object_labels(samples, per),
                   title=title, max_points=256)  # fmt: skip
    return len(samples)


# ----------------------------------------------------------------------------- (b) one group
def write_heatmap(
    cfg: FiguresConfig,
    ds,
    schema: SchemaConfig,
    profile: str,
    out: Path,
    attn_implementation: str | None = None,
) -> dict:
    """Sample the group (on the GPU in bfloat16 when CUDA is present), route its advantages,
    write the PNG, HTML and JSON into ``out``."""
    from pointvl.eval.generate import load_checkpoint
    from pointvl.train.rl import reward_target
    from pointvl.viz import routed_group as rg
    from pointvl.viz.advantages import advantage_figure, advantage_png

    ckpt = cfg.policy_checkpoint.format(profile=profile)
    model, processor = load_checkpoint(ckpt, device="auto", attn_implementation=attn_implementation)
    sample = ds[cfg.group_index]
    t0 = time.perf_counter()
    ids = rg.sample_group(
        model, processor, sample, cfg.num_generations, cfg.temperature, cfg.max_new_tokens, cfg.seed
    )
    gen_s = time.perf_counter() - t0
    credit = CreditConfig(background=cfg.background, lam=cfg.lam)
    tok = processor.tokenizer
    step = rg.route_group(
        ids, tok, reward_target(sample), credit, Scoring(ds.quant_bins, schema.num_keypoints)
    )
    tokens = rg.token_strings(tok, ids)
    labels = [rg.row_label(step, i) for i in range(len(ids))]
    panels = rg.heatmap_panels(step)
    G = len(ids)
    where = f"test {sample['uid']} ({sample['category']})"
    title = (f"Per-token advantages of G={G} real completions (ours: policy {ckpt}, {where}, "
             f"T={cfg.temperature}, λ={cfg.lam})")  # fmt: skip
    fids = step.field_ids.numpy()
    fig = advantage_figure(panels, fids, tokens, labels, title=title)
    write_figure(fig, out / "routed_advantages_real.html", div_id="routed-advantages")
    advantage_png(out / "routed_advantages_real.png", panels, fids, labels, title=title)
    meta = {"policy_checkpoint": ckpt, "num_generations": G, "temperature": cfg.temperature,
            "seed": cfg.seed, "lam": cfg.lam, "background": cfg.background}  # fmt: skip
    data = rg.group_json(step, tokens, sample, meta)
    (out / "routed_group.json").write_text(json.dumps(data, indent=1) + "\n")
    return {**data["metrics"], "group/generate_s": gen_s}


# ----------------------------------------------------------------------------- stage
def _publish(tmp: Path, out_dir: Path) -> None:
    """Move every file of ``tmp`` into ``out_dir`` (each rename is atomic)."""
    for f in sorted(tmp.iterdir()):
        if f.is_dir() and (out_dir / f.name).is_dir():  # _static (pages outside results/)
            shutil.rmtree(out_dir / f.name)
        os.replace(f, out_dir / f.name)


def run(
    cfg: FiguresConfig, schema: SchemaConfig, profile: str, attn_implementation: str | None = None
) -> dict:
    """Both figures; outputs appear in ``out_dir`` only when everything succeeded."""
    from pointvl.data.dataset import PointVLDataset

    t0 = time.perf_counter()
    ds = PointVLDataset(cfg.data_dir.format(profile=profile), "test", qa_mode="rotate")
    cfg.validate(num_test=len(ds))
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".figures.", dir=out_dir) as tmp:
        metrics = write_figure3(cfg, ds, ds.quant_bins, profile, Path(tmp))
        metrics.update(write_heatmap(cfg, ds, schema, profile, Path(tmp), attn_implementation))
        _publish(Path(tmp), out_dir)
    metrics["wall_s"] = time.perf_counter() - t0
    metrics["group/max_new_tokens"] = cfg.max_new_tokens
    write_metrics(cfg.metrics, metrics)  # timings go to <stem>.run.json
    return metrics


def _prepare(ctx: Context) -> None:
    """The policy checkpoint exists and the group's budget completes every valid target."""
    from transformers import AutoTokenizer

    from pointvl.budget import dataset_target_length, resolve_budget

    cfg = ctx.figures
    ckpt = cfg.policy_checkpoint
    if not (Path(ckpt) / "config.json").is_file():
        raise ConfigError(
            f"figures.policy_checkpoint={ckpt!r}: no checkpoint there (dvc repro sft)"
        )
    length = dataset_target_length(cfg.data_dir, AutoTokenizer.from_pretrained(ckpt))
    budget = resolve_budget("figures.max_new_tokens", cfg.max_new_tokens, length)
    ctx.configs["figures"] = dataclasses.replace(cfg, max_new_tokens=budget)


def _show(metrics: dict) -> dict:
    keys = [k for k in sorted(metrics) if k.startswith(("figure3/", "reward/", "grca")) or k == "wall_s"]  # fmt: skip
    return {k: metrics[k] for k in keys}


STAGE = Stage(
    "figures",
    __doc__,
    sections={"figures": FiguresConfig, "schema": SchemaConfig, "launch": LaunchConfig},
    prepare=_prepare,
    run=lambda ctx: run(ctx.figures, ctx.schema, ctx.profile, ctx.launch.attn_implementation),
    show=_show,
)
main = STAGE.main

if __name__ == "__main__":
    main()
