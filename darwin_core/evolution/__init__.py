"""Evolution: the config (`config.py`) and its tasks (`tasks.py`), the ask/tell CMA-ES loop (`search.py`) and what it writes
(`records.py`), the model problem (`problem.py`) over the resident child (`child.py`), the held-out report (`report.py`),
the fitness curves (`curves.py`) and the pipeline that runs them (`pipeline.py`, which re-exports the public names)."""
