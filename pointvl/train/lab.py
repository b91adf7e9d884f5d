"""The credit-assignment lab: what routing does, at a scale where the answer is not noise.

A text-only JSON task with K independently verifiable fields, each a function of the prompt::

    prompt      "x: 7 2 9 4\\n"
    completion  {"a": 8, "b": 4, "c": 2, "d": 8}<|im_end|>      field k = (x_k + k + 1) mod 10

A small causal LM (``pointvl.train.tiny.tiny_lm``, random init) is first fit by SFT on
*noisy* targets (each field replaced by a random digit with probability ``sft_noise``), so that
it writes valid JSON and gets each field right about half the time, independently. Then the
real ``RoutedGRPOTrainer`` trains it with one 0/1 reward per field under four arms:

    grpo       r_seq = mean_k r_k, broadcast to every token             (TRL's GRPO)
    gdpo       every r_k standardized in its group, summed, broadcast   (TRL's GDPO)
    grca       Â_k routed to field k's value tokens; background Â_seq   (Eqs. 9-10)
    grca_bg0   Â_k routed; background 0

The held-out expected reward of each field (``eval_samples`` completions per held-out prompt
at the training temperature, fixed seed) is measured every ``eval_every`` steps, so
each arm gets a learning curve with a 95% band over seeds and a "samples to threshold".
``measure_variance`` takes per-completion span scores s_k = Σ_{t∈S_k} ∇θ log π(y_t) on the
real network and compares the measured gradient variance of routed vs broadcast advantages
with Sec. 3.6's decomposition (``pointvl.variance.variance_gap_terms``).

This module is also the worked example of ``RoutedGRPOTrainer`` for a user's own JSON task:
``DigitTask`` is the whole task definition (fields, rewards, spans).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from pointvl.train.routed import FieldScores, RoutedGRPOTrainer, Routing, TaskReward

FIELD_NAMES = "abcdefgh"
ARMS = ("grpo", "gdpo", "grca", "grca_bg0")


# ----------------------------------------------------------------------------- the task
def field_values(digits: Sequence[int]) -> list[int]:
    """The answer of each field: field k = (x_k + k + 1) mod 10."""
    return [(int(x) + k + 1) % 10 for k, x in enumerate(digits)]


def prompt_text(digits: Sequence[int]) -> str:
    return "x: " + " ".join(str(int(d)) for d in digits) + "\n"


def target_text(values: Sequence[int]) -> str:
    return json.dumps({FIELD_NAMES[k]: int(v) for k, v in enumerate(values)})


def make_rows(n: int, num_fields: int, seed: int) -> list[dict]:
    """``n`` task rows: prompt, the K answers."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        digits = rng.integers(0, 10, num_fields).tolist()
        rows.append({"prompt": prompt_text(digits), "answers": field_values(digits)})
    return rows


class DigitTask:
    """The lab's field task: K fields ``a``, ``b``, ...; reward 1 if the value is right.

    A field's span is the character range of its value (the digit after ``"a": ``); a field
    that is missing or written twice has no span and reward 0. Never raises on any text.
    """

    def __init__(self, num_fields: int):
        self.fields = tuple(FIELD_NAMES[:num_fields])
        self._patterns = {f: re.compile(rf'"{f}"\s*:\s*(-?\d+)') for f in self.fields}

    def score(self, completions: Sequence[str], inputs: Sequence[Mapping]) -> FieldScores:
        B, F = len(completions), len(self.fields)
        rewards = np.zeros((B, F))
        spans = []
        for i, (text, row) in enumerate(zip(completions, inputs, strict=True)):
            sp = {}
            for k, f in enumerate(self.fields):
                hits = list(self._patterns[f].finditer(text))
                if len(hits) != 1:
                    sp[f] = None
                    continue
                sp[f] = hits[0].span(1)
                rewards[i, k] = float(int(hits[0].group(1)) == int(row["answers"][k]))
            spans.append(sp)
        ok = np.array([all(v is not None for v in sp.values()) for sp in spans])
        return FieldScores(rewards, spans, {"seq": rewards.mean(1)}, parse_ok=ok)


# ----------------------------------------------------------------------------- config
@dataclasses.dataclass
class LabConfig:
    """Section ``credit_lab`` of params.yaml."""

    num_fields: int = 4
    """K, independently verifiable fields (>= 4)."""
    arms: tuple[str, ...] = ARMS
    """Arms compared (a subset of ``ARMS``); ``grpo`` is the reference of the ratios."""
    seeds: int = 10
    """RL seeds per arm (the SFT base is shared)."""
    sft_steps: int = 800
    """SFT steps of the base model (batch ``sft_batch``)."""
    sft_batch: int = 32
    sft_lr: float = 3e-3
    sft_noise: float = 0.4
    """Probability that a field of an SFT target is replaced by a random digit."""
    rl_steps: int = 32
    """RL optimizer steps per run."""
    prompts_per_step: int = 4
    num_generations: int = 8
    """G."""
    learning_rate: float = 1e-3
    temperature: float = 1.0
    eval_every: int = 4
    """Held-out expected reward every N steps (and at step 0)."""
    eval_prompts: int = 64
    eval_samples: int = 4
    """Completions per held-out prompt (sampled at ``temperature``, fixed seed)."""
    threshold: float = 0.8
    """Held-out mean field accuracy that defines "samples to threshold" (fixed before runs)."""
    variance_samples: int = 256
    """Completions sampled for the gradient-variance measurement."""
    hidden: int = 64
    layers: int = 2
    vocab_size: int = 300
    workers: int = 2
    """Processes running seeds in parallel (one thread each)."""
    seed: int = 0
    out_dir: str = "results/credit_lab"

    def validate(self) -> None:
        from pointvl.config import ConfigError

        if not 4 <= self.num_fields <= len(FIELD_NAMES):
            raise ConfigError(f"credit_lab.num_fields={self.num_fields}: expected 4..8")
        bad = sorted(set(self.arms) - set(ARMS))
        if bad or not self.arms:
            raise ConfigError(f"credit_lab.arms: unknown {bad}; accepted {ARMS}")
        if self.seeds < 2 or self.rl_steps < 1 or self.num_generations < 2:
            raise ConfigError(
                f"credit_lab.seeds={self.seeds}, rl_steps={self.rl_steps}, num_generations="
                f"{self.num_generations}: expected >= 2, >= 1, >= 2"
            )
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"credit_lab.threshold={self.threshold}: expected in (0, 1]")


# ----------------------------------------------------------------------------- model + SFT
def build_tokenizer(cfg: LabConfig):
    from pointvl.model.tokenizer import train_bpe_tokenizer

    rows = make_rows(2000, cfg.num_fields, seed=12345)
    texts = [r["prompt"] + target_text(r["answers"]) for r in rows]
    return train_bpe_tokenizer(texts, vocab_size=cfg.vocab_size)


def _encode(tok, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"] + [
        tok.convert_tokens_to_ids("<|im_end|>")
    ]
    return p + c, [-100] * len(p) + c


def train_base(cfg: LabConfig, tok) -> dict[str, torch.Tensor]:
    """SFT on noisy targets -> the base policy's state dict (shared by every arm and seed)."""
    from pointvl.train.tiny import tiny_lm

    torch.manual_seed(cfg.seed)
    model = tiny_lm(tok, hidden=cfg.hidden, layers=cfg.layers, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr)
    pad = tok.pad_token_id
    model.train()
    for _ in range(cfg.sft_steps):
        ids, labels = [], []
        for r in make_rows(cfg.sft_batch, cfg.num_fields, int(rng.integers(2**31))):
            noisy = [
                int(rng.integers(10)) if rng.random() < cfg.sft_noise else v for v in r["answers"]
            ]
            x, y = _encode(tok, r["prompt"], target_text(noisy))
            ids.append(x)
            labels.append(y)
        L = max(map(len, ids))
        x = torch.tensor([i + [pad] * (L - len(i)) for i in ids])  # (b, L) right-padded
        y = torch.tensor([i + [-100] * (L - len(i)) for i in labels])  # (b, L)
        loss = model(input_ids=x, attention_mask=(x != pad) | (y != -100), labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_policy(cfg: LabConfig, tok, state: Mapping[str, torch.Tensor]):
    from pointvl.train.tiny import tiny_lm

    model = tiny_lm(tok, hidden=cfg.hidden, layers=cfg.layers, seed=cfg.seed)
    model.load_state_dict(state)
    return model


# ----------------------------------------------------------------------------- evaluation
def prompt_batch(tok, rows: Sequence[Mapping]) -> dict[str, torch.Tensor]:
    """Left-padded prompts of ``rows``."""
    prompts = [tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in rows]
    L = max(map(len, prompts))
    return {
        "input_ids": torch.tensor([[tok.pad_token_id] * (L - len(p)) + p for p in prompts]),
        "attention_mask": torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts]),
    }


def lab_sampling(tok, temperature: float, do_sample: bool = True):
    from pointvl.eval.generate import Sampling

    end = tok.convert_tokens_to_ids("<|im_end|>")
    return Sampling(
        max_new_tokens=40, eos_token_ids=(end, tok.eos_token_id), pad_token_id=tok.pad_token_id,
        do_sample=do_sample, temperature=temperature,
    )  # fmt: skip


@torch.no_grad()
def held_out_reward(
    model, tok, rows: Sequence[Mapping], task: DigitTask, temperature: float, k: int, seed: int
) -> np.ndarray:
    """Expected reward of each field on held-out prompts, (F,): ``k`` completions per prompt
    sampled at the training temperature from a fixed seed in a forked RNG."""
    from pointvl.eval.generate import decode

    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ids = decode(model, prompt_batch(tok, rows), lab_sampling(tok, temperature), k).ids
    model.train(was_training)
    texts = tok.batch_decode(ids, skip_special_tokens=True)
    return task.score(texts, [r for r in rows for _ in range(k)]).rewards.mean(0)  # (F,)


# ----------------------------------------------------------------------------- one RL run
def arm_setup(arm: str, task, num_fields: int) -> dict:
    """reward functions, TRL aggregation and routing of an arm."""
    seq = [TaskReward(task, "seq")]
    setups = {
        "grpo": dict(funcs=seq, agg="sum_then_normalize", routing=Routing(enabled=False)),
        "gdpo": dict(
            funcs=[TaskReward(task, f) for f in task.fields],
            agg="normalize_then_sum",
            routing=Routing(enabled=False),
        ),
        "grca": dict(funcs=seq, agg="sum_then_normalize", routing=Routing(background="trl")),
        "grca_bg0": dict(funcs=seq, agg="sum_then_normalize", routing=Routing(background="zero")),
    }
    return setups[arm]


def _grpo_args(cfg: LabConfig, agg: str, seed: int, out_dir: str):
    """TRL's ``GRPOConfig`` of one lab run: CPU, constant LR, no KL, no checkpoints;
    ``prompts_per_step * num_generations`` completions per step, aggregated by ``agg``."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        num_generations=cfg.num_generations,
        max_completion_length=40,
        temperature=cfg.temperature,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        max_steps=cfg.rl_steps,
        multi_objective_aggregation=agg,
        loss_type="grpo",
        beta=0.0,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=cfg.rl_steps,
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
    )


def _held_out_callback(cfg: LabConfig, model, tok, held_out, task, curve: list) -> object:
    """A ``TrainerCallback`` appending (samples seen, held-out reward (F,)) to ``curve``
    before the first step and every ``eval_every`` steps (and after the last)."""
    from transformers import TrainerCallback

    per_step = cfg.prompts_per_step * cfg.num_generations

    class HeldOut(TrainerCallback):
        def measure(self, step):
            r = held_out_reward(model, tok, held_out, task, cfg.temperature, cfg.eval_samples, 7)
            curve.append((step * per_step, r))

        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == 0 and not curve:
                self.measure(0)

        def on_step_end(self, a, state, control, **kw):
            if state.global_step % cfg.eval_every == 0 or state.global_step == cfg.rl_steps:
                self.measure(state.global_step)

    return HeldOut()


def run_arm(cfg: LabConfig, tok, base, arm: str, seed: int, out_dir: str) -> dict:
    """One RL run; returns its held-out accuracy curve {"samples", "accuracy" (E, F)}."""
    from datasets import Dataset

    task = DigitTask(cfg.num_fields)
    held_out = make_rows(cfg.eval_prompts, cfg.num_fields, seed=999_999)
    train_rows = make_rows(
        cfg.rl_steps * cfg.prompts_per_step * 2, cfg.num_fields, seed=1000 + seed
    )
    model = load_policy(cfg, tok, base)
    setup = arm_setup(arm, task, cfg.num_fields)
    args = _grpo_args(cfg, setup["agg"], seed, out_dir)
    curve: list[tuple[int, np.ndarray]] = []  # (samples seen, held-out reward (F,))
    trainer = RoutedGRPOTrainer(
        model=model,
        reward_funcs=setup["funcs"],
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        processing_class=tok,
        task=task,
        routing=setup["routing"],
        callbacks=[_held_out_callback(cfg, model, tok, held_out, task, curve)],
    )
    trainer.train()
    return {
        "arm": arm,
        "seed": seed,
        "samples": [c[0] for c in curve],
        "accuracy": [c[1].tolist() for c in curve],
    }


# ----------------------------------------------------------------------------- variance
def measure_variance(cfg: LabConfig, tok, base, n: int | None = None, seed: int = 0) -> dict:
    """Sec. 3.6 on the real network: per-completion span scores s_k, routed A_k, broadcast
    A_b = Â_seq, R_k = A_b − A_k; ``variance_gap_terms`` per field and averaged."""
    from pointvl.credit import standardize_in_groups
    from pointvl.eval.generate import decode
    from pointvl.spans import TokenLengths
    from pointvl.train.routed import token_membership
    from pointvl.variance import variance_gap_terms

    n = n or cfg.variance_samples
    G = cfg.num_generations
    task = DigitTask(cfg.num_fields)
    model = load_policy(cfg, tok, base)
    rows = make_rows(n // G, cfg.num_fields, seed=4242 + seed)
    torch.manual_seed(seed)
    prompts = [tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in rows]
    ids = decode(model, prompt_batch(tok, rows), lab_sampling(tok, cfg.temperature), G).ids
    texts = tok.batch_decode(ids, skip_special_tokens=True)
    expanded = [r for r in rows for _ in range(G)]
    scores = task.score(texts, expanded)
    field_adv = standardize_in_groups(scores.rewards, G).numpy()  # (n, F)
    seq_adv = standardize_in_groups(scores.columns["seq"], G).numpy()  # (n,)
    table = TokenLengths(tok)
    T = max(map(len, ids))
    member = token_membership(
        scores.spans, [table.offsets(r, t) for r, t in zip(ids, texts)], task.fields, T
    )  # (n, T, F)
    params = [p for p in model.parameters() if p.requires_grad]
    s = np.zeros((len(ids), len(task.fields), sum(p.numel() for p in params)))  # (n, F, D)
    for i, (p_ids, c_ids) in enumerate(zip([prompts[j // G] for j in range(len(ids))], ids)):
        x = torch.tensor([p_ids + c_ids])
        logits = model(input_ids=x).logits[0, len(p_ids) - 1 : -1] / cfg.temperature  # (T_i, V)
        logp = torch.log_softmax(logits, -1).gather(1, torch.tensor(c_ids)[:, None])[:, 0]
        for k in range(len(task.fields)):
            on = member[i, : len(c_ids), k]
            if on.any():
                grads = torch.autograd.grad(logp[on].sum(), params, retain_graph=True)
                s[i, k] = torch.cat([g.reshape(-1) for g in grads]).numpy()
    out = {"fields": {}, "n": len(ids)}
    for k, f in enumerate(task.fields):
        gap = variance_gap_terms(field_adv[:, k], seq_adv - field_adv[:, k], s[:, k])
        out["fields"][f] = dataclasses.asdict(gap)
    for key in ("V_b", "V_r", "measured", "predicted", "correction"):
        out[key] = float(np.mean([g[key] for g in out["fields"].values()]))
    return out


# ----------------------------------------------------------------------------- statistics
def samples_to_threshold(samples: Sequence[int], mean_acc: Sequence[float], threshold: float):
    """First sample count where the held-out mean accuracy reaches ``threshold`` (linear
    interpolation between evaluations); None if it never does (censored)."""
    for j, (x, y) in enumerate(zip(samples, mean_acc)):
        if y >= threshold:
            if j == 0:
                return float(x)
            x0, y0 = samples[j - 1], mean_acc[j - 1]
            return float(x0 + (threshold - y0) / (y - y0) * (x - x0))
    return None


def t_interval(values: Sequence[float]) -> dict:
    """Mean and 95% Student-t interval over seeds, as {"mean", "ci_lo", "ci_hi", "n"}."""
    from pointvl.eval.stats import t_interval as t

    ci = t(values)
    return {"mean": ci["mean"], "ci_lo": ci["lo"], "ci_hi": ci["hi"], "n": ci["n"]}


def ratio_ci(num: Sequence[float], den: Sequence[float], n_boot=4000, seed=0) -> dict:
    """Ratio of means (num / den) with a 95% percentile bootstrap CI over paired seeds."""
    a, b = np.asarray(num, float), np.asarray(den, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n_boot, len(a)))
    boots = a[idx].mean(1) / b[idx].mean(1)
    return {
        "mean": float(a.mean() / b.mean()),
        "ci_lo": float(np.quantile(boots, 0.025)),
        "ci_hi": float(np.quantile(boots, 0.975)),
        "n": len(a),
    }


def summarize(cfg: LabConfig, runs: Sequence[dict]) -> dict:
    """The ``summary.json`` of the issue: per arm, final held-out reward and samples to
    threshold (t-interval over seeds; a run that never reaches the threshold counts at its
    full budget, and ``censored`` says how many did), plus GRCA/GRPO sample ratios."""
    budget = cfg.rl_steps * cfg.prompts_per_step * cfg.num_generations
    arms: dict[str, dict] = {}
    to_thr: dict[str, dict[int, float]] = {}
    for arm in cfg.arms:
        mine = sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"])
        finals = [float(np.mean(r["accuracy"][-1])) for r in mine]
        hits = {}
        censored = 0
        for r in mine:
            curve = [float(np.mean(a)) for a in r["accuracy"]]
            x = samples_to_threshold(r["samples"], curve, cfg.threshold)
            censored += x is None
            hits[r["seed"]] = x if x is not None else float(budget)
        to_thr[arm] = hits
        arms[arm] = {
            "seeds": len(mine),
            "final_reward": t_interval(finals),
            "samples_to_threshold": {**t_interval(list(hits.values())), "censored": censored},
        }
    ratios = {}
    for arm in cfg.arms:
        if arm != "grpo" and "grpo" in to_thr:
            common = sorted(set(to_thr[arm]) & set(to_thr["grpo"]))
            ratios[f"{arm}/grpo"] = ratio_ci(
                [to_thr[arm][s] for s in common], [to_thr["grpo"][s] for s in common]
            )
    return {
        "arms": arms,
        "threshold": cfg.threshold,
        "samples_budget": budget,
        "samples_to_threshold_ratio": ratios,
    }


# ----------------------------------------------------------------------------- the whole lab
def _worker(payload) -> list[dict]:
    cfg, jobs, base, tok_dir, out_dir = payload
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    out = []
    for arm, seed in jobs:
        t0 = time.perf_counter()
        r = run_arm(cfg, tok, base, arm, seed, f"{out_dir}/{arm}_{seed}")
        r["wall_s"] = time.perf_counter() - t0
        out.append(r)
    return out


def run_lab(cfg: LabConfig, work_dir: str, progress: bool = True) -> tuple[list[dict], dict]:
    """Base SFT, every (arm, seed) run on ``cfg.workers`` processes, and the variance
    measurement. Returns (runs, variance)."""
    import multiprocessing as mp

    from tqdm.auto import tqdm

    tok = build_tokenizer(cfg)
    tok_dir = f"{work_dir}/tokenizer"
    tok.save_pretrained(tok_dir)
    base = train_base(cfg, tok)
    variance = measure_variance(cfg, tok, base)
    jobs = [(arm, s) for s in range(cfg.seeds) for arm in cfg.arms]
    shards = [jobs[w :: cfg.workers] for w in range(cfg.workers)]
    shards = [[j] for shard in shards for j in shard]  # one job per task: a live progress bar
    runs: list[dict] = []
    payloads = [(cfg, s, base, tok_dir, work_dir) for s in shards]
    bar = tqdm(total=len(shards), desc="credit lab runs", disable=not progress)
    if cfg.workers <= 1:
        for p in payloads:
            runs += _worker(p)
            bar.update()
    else:
        with mp.get_context("spawn").Pool(cfg.workers) as pool:
            for out in pool.imap_unordered(_worker, payloads):
                runs += out
                bar.update()
    bar.close()
    runs.sort(key=lambda r: (r["arm"], r["seed"]))
    return runs, variance
