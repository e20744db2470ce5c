"""Recipes: everything that trains or evaluates, above the runtime it uses (the library below
holds the parts: `dsa.align` the logit adapter, LoRA patch and policies, `dsa.guards` the heads,
bank and the fitting of a head on cached features, `dsa.train` the trainer).

    align_train   `dsa align train`: setup -> data -> train -> save a LoRA patch, DSA adapter or full FT
    align_config  the typed configs of `dsa align train` / `dsa align eval`
    sft           the alignment losses (refusal-SFT, KL-to-base, DPO) and their training loop
    train_data    alignment training and evaluation prompts (refusal targets, contrast, hard negatives)
    answers       the base's own greedy answers, cached (training targets, the benign reference)
    align_eval    `dsa align eval`: the `Evaluator` of alignment configurations through the runtime
    align_report  results/alignment.json, docs/results-alignment.md and its plots
    guard_train   `dsa guard train`: `train_guard` (one path for shipped and evaluated guards),
                  user-file guards, the base's everyday answers a response guard trains on
    guard_stream  `dsa guard calibrate-stream`: a response guard's stop rule, stored in the adapter
    guard_report  `dsa guard eval`: every head and baseline on every guard task -> results/guard.json
    guard_study   `dsa guard study` / `operating-points`: the prompt guard's precision study
"""
