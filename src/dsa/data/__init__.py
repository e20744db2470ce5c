"""Datasets -> validated Records: source loaders, user files, seeded splits, guard tasks.

    from dsa.data import guard_task, load_source, load_user_file
    task = guard_task("prompt_safety")          # fixed seeded train/val/test
    recs = load_user_file("mine.csv", mapping={"text": "comment", "label": "is_toxic"})
"""

from dsa.data.records import DataError, Record, normalise_text, parse_label
from dsa.data.sources import data_dir, list_sources, load_source
from dsa.data.splits import EVAL_ONLY_SOURCES, assign_splits, deduplicate, eval_only_texts
from dsa.data.tasks import GUARD_TASKS, GuardTask, benign_prompts, guard_task, harmful_prompts
from dsa.data.user_files import load_user_file

__all__ = [
    "DataError", "Record", "normalise_text", "parse_label",
    "data_dir", "list_sources", "load_source", "load_user_file",
    "EVAL_ONLY_SOURCES", "assign_splits", "deduplicate", "eval_only_texts",
    "GUARD_TASKS", "GuardTask", "guard_task", "harmful_prompts", "benign_prompts",
]
