"""Generate (and cache) the base's greedy answers that alignment training and evaluation reuse.

    DSA_CACHE=.cache python scripts/align_base_answers.py [N_BENIGN_TRAIN]
"""

import sys

import torch

from dsa.base import load_base
from dsa.recipes.answers import base_answers
from dsa.recipes.train_data import (
    EVAL_MAX_NEW_TOKENS,
    TRAIN_MAX_NEW_TOKENS,
    eval_prompt_sets,
    training_prompts,
)

if __name__ == "__main__":
    torch.set_num_threads(2)
    base = load_base()
    n_benign = int(sys.argv[1]) if len(sys.argv) > 1 else 96
    _, benign = training_prompts(n_benign=n_benign)
    base_answers(base, benign, "train_benign", TRAIN_MAX_NEW_TOKENS)
    for name, prompts in eval_prompt_sets().items():
        base_answers(base, prompts, f"eval_{name}", EVAL_MAX_NEW_TOKENS, batch_size=64)
