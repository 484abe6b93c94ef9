"""Ensembles: independently trained members (bagging, voting), in parallel, or the cycle
ends of one run (snapshot).

Nothing is imported here: the CLI asks `ensemble.commands` whether a command trains an
ensemble before anything heavy (torch, the trainer) is imported. `runner.train_ensemble` and
`runner.resume_ensemble` are the entry points; `scaletrain.train`/`resume` dispatch to them.
"""
