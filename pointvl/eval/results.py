"""Our runs as the report sees them: systems, seeds, table cells, claims, RL acceptance.

A *system* is a name with a metrics JSON (``<metrics_dir>/<system>.json``, written by
``evaluate``) and saved predictions; ``seed_systems`` lists a system's other seeds
(``grca: [grca_seed1, grca_seed2]``; seed 0 is the system itself).

Cells. One seed: the test-set mean with its 95% bootstrap CI over test samples. Several
seeds: the mean over seeds with the 95% t-interval over the per-seed test means
(``pointvl.eval.stats``): the interval includes seed variance (RL seed, sampling, prompt
order), which on our runs is larger than the test-sample variance.

Claims. A − B on a metric over the seeds both systems have: the t-interval of the per-seed
differences (``paired_seed_difference``; the test set is shared, so its difficulty cancels
seed by seed). When one side has a single run (SFT: every RL seed starts from the same SFT
checkpoint), the differences are (each seed of A) − (the run of B): the interval holds A's
seed variance, conditional on B's run, and the sentence says so. One common seed: the paired
bootstrap over test samples, labelled a one-seed comparison (it cannot include seed variance).
Verdicts use the smallest effect of interest δ per metric (``deltas``, fixed in params before
the runs; ``pointvl.eval.stats.verdict``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pointvl.eval.report import METRIC_LABELS
from pointvl.eval.stats import paired_seed_difference, slope_over_seeds, t_interval, verdict

LABELS = {
    "sft": "SFT",
    "sft_budget": "SFT (budget-matched)",
    "grpo": "GRPO (broadcast reward)",
    "gdpo": "GDPO (per-field normalize-then-sum; ours, not in the paper)",
    "grca": "GRCA",
    "grca_bg0": "GRCA, background 0 (ours, not in the paper)",
    "grca_rpc": "GRCA + RPC",
    "grca_kpm": "GRCA, matched keypoint reward (ours, not in the paper)",
}
"""Our system -> its row label; rows whose label the paper uses get the paper's numbers."""
PAPER_ROWS = {"sft", "sft_budget", "grpo", "grca", "grca_rpc"}
GEOMETRY = ("iou2d", "iou3d", "kpa2d", "kpa3d", "rpc")
STRICT = ("pck3d", "spread3d", "parse_fail")
FIELD_METRICS = ("iou2d", "iou3d", "kpa2d", "kpa3d")
"""The test metrics of the four fields every RL arm optimizes (Eq. 8's rewards, greedy)."""
LANGUAGE = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougeL", "bertscore",
            "qa_acc", "qa_acc/category_mc", "qa_acc/attribute")  # fmt: skip
DEFAULT_DELTAS = {"iou2d": 0.01, "iou3d": 0.01, "rpc": 0.01, "kpa2d": 0.02, "kpa3d": 0.02,
                  "pck3d": 0.02, "spread3d": 0.05, "parse_fail": 0.02}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Claim:
    """One comparison A − B on a metric; ``paper`` is the paper's difference (None: ours)."""

    a: str
    b: str
    metric: str


def load_json(path: Path) -> dict | None:
    return json.loads(Path(path).read_text()) if Path(path).is_file() else None


def check_profile(path: Path, data: Mapping | None, profile: str | None) -> None:
    """``DataError`` when ``data`` (a metrics JSON) says it comes from another profile."""
    from pointvl.config import DataError

    meta = (data or {}).get("_meta") if isinstance(data, Mapping) else None
    got = meta.get("profile") if isinstance(meta, Mapping) else None
    if profile is not None and got is not None and got != profile:
        raise DataError(
            f"{path} was written by profile {got!r}, this report is for {profile!r}: "
            "a report never mixes profiles (each writes under its own results folder)"
        )


def _mean(result: Mapping | None, metric: str) -> float | None:
    if not result or metric not in result or result[metric].get("mean") is None:
        return None
    m = result[metric]["mean"]
    return None if isinstance(m, float) and math.isnan(m) else float(m)


NONNEGATIVE = ("spread", "chamfer")
"""Metric name prefixes bounded below by 0 only; every other reported metric lies in [0, 1]."""


def clip_to_range(metric: str, lo: float | None, hi: float | None) -> tuple:
    """A t-interval over few seeds cut at the metric's range ([0, 1]; [0, inf) for spread and
    Chamfer): a mean PCK of 0.98 ± 0.05 is reported as [0.93, 1.00], not [0.93, 1.03]."""
    top = math.inf if metric.startswith(NONNEGATIVE) else 1.0
    cut = lambda v: None if v is None or math.isnan(v) else min(max(v, 0.0), top)  # noqa: E731
    return cut(lo), cut(hi)


def or_base(path: str | Path, base: str | Path | None) -> Path:
    """``path`` if it is a file (or there is no ``base``), else ``base``: the RL study writes
    its runs apart and reads what it lacks (seed 0 of every arm) from the default pipeline."""
    path = Path(path)
    return Path(base) if base and not path.is_file() else path


class Results:
    """Systems with results under ``metrics_dir`` (and predictions for paired bootstraps)."""

    def __init__(
        self,
        metrics_dir: str | Path,
        predictions_dir: str | Path,
        seed_systems: Mapping[str, Sequence[str]] | None = None,
        data_dir: str | Path | None = None,
        n_boot: int = 1000,
        seed: int = 0,
        profile: str | None = None,
        base: tuple[str | Path, str | Path] | None = None,
    ):
        self.mdir, self.pdir = Path(metrics_dir), Path(predictions_dir)
        # (metrics_dir, predictions_dir) read for a system these folders lack: the RL study
        # writes its runs apart and reads seed 0 of every arm from the default pipeline's
        self.base = (Path(base[0]), Path(base[1])) if base else None
        self.profile = profile
        self.seed_systems = {k: list(v) for k, v in (seed_systems or {}).items()}
        self.n_boot, self.seed = n_boot, seed
        self._targets = None
        if data_dir is not None and Path(data_dir, "manifest.json").is_file():
            from pointvl.eval.targets import load_targets

            self._targets = load_targets(data_dir, "test")
        self._results: dict = {}
        self._per: dict = {}

    # ---------------------------------------------------------------- runs
    def _find(self, folder: Path, which: int, name: str) -> Path:
        return or_base(folder / name, self.base[which] / name if self.base else None)

    def metrics_path(self, system: str) -> Path:
        """``<metrics_dir>/<system>.json``, else the ``base`` folder's."""
        return self._find(self.mdir, 0, f"{system}.json")

    def result(self, system: str) -> dict | None:
        """The system's metrics JSON, read once; one written by another profile than
        ``profile`` (its ``_meta.profile``) is a ``DataError``: a report never mixes profiles."""
        if system not in self._results:
            path = self.metrics_path(system)
            data = load_json(path)
            check_profile(path, data, self.profile)
            self._results[system] = data
        return self._results[system]

    def seeds(self, system: str) -> list[str]:
        """``system`` and its other seeds that have results, seed 0 first."""
        names = [system, *self.seed_systems.get(system, [])]
        return [s for s in names if self.result(s) is not None]

    def seed_means(self, system: str, metric: str) -> dict[int, float]:
        """{seed: test-set mean of ``metric``} of the system's runs (``<name>_seed<k>`` is
        seed k; the system itself is seed 0)."""
        out = {}
        for s in self.seeds(system):
            v = _mean(self.result(s), metric)
            if v is not None:
                out[seed_of(s)] = v
        return out

    def per_sample(self, system: str) -> dict | None:
        """{metric: (N,)} recomputed from the saved predictions (None without them)."""
        if system not in self._per:
            path = self._find(self.pdir, 1, f"{system}.jsonl")
            if self._targets is None or not path.is_file():
                self._per[system] = None
            else:
                from pointvl.eval.metrics import per_sample_metrics
                from pointvl.io import read_jsonl

                texts = [r["completion"] for r in read_jsonl(path)]
                targets, _, q = self._targets
                self._per[system] = per_sample_metrics(texts, targets[: len(texts)], q)
        return self._per[system]

    # ---------------------------------------------------------------- cells
    def cell(self, system: str, metric: str) -> dict | None:
        """{"mean", "lo", "hi", "std", "n_seeds", "interval"} or None (no run)."""
        runs = self.seeds(system)
        if not runs:
            return None
        if len(runs) == 1:
            r = (self.result(runs[0]) or {}).get(metric)
            if not r or _mean(self.result(runs[0]), metric) is None:
                return None
            return {"mean": r["mean"], "lo": r.get("lo"), "hi": r.get("hi"), "std": None,
                    "n_seeds": 1, "interval": "bootstrap over test samples"}  # fmt: skip
        vals = list(self.seed_means(system, metric).values())
        if not vals:
            return None
        ci = t_interval(vals)
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        lo, hi = clip_to_range(metric, ci["lo"], ci["hi"])
        return {"mean": ci["mean"], "lo": lo, "hi": hi, "std": std,
                "n_seeds": len(vals), "interval": "t over seeds"}  # fmt: skip

    def rows(self, systems: Mapping[str, str], metrics: Sequence[str]) -> dict:
        """{row label: {metric: cell}} for {our system: row label}."""
        return {label: {m: self.cell(s, m) for m in metrics} for s, label in systems.items()}

    # ---------------------------------------------------------------- claims
    def difference(self, a: str, b: str, metric: str) -> dict:
        """A − B with its interval (see the module docstring); keys diff, lo, hi, seeds,
        per_seed, kind ("seeds" | "seeds, B one run" | "one seed" | "no run")."""
        ma, mb = self.seed_means(a, metric), self.seed_means(b, metric)
        if not ma or not mb:
            return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"),
                    "seeds": 0, "per_seed": [], "kind": "no run"}  # fmt: skip
        if len(mb) == 1 and len(ma) > 1:
            only = next(iter(mb.values()))
            mb, kind = {i: only for i in ma}, "seeds, B one run"
        elif len(ma) == 1 and len(mb) > 1:
            only = next(iter(ma.values()))
            ma, kind = {i: only for i in mb}, "seeds, A one run"
        else:
            kind = "seeds"
        d = paired_seed_difference(ma, mb)
        if d["n"] >= 2:
            return {"diff": d["mean"], "lo": d["lo"], "hi": d["hi"], "seeds": d["n"],
                    "per_seed": d["per_seed"], "kind": kind}  # fmt: skip
        return self._one_seed_difference(a, b, metric)

    def _one_seed_difference(self, a: str, b: str, metric: str) -> dict:
        from pointvl.eval.bootstrap import paired_bootstrap

        pa, pb = self.per_sample(self.seeds(a)[0]), self.per_sample(self.seeds(b)[0])
        if pa is None or pb is None or metric not in pa or metric not in pb:
            diff = (_mean(self.result(a), metric) or float("nan")) - (
                _mean(self.result(b), metric) or float("nan")
            )
            return {"diff": diff, "lo": float("nan"), "hi": float("nan"), "seeds": 1,
                    "per_seed": [diff], "kind": "one seed"}  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = paired_bootstrap(pa[metric], pb[metric], n_boot=self.n_boot, seed=self.seed)
        return {"diff": ci.mean, "lo": ci.lo, "hi": ci.hi, "seeds": 1,
                "per_seed": [ci.mean], "kind": "one seed"}  # fmt: skip

    def claim(self, c: Claim, paper: Mapping | None, deltas: Mapping[str, float]) -> dict:
        """The comparison, the paper's difference, the verdict and one sentence."""
        d = self.difference(c.a, c.b, c.metric)
        paper_diff = None
        if paper and c.a in PAPER_ROWS and c.b in PAPER_ROWS:
            pa, pb = ((paper.get(LABELS[x]) or {}).get(c.metric) for x in (c.a, c.b))
            paper_diff = None if pa is None or pb is None else round(pa - pb, 6)
        delta = float(deltas.get(c.metric, DEFAULT_DELTAS.get(c.metric, 0.01)))
        if paper_diff is None:
            v, reason = "ours only", "the paper has no such comparison"
        elif d["kind"] == "one seed":
            v, reason = "inconclusive", "one seed: no seed variance in the interval"
        else:
            v, reason = verdict(d["lo"], d["hi"], paper_diff, delta)
        return {**dataclasses.asdict(c), **d, "paper_diff": paper_diff, "delta": delta,
                "verdict": v, "reason": reason, "sentence": claim_text(c, d, paper_diff, v, reason)}  # fmt: skip


def seed_of(system: str) -> int:
    """``grca_seed2`` -> 2; a name without ``_seed<k>`` is seed 0."""
    m = re.search(r"_seed(\d+)$", system)
    return int(m.group(1)) if m else 0


def short_label(system: str) -> str:
    """A system's label without its note ("GDPO (per-field ...)" -> "GDPO"); the budget-matched
    SFT keeps its qualifier, which is what tells it from SFT."""
    label = LABELS.get(system, system)
    return label if system == "sft_budget" else label.split(" (")[0]


def claim_text(c: Claim, d: Mapping, paper_diff, verdict_: str, reason: str) -> str:
    """ "GRCA − GRPO on KPA-3D (3 seeds): ours +0.04 [+0.01, +0.07] (per seed ...), paper
    +0.04 -> supported (...)"."""
    label = METRIC_LABELS.get(c.metric, c.metric)
    name = {k: short_label(k) for k in (c.a, c.b)}
    how = {"seeds": f"{d['seeds']} seeds, t over per-seed differences",
           "seeds, B one run": f"{d['seeds']} seeds of {name[c.a]} vs one run of {name[c.b]}",
           "seeds, A one run": f"one run of {name[c.a]} vs {d['seeds']} seeds of {name[c.b]}",
           "one seed": "one seed, bootstrap over test samples", "no run": "no run"}[d["kind"]]  # fmt: skip
    if math.isfinite(d["diff"]):
        ci = f" [{d['lo']:+.3f}, {d['hi']:+.3f}]" if math.isfinite(d["lo"]) else ""
        ours = f"ours {d['diff']:+.3f}{ci}"
        if len(d["per_seed"]) > 1:
            ours += " (per seed " + ", ".join(f"{x:+.3f}" for x in d["per_seed"]) + ")"
    else:
        ours = "ours: no run"
    paper = f"paper {paper_diff:+.3f}" if paper_diff is not None else "not in the paper"
    return (
        f"{name[c.a]} − {name[c.b]} on {label} ({how}): {ours}; {paper} -> {verdict_} ({reason})."
    )


# ----------------------------------------------------------------------------- RL acceptance
def validation_curves(log_paths: Sequence[Path], key: str) -> list[tuple[list, list]]:
    """(steps, values) of ``val/<key>`` from each run's log (runs without one are skipped)."""
    from pointvl.io import read_jsonl

    out = []
    for p in log_paths:
        recs = [r for r in read_jsonl(p) if "val/n" in r and r.get(f"val/{key}") is not None]
        if recs:
            out.append(([r["step"] for r in recs], [r[f"val/{key}"] for r in recs]))
    return out


def field_mean_curves(log_paths: Sequence[Path]) -> list[tuple[list, list]]:
    """Validation curves of the mean of the four field rewards (what every arm optimizes)."""
    from pointvl.schema import GEOMETRIC_FIELDS

    per = [validation_curves(log_paths, f"reward/{f}") for f in GEOMETRIC_FIELDS]
    out = []
    for runs in zip(*per):
        steps = runs[0][0]
        out.append((steps, list(np.mean([r[1] for r in runs], axis=0))))
    return out


def rl_acceptance(
    arms: Mapping[str, Sequence[Path]],
    rollout_parse_fail: Mapping[str, Sequence[float]],
    test_field_reward: Mapping[str, list[float]],
) -> dict:
    """The RL issue's acceptance, measured: per arm, the slope of the validation mean field
    reward (per 100 steps; t over seeds with >= 2 seeds, else the run's OLS interval), the
    largest rollout parse-failure rate of any run, and whether the best arm's greedy test
    field reward is at least SFT's."""
    from pointvl.eval.stats import slope_ci

    out: dict = {"arms": {}}
    for arm, logs in arms.items():
        curves = field_mean_curves(logs)
        if not curves:
            continue
        fit = slope_over_seeds(curves) if len(curves) > 1 else slope_ci(*curves[0])
        slope = {k: 100 * fit[k] for k in ("slope", "lo", "hi")}
        pf = list(rollout_parse_fail.get(arm, []))
        out["arms"][arm] = {
            "runs": len(curves),
            "val_field_reward_first": float(np.mean([c[1][0] for c in curves])),
            "val_field_reward_last": float(np.mean([c[1][-1] for c in curves])),
            "val_slope_per_100_steps": slope,
            "slope_above_0": bool(math.isfinite(slope["lo"]) and slope["lo"] > 0),
            "rollout_parse_fail_max": max(pf) if pf else None,
            "parse_fail_below_20pct": bool(pf) and max(pf) < 0.2,
        }
    rl = {a: t_interval(v)["mean"] for a, v in test_field_reward.items() if a != "sft" and v}
    if rl and test_field_reward.get("sft"):
        best = max(rl, key=rl.get)
        sft = float(np.mean(test_field_reward["sft"]))
        out["best_rl_arm"] = {"arm": best, "test_field_reward": rl[best], "sft": sft,
                              "at_least_sft": bool(rl[best] >= sft)}  # fmt: skip
    return out


# ----------------------------------------------------------------------------- report inputs
@dataclasses.dataclass
class ReportConfig:
    """Section ``report`` of params.yaml."""

    systems: list = dataclasses.field(
        default_factory=lambda: ["sft", "sft_budget", "grpo", "gdpo", "grca", "grca_rpc"]
    )
    """Table 3 rows, in order (our system names; see ``pointvl.eval.results.LABELS``)."""
    lambda_systems: dict = dataclasses.field(default_factory=dict)
    """Table 5: λ (as the paper writes it, e.g. "0.15") -> our system name."""
    seed_systems: dict = dataclasses.field(default_factory=dict)
    """System -> its other-seed systems (e.g. grca: [grca_seed1, grca_seed2])."""
    baselines: dict = dataclasses.field(default_factory=dict)
    """Table 2: the paper's row name (e.g. "PointNet") -> our baseline system."""
    claims: list = dataclasses.field(default_factory=list)
    """[a, b, metric] comparisons A − B; those between paper rows get the paper's difference."""
    deltas: dict = dataclasses.field(default_factory=dict)
    """Smallest effect of interest δ per metric, fixed before the runs (``stats.verdict``)."""
    zeroshot: str = "results/metrics/eval/zeroshot.json"
    """Table 1: the zero-shot VLM stage's output (statuses and metrics per paper row)."""
    data_dir: str = "data/{profile}"
    metrics_dir: str = "results/metrics/eval"
    predictions_dir: str = "results/predictions"
    train_logs: str = "results/train/rl_{variant}/log.jsonl"
    """RL logs ({variant} = the system name), for the validation curves and parse failures."""
    base_metrics_dir: str = ""
    """The RL study: a system (or ``trivial.json``) missing from ``metrics_dir`` is read from
    here, the default pipeline's folder (seed 0 of every arm); "" for none."""
    base_predictions_dir: str = ""
    """Likewise for ``predictions_dir``."""
    base_train_logs: str = ""
    """Likewise for ``train_logs``."""
    tables_dir: str = "results/tables"
    figures_dir: str = "results/figures"
    n_boot: int = 1000
    seed: int = 0

    def results(self, profile: str, n_boot: int | None = None) -> Results:
        """The ``Results`` this section describes (folders, seeds, the base folders)."""
        base = (self.base_metrics_dir, self.base_predictions_dir) if self.base_metrics_dir else None
        return Results(self.metrics_dir, self.predictions_dir, self.seed_systems,
                       self.data_dir.format(profile=profile),
                       self.n_boot if n_boot is None else n_boot, self.seed, profile,
                       base=base)  # fmt: skip

    def train_log(self, system: str) -> Path:
        """The system's RL log, from ``train_logs`` or else ``base_train_logs``."""
        base = self.base_train_logs.format(variant=system) if self.base_train_logs else None
        return or_base(self.train_logs.format(variant=system), base)


def zeroshot_rows(path: Path) -> tuple[dict, list[str]]:
    """Table 1's zero-shot rows from the zeroshot stage: ({row: {metric: cell}}, notes).

    A row the stage did not run (no local weights, no GPU) gets no cell, so the table shows
    "no run" beside the paper's number, and a note gives the stage's reason.
    """
    data = load_json(path) or {}
    rows, notes = {}, []
    for name, rec in data.items():
        if name.startswith("_") or not isinstance(rec, dict):
            continue
        cells = {
            m: (rec[m]["mean"], rec[m]["lo"], rec[m]["hi"])
            if isinstance(rec.get(m), dict)
            else None
            for m in ("iou2d", "kpa2d", "parse_fail")
        }
        if any(c is not None for c in cells.values()):
            rows[name] = cells
        else:
            notes.append(f"{name}: the paper's number only; {rec.get('status', 'not run')}.")
    if not data:
        notes.append(f"Zero-shot VLM rows: the paper's numbers only ({path} is missing).")
    return rows, notes
