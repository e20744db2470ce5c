"""Cache one-pass guard features (pooled all layers + ladder tokens) for every guard task.

    DSA_CACHE=.cache .venv/bin/python scripts/guard_features.py [TASK ...]
"""

import sys

from dsa.base import load_base
from dsa.guards.featurize import task_features

TASKS = ["prompt_safety", "xstest", "toxigen", "summedits", "openai_moderation", "response_harm"]

if __name__ == "__main__":
    base = load_base()
    for name in sys.argv[1:] or TASKS:
        task_features(base, name)
