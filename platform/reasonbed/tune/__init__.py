"""Hyperparameter search over LODO splits with Ray Tune + Optuna, honest selection and records."""
