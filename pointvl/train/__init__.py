"""pointvl.train: SFT warm-up and GRPO / GRCA / GRCA+RPC on TRL (Secs. 3.2-3.5).

- ``grca_trainer.GRCATrainer(GRPOTrainer)``: per-token advantages from
  ``pointvl.credit.ADVANTAGE_BUILDERS[variant]``; point clouds through generation and every
  log-prob recomputation; ``MetricsLogger`` (JSON lines + CSV).
- ``sft``: completion-only SFT on transformers' ``Trainer``, resumable checkpoints.
- ``rl``: dataset rows and extra inputs of the PointVL policy, ``GRPOConfig`` of the recipe.
- ``config``: ``SFTConfig`` / ``RLConfig`` (sections ``sft`` / ``rl`` of params.yaml).
- ``tiny``: an offline tokenizer + random LM + rows for tests and benchmarks.
"""
