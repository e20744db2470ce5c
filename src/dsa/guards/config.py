"""`GuardTrainConfig`: the one typed config of `dsa guard train` (`dsa.config.Config`: YAML +
key=value overrides, unknown keys rejected, every field documented)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from dsa.config import Config
from dsa.guards.featurize import LADDER_LAYERS, TASK_MAX_LENGTH
from dsa.guards.kinds import ARCHS


def _f(default, help: str):
    if isinstance(default, list | dict):
        return Field(default_factory=lambda d=default: type(d)(d), description=help)
    return Field(default, description=help)


class GuardTrainConfig(Config):
    """Train one guard adapter on a guard task's fixed train split; calibrate on val."""

    task: str = _f("prompt_safety", "guard task (dsa.data.GUARD_TASKS, not xstest: eval only); with `data`, "
                                    "the name of the user's guard (default: the file's stem)")
    data: str = _f("", "a user's labelled file (CSV/TSV/JSONL/JSON/Parquet) to train on instead of a task")
    map: dict = _f({}, "with data: Record field -> column, e.g. {text: comment, label: is_toxic}; several "
                       "label columns, comma-separated (label: toxic,insult), give one head each")
    positive: str | None = _f(None, "with data: the label columns' value that means 1 (class names)")
    limit: int | None = _f(None, "with data: a seeded sample of this many labelled rows")
    plots: bool = _f(True, "with data and out: ROC / PR plots of the test split per head in OUT/plots/")
    arch: str = _f("plr", "plr | rtb | lst | window (max of rolling means of a per-token probe)")
    out: str = _f("", "adapter directory to write (empty: do not save)")
    base: str = _f("smollm2-135m-instruct", "base model name or path")
    max_length: int | None = _f(None, "tokens per input (left-truncated; documents keep their start); "
                                      "None = the task's default (dsa.guards.featurize.TASK_MAX_LENGTH, else 256)")
    window: int = _f(64, "RTB/LST read the last `window` tokens of the ladder taps")
    layer_sets: list = _f([["0.62"], ["0.31", "0.48", "0.66", "0.83"],
                           ["0.21", "0.31", "0.41", "0.52", "0.62", "0.72", "0.83", "0.93"]],
                          "PLR: candidate layer sets, each layer an index (negative = from the end) or a "
                          "fraction of depth (0.62 = layer 18 of 30, 14 of 24); the linear probe keeps the best "
                          "on val, the MLP uses the last")
    poolings: list = _f(["mean", "last"], "PLR poolings: mean and/or last")
    hidden: int = _f(0, "PLR: 0 = linear readout, >0 = MLP hidden width")
    C_grid: list = _f([0.001, 0.003, 0.01, 0.03, 0.1], "linear PLR: inverse L2 strengths tried on val")
    ladder: list = _f(list(LADDER_LAYERS), "RTB/LST: tapped layers feeding the side network (indices or "
                                           "fractions of depth, as layer_sets)")
    width: int = _f(64, "RTB/LST side width (d_model / 9 for SmolLM2-135M)")
    attn_heads: int = _f(4, "LST: attention heads per side block")
    epochs: int = _f(6, "torch heads: max epochs")
    patience: int = _f(1, "torch heads: epochs without val-AUC gain before stopping")
    lr: float = _f(1e-3, "torch heads: AdamW learning rate")
    weight_decay: float = _f(0.01, "torch heads: AdamW weight decay")
    batch_size: int = _f(64, "torch heads: batch size")
    windows: list = _f([16], "window: candidate window widths in tokens (the best val AUC is kept)")
    weight_decays: list = _f([1e-3], "window: candidate AdamW weight decays")
    augment_share: float = _f(0.5, "window: share of train/val prompts (both classes) that also get a copy "
                                   "padded with train filler (dsa.data.wrappers.augment)")
    pad_tokens: list = _f([40, 120, 300], "window: padding lengths (tokens) of those copies")
    long_pad_share: float = _f(0.0, "window: share of train/val prompts (both classes) that also get a copy "
                                    "with long, repetitive train filler (dsa.data.wrappers.long_pads)")
    long_pad_tokens: list = _f([500, 900], "window: padding lengths (tokens) of the long copies")
    corpus_pad_share: float = _f(0.0, "window: share of train/val prompts (both classes) that also get a copy "
                                      "padded with other benign prompts of the same split "
                                      "(dsa.data.wrappers.corpus_pads)")
    corpus_pad_tokens: list = _f([200, 450, 800], "window: padding lengths (tokens) of the corpus-padded copies")
    doc_pad_share: float = _f(0.0, "window: share of train/val prompts (both classes) that also get a copy with "
                                   "long benign documents around it (summedits documents, split between train "
                                   "and val; dsa.data.wrappers.document_pads)")
    doc_pad_tokens: list = _f([300, 600, 900], "window: padding lengths (tokens) of the document-padded copies")
    tail_drop_share: float = _f(0.0, "window: share of training texts (both classes) whose loss may not read the "
                                     "tokens the chat template adds after the request (dsa.features.text."
                                     "template_tail_tokens), so the head finds the request in its own tokens")
    long_copy_weight: float = _f(1.0, "window: loss weight of the long padded copies (long filler, documents; "
                                      "both classes): a long benign text has many windows that may fire")
    target_fpr: float = _f(0.05, "threshold: the val false-positive rate the stored threshold allows")
    base_answers: int = _f(0, "prompt_response tasks: the base's own greedy answers to this many benign "
                              "prompt_safety TRAIN prompts join the train split as safe answers, and to half "
                              "as many VAL prompts the val split (dsa.recipes.guard_train.base_answers): the "
                              "everyday answers a response guard reads, which a task's labelled answers lack")
    base_answer_tokens: int = _f(128, "decode budget of those answers")
    prefix_cuts: list = _f([], "prompt_response tasks: response-token counts at which each training answer "
                               "longer than that also joins the train split as its prefix, labelled as the whole "
                               "answer (dsa.guards.prefixes): a streaming guard reads answer starts; [] = off")
    prefix_random: int = _f(0, "with prefix_cuts or alone: this many more seeded random cuts per training answer")
    prefix_min_harmful: int = _f(0, "harmful answers give prefix rows only at cuts of at least this many tokens "
                                    "(a very short start can be any answer's)")
    prefix_max_tokens: int = _f(256, "answer tokens read for prefix rows (as `dsa guard calibrate-stream`)")
    seed: int = _f(0, "seed of every random choice in training")

    @model_validator(mode="after")
    def _check(self) -> GuardTrainConfig:
        from dsa.data import GUARD_TASKS

        if self.data:
            if not Path(self.data).is_file():
                raise ValueError(f"data file {self.data!r} does not exist")
            if self.task == "prompt_safety":  # the default: name the guard after the file
                self.task = Path(self.data).name.split(".")[0]
        elif self.task not in GUARD_TASKS or self.task == "xstest":
            raise ValueError(f"task must be a trainable guard task, got {self.task!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be {', '.join(list(ARCHS)[:-1])} or {list(ARCHS)[-1]}, got {self.arch!r}")
        ARCHS[self.arch].check(self)
        if self.long_copy_weight <= 0:
            raise ValueError(f"long_copy_weight must be positive, got {self.long_copy_weight}")
        if not 0 <= self.tail_drop_share <= 1:
            raise ValueError(f"tail_drop_share must be in [0, 1], got {self.tail_drop_share}")
        if not 0 < self.target_fpr < 1:
            raise ValueError("target_fpr must be in (0, 1)")
        if self.base_answers < 0 or self.base_answer_tokens < 1:
            raise ValueError("base_answers must be >= 0 and base_answer_tokens >= 1")
        if any(not isinstance(c, int) or c < 1 for c in self.prefix_cuts) or self.prefix_random < 0 \
                or self.prefix_min_harmful < 0 or self.prefix_max_tokens < 1:
            raise ValueError("prefix_cuts must be positive token counts; prefix_random, prefix_min_harmful >= 0; "
                             "prefix_max_tokens >= 1")
        if self.max_length is None:
            self.max_length = TASK_MAX_LENGTH.get(self.task, 256)
        if not self.layer_sets or not all(isinstance(ls, list) and ls for ls in self.layer_sets):
            raise ValueError("layer_sets must be a non-empty list of non-empty layer lists, e.g. [[0.62], [9, 14]]")
        return self

    def augmentation(self) -> dict:
        """The window recipe's padded-copy settings as `window_prompts` / `window_data` keywords."""
        return {"seed": self.seed, "share": self.augment_share, "pad_tokens": self.pad_tokens,
                "long_share": self.long_pad_share, "long_tokens": self.long_pad_tokens,
                "corpus_share": self.corpus_pad_share, "corpus_tokens": self.corpus_pad_tokens,
                "doc_share": self.doc_pad_share, "doc_tokens": self.doc_pad_tokens}

    def resolved(self, n_layers: int) -> GuardTrainConfig:
        """This config with every layer as an index of a model with `n_layers` layers; a clear error
        names the field when a layer does not exist there."""
        from dsa.taps import LayerRangeError, resolve_layers

        try:
            sets = [resolve_layers(ls, n_layers) for ls in self.layer_sets]
        except LayerRangeError as err:
            raise LayerRangeError(f"layer_sets {self.layer_sets}: {err}") from None
        try:
            ladder = resolve_layers(self.ladder, n_layers)
        except LayerRangeError as err:
            raise LayerRangeError(f"ladder {self.ladder}: {err}") from None
        return self.model_copy(update={"layer_sets": sets, "ladder": ladder})
