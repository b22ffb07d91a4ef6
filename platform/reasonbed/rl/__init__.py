"""RL fine-tuning with domain-knowledge rewards: GRPO on Ray Train with vLLM (or transformers) rollouts.

- `grpo`: advantages, per-token log-probs and the clipped-ratio + KL loss (pure torch);
- `rollout`: the rollout engines (a vLLM Ray actor synced with the adapter every step; HF fallback);
- `step`: one GRPO step on a worker (rollouts, rewards, update), usable without Ray;
- `loop`: the Ray Train worker loop (checkpoints, resume, evaluation);
- `driver`: `run_grpo(cfg)`, the job, writing the run directory.
The options are `reasonbed.methods.grpo.GRPOConfig`; the rewards live in `reasonbed.rewards`.
"""
