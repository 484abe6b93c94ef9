"""Ensembles of independently trained members (bagging, voting), trained in parallel."""

from scaletrain.ensemble.dispatch import resume, train
from scaletrain.ensemble.runner import resume_ensemble, train_ensemble

__all__ = ["resume", "resume_ensemble", "train", "train_ensemble"]
