"""Hyperparameter search on Optuna (`scaletrain tune`) and the learning-rate range test
(`scaletrain lr-find`). Imports nothing here: `import scaletrain` binds this package."""
