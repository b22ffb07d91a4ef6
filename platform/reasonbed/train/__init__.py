"""Fine-tuning on Ray Train: one worker loop for every method, checkpoints, resume, evaluation."""
