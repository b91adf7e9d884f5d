"""DVC stage ``figures``: Figure 3 (Sec. 4.6) on our test samples, and routed advantages on
real completions of the policy RL starts from (Secs. 3.3-3.5, Figure 2's idea on a model).

    python -m pointvl.stages.figures --params params.yaml [--profile smoke]

(a) Figure 3: one test sample (``sample_index``) with our saved greedy completion
    (``predictions``, written by ``evaluate`` from ``checkpoint``) -> ``pointvl.viz.figure3``
    -> ``figure3.png``; ``html_samples`` samples from there on -> ``figure3_reprojection.html``
    (``pointvl.viz.reprojection``, ours dashed).
(b) One group, the rl step of DESIGN.md on a real model: ``policy_checkpoint`` samples
    G = ``num_generations`` completions of test sample ``group_index`` (``torch.manual_seed
    (seed)``, temperature, no top-k / top-p, image and point tokens suppressed, as the rl
    stage's ``GRPOConfig``) -> cut after the first EOS (TRL) -> ``parse_output`` ->
    ``score_batch`` (Eqs. 8, 13) -> ``TokenLengths`` offsets + ``batch_field_token_ids``
    (Eqs. 6-7) -> ``build_advantages`` for grpo / grca / grca_rpc (Eqs. 9-14, 16), exactly as
    ``GRCATrainer._generate_and_score_completions`` -> ``routed_advantages_real.{png,html}``
    and ``routed_group.json``.

Metrics (``metrics``): the printed RPC of Figure 3, the group's mean rewards, span coverage,
zero-spread fractions and the fraction of tokens whose advantage GRCA changes / flips in
sign relative to broadcast GRPO (as ``credit_demo``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from pointvl.config import ConfigError, SchemaConfig, load_params, load_section
from pointvl.credit import (
    BACKGROUND_MODES,
    CreditConfig,
    CreditInputs,
    build_advantages,
    credit_diagnostics,
)
from pointvl.io import atomic_write_json
from pointvl.rewards import score_batch
from pointvl.schema import GEOMETRIC_FIELDS, ParsedOutput, parse_output
from pointvl.spans import TokenLengths, batch_field_token_ids

VARIANTS = {
    "grpo": "GRPO (broadcast Â_seq)",
    "grca": "GRCA (routed, ours)",
    "grca_rpc": "GRCA + RPC (ours)",
}
SYSTEM_NAMES = {"grca_rpc": "GRCA + RPC", "grca": "GRCA", "grpo": "GRPO", "sft": "SFT"}
TARGET_KEYS = ("bbox2d", "bbox3d", "kpts2d", "kpts3d", "K", "R", "t")


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
    max_new_tokens: int = 400
    """Generation budget per sampled completion (as ``rl.max_completion_length``)."""
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
        if self.max_new_tokens < 1 or self.html_samples < 1:
            raise ConfigError(
                f"figures.max_new_tokens={self.max_new_tokens}, figures.html_samples="
                f"{self.html_samples}: both must be >= 1"
            )
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"figures.lam={self.lam}: expected a number in [0, 1]")
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
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["uid"]: r for r in rows}


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
    }


# ----------------------------------------------------------------------------- (b) one group
def reward_target(sample: Mapping) -> dict:
    """The continuous ground truth a completion is scored against (as ``train.rl``)."""
    out = {k: np.asarray(torch.as_tensor(sample[k]), dtype=np.float64) for k in TARGET_KEYS}
    out["answer"] = str(sample.get("answer", ""))
    out["description"] = str(sample.get("description", ""))
    return out


def cut_after_eos(completion_ids: torch.Tensor, eos_ids: Sequence[int]) -> list[list[int]]:
    """(G, T) generated ids -> per row the ids up to and including the first EOS (TRL)."""
    is_eos = torch.isin(completion_ids, torch.tensor(list(eos_ids)))  # (G, T)
    G, T = completion_ids.shape
    eos_idx = torch.full((G,), T, dtype=torch.long)  # (G,)
    eos_idx[is_eos.any(1)] = is_eos.int().argmax(1)[is_eos.any(1)]
    keep = torch.arange(T).expand(G, -1) <= eos_idx[:, None]  # (G, T)
    return [row[m].tolist() for row, m in zip(completion_ids, keep)]


@torch.no_grad()
def sample_group(model, processor, sample: Mapping, cfg: FiguresConfig) -> list[list[int]]:
    """G sampled completions (token ids, cut after EOS) of one sample, seeded."""
    G = cfg.num_generations
    batch = processor.batch([dict(sample)] * G, with_target=False)  # the prompt, G times
    prompt_len = batch["input_ids"].shape[1]
    torch.manual_seed(cfg.seed)
    out = model.generate(
        **batch,
        do_sample=True,
        temperature=cfg.temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=cfg.max_new_tokens,
        eos_token_id=processor.eos_token_ids,
        pad_token_id=processor.tokenizer.pad_token_id,
        suppress_tokens=[model.config.image_token_id, model.config.point_token_id],
    )  # (G, L + T)
    return cut_after_eos(out[:, prompt_len:].cpu(), processor.eos_token_ids)


@dataclasses.dataclass
class RoutedGroup:
    """One scored group and its per-token advantages (rows = the G completions)."""

    completion_ids: list[list[int]]
    """G rows of generated ids, up to and including the first EOS."""
    texts: list[str]
    """Decoded completions (special tokens skipped, as TRL)."""
    parsed: list[ParsedOutput]
    """``parse_output`` of each text."""
    scores: dict[str, np.ndarray]
    """``score_batch``: per_field_rewards (G, F), rpc / seq / format / answer / description (G,)."""
    field_ids: torch.Tensor
    """(G, T) 0 = background, k + 1 = GEOMETRIC_FIELDS[k]; padding 0."""
    mask: torch.Tensor
    """(G, T) bool, True on real completion tokens."""
    batch: CreditInputs
    """What the advantage builders read."""
    advantages: dict[str, torch.Tensor]
    """Variant -> (G, T) advantages, NaN on padding."""


def route_group(
    completion_ids: Sequence[Sequence[int]],
    tokenizer,
    target: Mapping,
    credit: CreditConfig,
    quant_bins: int,
    num_keypoints: int,
) -> RoutedGroup:
    """Eqs. (6-14) on one group exactly as ``GRCATrainer._generate_and_score_completions``."""
    ids = [list(map(int, row)) for row in completion_ids]
    G = len(ids)
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    parsed = [parse_output(t, num_keypoints) for t in texts]
    scores = score_batch(parsed, [target] * G, quant_bins)
    # Eqs. (6-7): a row with no geometric span is all background (no offsets needed)
    table, empty = TokenLengths(tokenizer), np.zeros((0, 2), np.int64)
    spans = [p.char_spans for p in parsed]
    has_span = [any(sp.get(f) is not None for f in GEOMETRIC_FIELDS) for sp in spans]
    offsets = [table.offsets(ids[i], texts[i]) if has_span[i] else empty for i in range(G)]
    T = max(1, max(len(row) for row in ids))
    field_ids = batch_field_token_ids(spans, offsets, T)  # (G, T)
    mask = torch.arange(T)[None, :] < torch.tensor([len(r) for r in ids])[:, None]  # (G, T)
    batch = CreditInputs(
        per_field_rewards=torch.as_tensor(scores["per_field_rewards"]),
        seq_rewards=torch.as_tensor(scores["seq"]),
        rpc_rewards=torch.as_tensor(scores["rpc"]),
        field_ids=field_ids,
        group_size=G,
    )
    # A_{i,t} of each variant, NaN where t is padding
    adv = {v: build_advantages(v, batch, credit).masked_fill(~mask, float("nan")) for v in VARIANTS}
    return RoutedGroup(ids, texts, parsed, scores, field_ids, mask, batch, adv)


def group_metrics(group: RoutedGroup) -> dict[str, float]:
    """Rewards, parse failures and GRCA vs GRPO token changes / sign flips (as credit_demo)."""
    out: dict[str, float] = {
        "group/size": len(group.texts),
        "group/tokens": int(group.mask.sum()),
        "spans/parse_fail_frac": float(np.mean([not p.ok for p in group.parsed])),
    }
    for k, name in enumerate(GEOMETRIC_FIELDS):
        out[f"reward/{name}"] = float(group.scores["per_field_rewards"][:, k].mean())
        out[f"tokens/{name}"] = int(((group.field_ids == k + 1) & group.mask).sum())
    for name in ("rpc", "seq", "format", "answer", "description"):
        out[f"reward/{name}"] = float(group.scores[name].mean())
    grpo, m = group.advantages["grpo"], group.mask
    for v in ("grca", "grca_rpc"):
        diff = (group.advantages[v] - grpo).abs()[m]
        out[f"{v}/tokens_changed_vs_grpo_frac"] = float((diff > 1e-9).double().mean())
        flips = (torch.sign(group.advantages[v]) * torch.sign(grpo) < 0)[m]
        out[f"{v}/sign_flips_vs_grpo_frac"] = float(flips.double().mean())
    out.update(credit_diagnostics(group.batch))
    return out


def _tokens(tokenizer, ids: Sequence[Sequence[int]]) -> list[list[str]]:
    """Each token as the text it stands for (special tokens by name)."""
    return [
        [tokenizer.convert_tokens_to_string([t]) for t in tokenizer.convert_ids_to_tokens(row)]
        for row in ids
    ]


def _row_label(group: RoutedGroup, i: int) -> str:
    r = group.scores["per_field_rewards"][i]  # (F,)
    fail = "" if group.parsed[i].ok else "  PARSE FAIL"
    return (f"#{i} seq {group.scores['seq'][i]:.2f} | 2d {r[0]:.2f} 3d {r[1]:.2f} "
            f"k2 {r[2]:.2f} k3 {r[3]:.2f} | rpc {group.scores['rpc'][i]:.2f}{fail}")  # fmt: skip


def group_json(group: RoutedGroup, tokens: list[list[str]], sample: Mapping, meta: dict) -> dict:
    """Everything behind the heatmap: completions, rewards per field, tokens, advantages."""
    per_field = group.scores["per_field_rewards"]  # (G, F)
    rewards = {name: per_field[:, k].tolist() for k, name in enumerate(GEOMETRIC_FIELDS)}
    rewards.update({k: np.asarray(v).tolist() for k, v in group.scores.items() if k != "per_field_rewards"})  # fmt: skip
    lens = [len(t) for t in tokens]
    return {
        **meta,
        "uid": sample["uid"],
        "question": sample["question"],
        "completions": group.texts,
        "errors": [p.errors for p in group.parsed],
        "rewards": rewards,
        "tokens": tokens,
        "field_ids": [row[:n].tolist() for row, n in zip(group.field_ids, lens)],
        "advantages": {
            v: [row[:n].tolist() for row, n in zip(a, lens)] for v, a in group.advantages.items()
        },
        "metrics": group_metrics(group),
    }


def write_heatmap(cfg: FiguresConfig, ds, schema: SchemaConfig, profile: str, out: Path) -> dict:
    """Sample the group, route its advantages, write the PNG, HTML and JSON into ``out``."""
    from pointvl.eval.generate import load_checkpoint
    from pointvl.viz.advantages import advantage_figure, advantage_png

    ckpt = cfg.policy_checkpoint.format(profile=profile)
    model, processor = load_checkpoint(ckpt)
    sample = ds[cfg.group_index]
    t0 = time.perf_counter()
    ids = sample_group(model, processor, sample, cfg)
    gen_s = time.perf_counter() - t0
    credit = CreditConfig(background=cfg.background, lam=cfg.lam)
    tok = processor.tokenizer
    group = route_group(
        ids, tok, reward_target(sample), credit, ds.quant_bins, schema.num_keypoints
    )
    tokens = _tokens(tok, ids)
    labels = [_row_label(group, i) for i in range(len(ids))]
    panels = {VARIANTS[v]: a.numpy() for v, a in group.advantages.items()}
    G = len(ids)
    where = f"test {sample['uid']} ({sample['category']})"
    title = (f"Per-token advantages of G={G} real completions (ours: policy {ckpt}, {where}, "
             f"T={cfg.temperature}, λ={cfg.lam})")  # fmt: skip
    fids = group.field_ids.numpy()
    fig = advantage_figure(panels, fids, tokens, labels, title=title)
    fig.write_html(out / "routed_advantages_real.html", include_plotlyjs=True, full_html=True,
                   div_id="routed-advantages")  # fmt: skip
    advantage_png(out / "routed_advantages_real.png", panels, fids, labels, title=title)
    meta = {"policy_checkpoint": ckpt, "group_size": G, "temperature": cfg.temperature,
            "seed": cfg.seed, "lam": cfg.lam, "background": cfg.background}  # fmt: skip
    data = group_json(group, tokens, sample, meta)
    (out / "routed_group.json").write_text(json.dumps(data, indent=1) + "\n")
    return {**data["metrics"], "group/generate_s": gen_s}


# ----------------------------------------------------------------------------- stage
def _publish(tmp: Path, out_dir: Path) -> None:
    """Move every file of ``tmp`` into ``out_dir`` (each rename is atomic)."""
    for f in sorted(tmp.iterdir()):
        os.replace(f, out_dir / f.name)


def run(cfg: FiguresConfig, schema: SchemaConfig, profile: str) -> dict:
    """Both figures; outputs appear in ``out_dir`` only when everything succeeded."""
    from pointvl.data.dataset import PointVLDataset

    t0 = time.perf_counter()
    ds = PointVLDataset(cfg.data_dir.format(profile=profile), "test", qa_mode="rotate")
    cfg.validate(num_test=len(ds))
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".figures.", dir=out_dir) as tmp:
        metrics = write_figure3(cfg, ds, ds.quant_bins, profile, Path(tmp))
        metrics.update(write_heatmap(cfg, ds, schema, profile, Path(tmp)))
        _publish(Path(tmp), out_dir)
    metrics["wall_s"] = time.perf_counter() - t0
    atomic_write_json(cfg.metrics, metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None, help="smoke | tiny | paper (default: params)")
    args = ap.parse_args(argv)
    profile = load_params(args.params, args.profile)["profile"]
    cfg = load_section(args.params, "figures", FiguresConfig, args.profile)
    schema = load_section(args.params, "schema", SchemaConfig, args.profile)
    metrics = run(cfg, schema, profile)
    keys = [k for k in sorted(metrics) if k.startswith(("figure3/", "reward/", "grca")) or k == "wall_s"]  # fmt: skip
    print(json.dumps({k: metrics[k] for k in keys}, indent=1))


if __name__ == "__main__":
    main()
