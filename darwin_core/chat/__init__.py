"""Talking to a run's models before publishing: the child, any candidate the search measured, or a parent.

`models.py` says which models a run offers and loads one (a candidate is bred in memory from its recorded
genome, the same merge path the search used); `answer.py` turns one prompt into each model's answer with the
father's chat template. The page queues this as a job of the worker (`darwin_core.runs.jobs`, kind "chat");
the CLI (`python -m darwin_core chat RUN`) runs it in its own process.
"""
