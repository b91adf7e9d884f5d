"""pointvl.train: SFT warm-up and the RL arms on TRL (Secs. 3.2-3.5).

- ``routed.RoutedGRPOTrainer(GRPOTrainer)``: per-field advantages routed to their tokens for
  any structured-output task (a ``FieldTask``); TRL's GRPO / GDPO are its reductions.
- ``pointcloud.PointCloudInputs``: a policy's extra inputs (point clouds, images) through
  the rollouts (``pointvl.eval.generate.decode``, the evaluation sampler) and every log-prob
  pass; on-policy by construction.
- ``grca_trainer.GRCATrainer``: the two together with our JSON task (``GeometryTask``); the
  arms ``grpo``, ``gdpo``, ``grca``, ``grca_bg0``, ``grca_rpc`` differ in rewards and routing.
- ``validation.ValidationSampler``: sampled rewards on fixed validation prompts during RL.
- ``logs.MetricsLogger``: JSON lines + CSV, never replacing a complete log before success.
- ``sft``: completion-only SFT on transformers' ``Trainer``, resumable checkpoints.
- ``rl``: dataset rows and extra inputs of the PointVL policy, ``GRPOConfig`` of the recipe.
- ``config``: ``SFTConfig`` / ``RLConfig`` (sections ``sft`` / ``rl`` of params.yaml).
- ``tiny``: an offline tokenizer + random LM + rows for tests and benchmarks.
"""
