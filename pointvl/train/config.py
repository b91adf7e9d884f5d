"""Sections ``sft`` and ``rl`` of params.yaml: one dataclass each, a docstring per field.

``validate()`` checks values (called by ``pointvl.config.load_section``); ``check_inputs``
checks what the run reads from disk (dataset profile, SFT checkpoint). Both raise
``ConfigError`` naming the field and the accepted values, before any work is done.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pointvl.config import PROFILES, ConfigError, TokenBudget, check_unit_interval
from pointvl.credit import ADVANTAGE_BUILDERS, BACKGROUND_MODES

PROMPT_SHARING = ("none", "encoders", "prefix")
"""What an RL loss pass computes once per prompt for its G rows (``rl.prompt_sharing``)."""

RL_VARIANTS = (*ADVANTAGE_BUILDERS, "sft_budget")
"""``grpo`` | ``grca`` | ``grca_rpc`` (advantage builders) and ``sft_budget`` (SFT continued)."""
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
COMPLETE_MARKER = "COMPLETE"


def check_dataset(section: str, data_dir: str, profile: str | None) -> dict:
    """``data_dir`` must be a built dataset (manifest.json) of ``profile``; returns the manifest."""
    manifest_path = Path(data_dir) / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(
            f"{section}.data_dir={data_dir!r}: no manifest.json there (build the dataset first: "
            "dvc repro build_dataset)"
        )
    manifest = json.loads(manifest_path.read_text())
    got = manifest.get("profile")
    if profile is not None and got is not None and got != profile:
        raise ConfigError(
            f"{section}.data_dir={data_dir!r} holds a dataset of profile {got!r}, but this run's "
            f"profile is {profile!r}; accepted: a data_dir built with profile {profile!r} "
            f"(one of {PROFILES})"
        )
    return manifest


@dataclasses.dataclass
class SFTConfig:
    """Section ``sft``: supervised warm-up on the target JSON (Eq. 5), completion-only loss."""

    data_dir: str = "data/{profile}"
    """Built dataset (``build_dataset`` output) whose train split is used."""
    tokenizer_dir: str = "models/{profile}/tokenizer"
    """The ``train_tokenizer`` stage's output (BPE for tiny/smoke, Qwen's + point token for paper)."""
    out_dir: str = "checkpoints/{profile}/sft"
    """Run folder: ``checkpoint-N/`` (resumable) and ``final/`` (model + processor)."""
    epochs: float = 2.0
    """Passes over the train split (paper: 2); ignored when ``max_steps`` > 0."""
    max_steps: int = -1
    """Optimizer steps; -1 = from ``epochs``."""
    max_train_samples: int = 0
    """Use only the first N train samples (0 = all)."""
    per_device_batch_size: int = 32
    """Samples per device per micro-batch."""
    grad_accum: int = 1
    """Gradient accumulation steps (global batch = devices x per_device x accum; paper: 128)."""
    learning_rate: float = 2e-5
    """Peak learning rate of AdamW (paper: 2e-5)."""
    min_lr_rate: float = 0.1
    """Cosine schedule ends at learning_rate x min_lr_rate (paper: 2e-5 -> 2e-6)."""
    warmup_ratio: float = 0.03
    """Fraction of steps of linear warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    qa_mode: str = "rotate"
    """Which QA pair of each object a sample uses (``pointvl.data.dataset.QA_MODES``)."""
    save_steps: int = 200
    """Write a resumable checkpoint every N optimizer steps."""
    save_total_limit: int = 2
    """Keep at most this many checkpoints."""
    logging_steps: int = 10
    """Log every N steps (JSON lines + CSV under ``log_dir``)."""
    log_dir: str = "results/train/sft"
    """Where ``log.jsonl`` / ``log.csv`` go (DVC plots read the CSV)."""
    metrics: str = "results/metrics/sft.json"
    """Final metrics of the stage."""
    bf16: bool = False
    """bfloat16 mixed precision (GPU profiles)."""
    gradient_checkpointing: bool = False
    """Activation checkpointing (paper profile)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    seed: int = 0
    """Seeds model init, data order and dropout."""

    def validate(self) -> None:
        if not (self.max_steps == -1 or self.max_steps >= 1):
            raise ConfigError(
                f"sft.max_steps={self.max_steps}: expected -1 (from epochs) or an integer >= 1"
            )
        if not (self.epochs > 0 or self.max_steps > 0):
            raise ConfigError(
                f"sft.epochs={self.epochs}, sft.max_steps={self.max_steps}: one must be > 0"
            )
        for name in ("save_steps", "save_total_limit", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"sft.{name}={getattr(self, name)}: expected an integer >= 1")
        for name in ("max_train_samples", "num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"sft.{name}={getattr(self, name)}: expected an integer >= 0")
        if not 0.0 <= self.warmup_ratio < 1.0 or self.weight_decay < 0:
            raise ConfigError(
                f"sft.warmup_ratio={self.warmup_ratio}, sft.weight_decay={self.weight_decay}: "
                "expected a ratio in [0, 1) and a decay >= 0"
            )
        if self.learning_rate <= 0:
            raise ConfigError(f"sft.learning_rate={self.learning_rate}: expected > 0")
        if not 0.0 <= self.min_lr_rate <= 1.0:
            raise ConfigError(f"sft.min_lr_rate={self.min_lr_rate}: expected a number in [0, 1]")
        if self.per_device_batch_size < 1 or self.grad_accum < 1:
            raise ConfigError(
                f"sft.per_device_batch_size={self.per_device_batch_size}, "
                f"sft.grad_accum={self.grad_accum}: expected >= 1"
            )
        from pointvl.data.dataset import QA_MODES

        if self.qa_mode not in QA_MODES:
            raise ConfigError(f"sft.qa_mode={self.qa_mode!r}: accepted values are {QA_MODES}")

    def check_inputs(self, profile: str | None) -> dict:
        if not (Path(self.tokenizer_dir) / "tokenizer_config.json").is_file():
            raise ConfigError(
                f"sft.tokenizer_dir={self.tokenizer_dir!r}: no tokenizer there; run the "
                "train_tokenizer stage first (dvc repro train_tokenizer)"
            )
        return check_dataset("sft", self.data_dir, profile)

    def resolved(self, profile: str) -> SFTConfig:
        """Copy with ``{profile}`` filled in the path fields."""
        return _fill(self, profile=profile)


@dataclasses.dataclass
class RLConfig:
    """Section ``rl``: GRPO / GRCA / GRCA+RPC from the SFT checkpoint, or budget-matched SFT."""

    variant: str = "grca"
    """``grpo`` (broadcast r_seq), ``gdpo`` (per-field normalize-then-sum, broadcast; ours),
    ``grca`` (routed, Eqs. 9-10), ``grca_bg0`` (routed, background 0; ours), ``grca_rpc``
    (+ RPC, Eq. 14) or ``sft_budget`` (SFT continued for the same steps x samples, Table 3)."""
    sft_checkpoint: str = "checkpoints/{profile}/sft/final"
    """The SFT model every variant starts from."""
    data_dir: str = "data/{profile}"
    """Built dataset whose train split provides the prompts."""
    out_dir: str = "checkpoints/{profile}/rl/{variant}"
    """Run folder (``{variant}`` is filled in)."""
    num_generations: int = 8
    """G: completions per prompt (paper: 8)."""
    prompts_per_step: int = 2
    """Prompts per optimizer step per device (rows = prompts x G)."""
    grad_accum: int = 1
    """Gradient accumulation steps."""
    max_steps: int = 100
    """Optimizer steps (the same for every variant, including ``sft_budget``)."""
    max_completion_length: TokenBudget = 512
    """Generation length cap (tokens); ``auto``: the longest valid target + end of turn + a
    margin (``pointvl.budget``); an integer is checked against it when the stage starts."""
    temperature: float = 1.0
    """Sampling temperature (log-probs use the same)."""
    learning_rate: float = 1e-6
    """AdamW learning rate, constant (paper: 1e-6)."""
    epsilon: float = 0.2
    """Clip range ε of Eq. (16) (paper: 0.2)."""
    beta: float = 0.0
    """KL coefficient to the SFT reference (0: no reference model)."""
    loss_type: str = "grpo"
    """Aggregation of the per-token loss: ``grpo`` = Eq. (16) (TRL: grpo, bnpo, dr_grpo, dapo)."""
    lam: float = 0.15
    """λ of Eq. (14), RPC mixing weight, in [0, 1] (grca_rpc only; paper's best 0.15)."""
    background: str = "seq"
    """Eq. (10b) [reconstruction]: background advantage ``seq`` (Â_seq) or ``zero``."""
    keypoint_reward: str = "kpa"
    """``kpa`` (the paper's containment reward) or ``matched`` (Hungarian soft PCK, which
    collapsing keypoints cannot win; ours, ``pointvl.rewards.matched_keypoint_reward``)."""
    mask_truncated_completions: bool = True
    """Completions cut at ``max_completion_length`` get no loss (TRL's option)."""
    val_prompts: int = 32
    """Validation prompts sampled during RL (from the val split carved from train; 0: none)."""
    val_every: int = 10
    """Sample the validation prompts every N optimizer steps (and before the first)."""
    val_generations: int = 4
    """Completions per validation prompt."""
    logprob_chunk_tokens: int = 0
    """> 0: RL log-probs from hidden states with the LM head applied this many tokens at a
    time (no (B, T, V) logits; the paper's vocabulary); 0: the ordinary forward."""
    prompt_sharing: str = "encoders"
    """What a loss pass computes once per prompt for its G completions: ``encoders`` (the
    point cloud and the image), ``prefix`` (those and the prompt's tokens: the completions run
    on its KV cache, ``pointvl.train.shared_prompt``; equal to float rounding; one process,
    no gradient checkpointing) or ``none`` (every row in full, as stock TRL). A policy without
    extra inputs (a text-only model) takes TRL's own pass whatever this says. The committed
    runs use ``encoders``."""
    max_train_prompts: int = 0
    """Use only the first N train samples as prompts (0 = all)."""
    qa_mode: str = "rotate"
    """Which QA pair of each object a prompt uses."""
    sft_budget_lr: float = 2e-6
    """sft_budget only: constant learning rate of the continued SFT (the SFT schedule's end)."""
    save_steps: int = 50
    """Write a resumable checkpoint every N optimizer steps."""
    save_total_limit: int = 2
    """Keep at most this many checkpoints."""
    logging_steps: int = 1
    """Log every N steps."""
    log_dir: str = "results/train/rl_{variant}"
    """Where ``log.jsonl`` / ``log.csv`` go (``{variant}`` is filled in)."""
    metrics: str = "results/metrics/rl_{variant}.json"
    """Final metrics of the stage (``{variant}`` is filled in)."""
    bf16: bool = False
    """bfloat16 mixed precision (GPU profiles)."""
    gradient_checkpointing: bool = False
    """Activation checkpointing (paper profile)."""
    seed: int = 0
    """Seeds sampling and data order (the same for every variant)."""

    def validate(self) -> None:
        if self.variant not in RL_VARIANTS:
            raise ConfigError(f"rl.variant={self.variant!r}: accepted values are {RL_VARIANTS}")
        check_unit_interval("rl.lam", float(self.lam))
        if self.num_generations < 2:
            raise ConfigError(
                f"rl.num_generations={self.num_generations}: group size G must be >= 2 "
                "(Eq. 9 standardizes inside a group)"
            )
        if self.background not in BACKGROUND_MODES:
            raise ConfigError(
                f"rl.background={self.background!r}: accepted values are {BACKGROUND_MODES}"
            )
        from pointvl.rewards import KEYPOINT_REWARDS

        if self.keypoint_reward not in KEYPOINT_REWARDS:
            raise ConfigError(
                f"rl.keypoint_reward={self.keypoint_reward!r}: accepted values are "
                f"{KEYPOINT_REWARDS}"
            )
        if self.val_prompts < 0 or self.val_every < 1 or self.val_generations < 1:
            raise ConfigError(
                f"rl.val_prompts={self.val_prompts}, rl.val_every={self.val_every}, "
                f"rl.val_generations={self.val_generations}: expected >= 0, >= 1, >= 1"
            )
        if self.prompt_sharing not in PROMPT_SHARING:
            raise ConfigError(
                f"rl.prompt_sharing={self.prompt_sharing!r}: accepted values are {PROMPT_SHARING}"
            )
        if self.prompt_sharing == "prefix" and self.gradient_checkpointing:
            raise ConfigError(
                "rl.prompt_sharing='prefix' needs the prompt's KV cache, which "
                "rl.gradient_checkpointing=true turns off: use 'encoders' with it"
            )
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"rl.loss_type={self.loss_type!r}: accepted values are {LOSS_TYPES}")
        if self.beta < 0:
            raise ConfigError(f"rl.beta={self.beta}: expected >= 0")
        if not 0.0 < self.epsilon < 1.0:
            raise ConfigError(f"rl.epsilon={self.epsilon}: expected a number in (0, 1)")
        if self.max_steps < 1 or self.prompts_per_step < 1 or self.grad_accum < 1:
            raise ConfigError(
                f"rl.max_steps={self.max_steps}, rl.prompts_per_step={self.prompts_per_step}, "
                f"rl.grad_accum={self.grad_accum}: expected >= 1"
            )
        if self.learning_rate <= 0 or self.sft_budget_lr <= 0:
            raise ConfigError(
                f"rl.learning_rate={self.learning_rate}, rl.sft_budget_lr={self.sft_budget_lr}: "
                "expected > 0"
            )
        if not self.temperature > 0:  # 0 would divide the logits by zero in TRL
            raise ConfigError(f"rl.temperature={self.temperature}: expected a number > 0")
        for name in ("save_steps", "save_total_limit", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"rl.{name}={getattr(self, name)}: expected an integer >= 1")

    def check_inputs(self, profile: str | None) -> dict:
        ckpt = Path(self.sft_checkpoint)
        if not (ckpt / "config.json").is_file():
            raise ConfigError(
                f"rl.sft_checkpoint={self.sft_checkpoint!r}: no model there (config.json "
                "missing); run the sft stage first (dvc repro sft)"
            )
        return check_dataset("rl", self.data_dir, profile)

    def resolved(self, profile: str) -> RLConfig:
        """Copy with ``{profile}`` and ``{variant}`` filled in the path fields."""
        return _fill(self, profile=profile, variant=self.variant)


PATH_FIELDS = ("data_dir", "tokenizer_dir", "sft_checkpoint", "out_dir", "log_dir", "metrics")


def _fill(cfg, **values):
    """Fill ``{profile}`` / ``{variant}`` in the path fields of a config dataclass."""
    fill = {}
    for f in PATH_FIELDS:
        v = getattr(cfg, f, None)
        if isinstance(v, str):
            try:
                fill[f] = v.format(**values)
            except KeyError as e:
                raise ConfigError(
                    f"{f}={v!r}: unknown placeholder {e}; accepted: {sorted(values)}"
                ) from None
    return dataclasses.replace(cfg, **fill)
