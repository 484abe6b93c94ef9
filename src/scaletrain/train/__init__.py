"""Training: the loop (`loop.py`), the step it repeats (`step.py`) and their owners.

`run_loop` is the only entry point; `setup.build_trainer` builds what it calls.
"""
