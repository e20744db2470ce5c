"""Train the small analysis-local updates that `dsa analyze subspace` compares.

    python scripts/subspace_train.py --task mmlu_dev --mode lora --out runs/analysis/task-lora-r16
    python scripts/subspace_train.py --task refusal  --mode lora --out runs/analysis/refusal-lora-r16
    python scripts/subspace_train.py --task refusal  --mode full --out runs/analysis/refusal-full-ft
    python scripts/subspace_train.py --task mmlu_dev --mode lora --n 256 --held-out 24 --epochs 3 \
        --out runs/analysis/task-lora-r16-n256-e3     # several epochs, with a held-out loss per epoch

Tasks (300 chat examples by default (MMLU dev has 285), loss on the answer tokens only, 1 epoch, seeded):
  refusal   harmful_prompts("train") -> one of a few short templated refusals (the same recipe as a
            refusal-SFT patch: harmful prompts only).
  mmlu_dev  the MMLU dev split (285 questions; our loaders mark it "train": it is the few-shot
            pool, never an eval set) -> "The answer is (X) <choice>." A non-safety task with
            human-labelled targets and answers as short as the refusals, so both updates get
            a comparable amount of signal.

Training: AdamW through dsa.train.fit, batch 8, clip 1.0, bf16 autocast, lr warmup 4 steps then linear
decay to 0 over all epochs; a fresh seeded data order each epoch. `--held-out H` keeps H more examples
of the same task out of training and logs their loss before training and after every epoch (is the
update learning the task or memorising its rows?). `--max-steps` stops early (for quick lr sweeps;
the schedule still decays over the full run). dsa_training.json records every step's loss.

LoRA: PEFT, r=16, alpha=32, on q,k,v,o,gate,up,down, saved in the PEFT format. Full fine-tune:
every weight trained, saved with save_pretrained in float32 — the base is bf16, and a bf16 save of
a small fine-tune would round most of ΔW away (its steps are ~1e-4 of weights ~1e-2..1e-1).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from dsa.base import DEFAULT_BASE, load_base
from dsa.data import harmful_prompts, load_source

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I can't assist with that request.",
    "Sorry, I won't help with that. It could cause harm.",
]


def examples(task: str, n: int, seed: int) -> list[tuple[str, str]]:
    """(prompt, answer) pairs for `task`, in a seeded order."""
    rng = random.Random(seed)
    if task == "refusal":
        prompts = harmful_prompts("train")
        rng.shuffle(prompts)
        return [(p, REFUSALS[i % len(REFUSALS)]) for i, p in enumerate(prompts[:n])]
    if task == "mmlu_dev":
        recs = [r for r in load_source("mmlu") if r.split == "train"]
        rng.shuffle(recs)
        out = []
        for r in recs[:n]:
            choices = r.meta["choices"]
            letters = "ABCD"
            body = "\n".join(f"({letters[i]}) {c}" for i, c in enumerate(choices))
            a = int(r.meta["answer"])
            out.append((f"{r.prompt}\n{body}", f"The answer is ({letters[a]}) {choices[a]}."))
        return out
    raise ValueError(f"unknown task {task!r}: expected refusal or mmlu_dev")


def encode(base, pairs: list[tuple[str, str]], max_prompt: int = 64) -> list[tuple[list[int], int]]:
    """Token ids of prompt+answer and the number of prompt tokens (masked out of the loss)."""
    tok = base.tokenizer
    end = tok.eos_token or ""
    out = []
    for prompt, answer in pairs:
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        if len(ids) > max_prompt:  # shorten the user message, keep the chat template whole
            prompt = tok.decode(ids[:max_prompt])
        p = tok(base.chat_text(prompt), add_special_tokens=False)["input_ids"]
        a = tok(answer + end, add_special_tokens=False)["input_ids"]
        out.append((p + a, len(p)))
    return out


def batches(encoded, batch_size: int, pad_id: int):
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i:i + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad_id)
        labels = torch.full((len(chunk), width), -100)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, (seq, n_prompt) in enumerate(chunk):
            ids[j, :len(seq)] = torch.tensor(seq)
            labels[j, n_prompt:len(seq)] = torch.tensor(seq[n_prompt:])
            mask[j, :len(seq)] = 1
        yield {"input_ids": ids, "attention_mask": mask, "labels": labels}


def held_out_loss(model, encoded, pad_id: int, batch_size: int = 8) -> float:
    """Mean answer-token loss over `encoded` (no gradient, eval mode, fp32)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in batches(encoded, batch_size, pad_id):
            n_tok = int((batch["labels"][:, 1:] != -100).sum())  # the loss is a mean over shifted labels
            total += float(model(**{k: v.to(device) for k, v in batch.items()}).loss) * n_tok
            n += n_tok
    model.train(was_training)
    return total / max(n, 1)


def train_update(model, encoded, batch_size: int, lr: float, pad_id: int, autocast: bool = True,
                 epochs: int = 1, seed: int = 0, held_out=(), max_steps: int = 0,
                 shuffle: bool = True) -> tuple[list[float], list[float]]:
    """AdamW over `epochs` (warmup 4 steps, linear decay over all of them); returns the step losses and
    the held-out loss before training and after every epoch (empty without held-out rows).
    `shuffle`: a fresh seeded order per epoch; False keeps the given order (as the loop did before
    epochs existed)."""
    from dsa.train import TrainSpec, fit

    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    t0, n_tok = time.perf_counter(), 0
    n_steps = epochs * ((len(encoded) + batch_size - 1) // batch_size)
    if max_steps:
        n_steps = min(n_steps, max_steps)
    held = [held_out_loss(model, held_out, pad_id)] if held_out else []
    if held:
        print(f"held-out loss before training {held[0]:.4f}", flush=True)

    class _Stop(Exception):
        pass

    def loss_fn(rows):
        batch = next(batches(rows, len(rows), pad_id))
        return model(**{k: v.to(device) for k, v in batch.items()}).loss, {"tokens": int(batch["attention_mask"].sum())}

    losses = []

    def report(step, entry):
        nonlocal n_tok
        n_tok += entry["tokens"]
        losses.append(entry["loss"])
        print(f"step {step}/{n_steps} loss {entry['loss']:.4f} "
              f"({n_tok / (time.perf_counter() - t0):.0f} tok/s, {time.perf_counter() - t0:.0f} s)", flush=True)
        if max_steps and step >= max_steps:
            raise _Stop

    def after_epoch(epoch):
        if held_out:
            held.append(held_out_loss(model, held_out, pad_id))
            print(f"epoch {epoch + 1}/{epochs} held-out loss {held[-1]:.4f}", flush=True)

    spec = TrainSpec(epochs=epochs, batch_size=batch_size, lr=lr, clip_norm=1.0, seed=seed,
                     mixed_precision="bf16" if autocast else "auto", desc="subspace")
    try:
        fit(loss_fn, encoded, params, spec, modules=[model],
            order=None if shuffle else (lambda _ep: range(len(encoded))),
            schedule=lambda s, total: min(1.0, (s + 1) / 4) * (1 - s / total), on_step=report, on_epoch=after_epoch)
    except _Stop:
        if held_out:
            held.append(held_out_loss(model, held_out, pad_id))
            print(f"stopped at step {max_steps}: held-out loss {held[-1]:.4f}", flush=True)
    return losses, held


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=["refusal", "mmlu_dev"])
    ap.add_argument("--mode", required=True, choices=["lora", "full"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", default=DEFAULT_BASE)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--lr", type=float, default=None, help="default 1e-3 (lora) / 3e-5 (full)")
    ap.add_argument("--epochs", type=int, default=1, help="passes over the training examples")
    ap.add_argument("--held-out", type=int, default=0,
                    help="examples of the same task kept out of training; their loss is logged per epoch")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (lr sweeps); 0: all")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-autocast", action="store_true", help="train in fp32 without bf16 autocast")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    base = load_base(args.base, dtype="fp32")
    model = base.model
    model.requires_grad_(False)
    if args.mode == "lora":
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                         target_modules=TARGETS, task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg)
        lr = args.lr or 1e-3
    else:
        model.requires_grad_(True)
        lr = args.lr or 3e-5
    model.train()
    pool = examples(args.task, args.n + args.held_out, args.seed)
    if len(pool) < args.n + args.held_out:
        raise SystemExit(f"{args.task} has {len(pool)} examples: fewer than --n {args.n} + --held-out {args.held_out}")
    pairs, held_pairs = pool[:args.n], pool[args.n:]
    encoded, held_enc = encode(base, pairs), encode(base, held_pairs)
    t0 = time.perf_counter()
    losses, held = train_update(model, encoded, args.batch_size, lr, base.tokenizer.pad_token_id,
                                autocast=not args.no_autocast, epochs=args.epochs, seed=args.seed,
                                held_out=held_enc, max_steps=args.max_steps)
    from dsa.train import process_state

    if not process_state().is_main_process:  # under `accelerate launch`: one writer
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    if args.mode == "lora":
        model.save_pretrained(out)
    else:
        model.to(torch.float32).save_pretrained(out)
        base.tokenizer.save_pretrained(out)
    info = {"task": args.task, "mode": args.mode, "base": args.base, "base_fingerprint": base.fingerprint,
            "n_examples": len(pairs), "rank": args.rank if args.mode == "lora" else None, "lr": lr,
            "batch_size": args.batch_size, "seed": args.seed, "epochs": args.epochs, "steps": len(losses),
            "max_steps": args.max_steps or None, "schedule": "warmup 4 steps, linear decay to 0",
            "bf16_autocast": not args.no_autocast, "first_loss": losses[0], "last_loss": losses[-1],
            "losses": [round(x, 4) for x in losses],
            "n_held_out": len(held_pairs), "held_out_losses": [round(x, 4) for x in held],
            "seconds": time.perf_counter() - t0, "label": "analysis-local"}
    (out / "dsa_training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
