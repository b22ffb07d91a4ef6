"""RL fine-tuning with domain-knowledge rewards: GRPO as a worker step of the shared training loop.

- `grpo`: advantages and the clipped-ratio + KL loss (pure torch);
- `step`: `GRPOStep`, the method's worker step (rollouts from an engine of the engine registry,
  rewards, advantages, the policy update through the shared optimizer step).
The options are `reasonbed.methods.grpo.GRPOConfig`; the rewards live in `reasonbed.rewards`; the
loop, checkpoints, evaluation and the run directory are `reasonbed.train`'s, as for every method.
"""
