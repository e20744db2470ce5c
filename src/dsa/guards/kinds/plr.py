"""PLR: a pooled linear readout (or one-hidden-layer MLP) of mean/last pooled states (`PLRHead`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from dsa.guards.heads import GuardInput, PLRHead
from dsa.guards.summaries import pooled, tap_name
from dsa.probe_fit import PROBE_CS, fit_best_c

log = logging.getLogger(__name__)


@dataclass
class PLRStream:
    """Running sums (mean pooling) and the last token's state of the head's layers [b, L, d], and
    how many tokens each row has [b]: O(d) per token whatever the length."""

    head: PLRHead
    poolings: list[str]
    taps: list[str]
    count: torch.Tensor
    sums: torch.Tensor
    last: torch.Tensor

    @classmethod
    def start(cls, adapter, cache: dict, mask: torch.Tensor) -> PLRStream:
        taps = [tap_name(li) for li in adapter.cfg["layers"]]
        count = mask.float().sum(1)  # [b]
        n = count.clamp_min(1)[:, None]
        sums = torch.stack([pooled(cache[t], mask, "mean") * n for t in taps], 1)
        last = torch.stack([pooled(cache[t], mask, "last") for t in taps], 1)
        return cls(adapter.head, adapter.cfg["poolings"], taps, count, sums, last)

    def update(self, cache: dict) -> torch.Tensor:
        self.count = self.count + 1
        new = torch.cat([cache[t][:, -1:] for t in self.taps], 1).float()  # [b, L, d]
        self.sums = self.sums + new
        self.last = new
        parts = {"mean": self.sums / self.count.clamp_min(1)[:, None, None], "last": self.last}
        # [b, L, poolings, d] flattened: layer-major, as PLRHead.features concatenates
        f = torch.stack([parts[how] for how in self.poolings], 2).flatten(1)
        return self.head.forward_features(f)

    def select(self, idx: torch.Tensor) -> PLRStream:
        return replace(self, count=self.count[idx], sums=self.sums[idx], last=self.last[idx])

    def merge(self, other: PLRStream) -> PLRStream:
        return replace(self, count=torch.cat([self.count, other.count]), sums=torch.cat([self.sums, other.sums]),
                       last=torch.cat([self.last, other.last]))


class PLR:
    arch = "plr"
    head_type = PLRHead
    reads_tokens = False  # pooled states only
    cached_features = True
    vllm_reads = "pooled"

    def build(self, d_model: int, n_heads: int, cfg: dict) -> PLRHead:
        return PLRHead(d_model, n_heads, cfg["layers"], cfg["poolings"], cfg.get("hidden", 0))

    def layers(self, cfg: dict) -> list[int]:
        return cfg["layers"]

    def tap_needs(self, cfg: dict, window: int) -> dict[str, dict]:
        # both poolings always: the streaming state keeps a running mean whatever the head reads
        return {tap_name(li): {"mean": True, "last": True, "window": 0} for li in cfg["layers"]}

    def inputs(self, cfg: dict, cache: dict, mask: torch.Tensor, window: int) -> GuardInput:
        return GuardInput(pooled={(li, how): pooled(cache[tap_name(li)], mask, how)
                                  for li in cfg["layers"] for how in cfg["poolings"]})

    def token_logits(self, head: PLRHead, cfg: dict, cache: dict, mask: torch.Tensor) -> torch.Tensor:
        return head.token_logits({li: cache[tap_name(li)] for li in cfg["layers"]}, mask)

    def stream(self, adapter, cache: dict, mask: torch.Tensor) -> PLRStream:
        return PLRStream.start(adapter, cache, mask)

    def prompt_state(self, adapter) -> None:
        return None

    def flops(self, head: PLRHead, seq_len: int) -> float:
        return head.flops_per_sequence() + head.mu.numel() * seq_len  # the readout once, pooling adds

    def cached_input(self, feats, idx: list[int], cfg: dict) -> GuardInput:
        pooled_ = {}
        for li in cfg["layers"]:
            for how in cfg["poolings"]:
                pooled_[(li, how)] = (feats.mean if how == "mean" else feats.last)[idx, li]
        return GuardInput(pooled=pooled_)

    def fit_norm(self, head: PLRHead, feats, cfg: dict) -> None:
        x = head.features(self.cached_input(feats, list(range(feats.ntok.shape[0])), cfg))
        head.mu.copy_(x.mean(0))
        head.sd.copy_(x.std(0).clamp_min(1e-4))

    def fit(self, cfg, train, val, d_model: int) -> tuple[PLRHead, dict]:
        from dsa.guards.train import fit_torch, mean_auc, predict

        tr, va = train, val
        if cfg.hidden == 0:
            # layer sets are candidates; the one with the best val AUC wins
            best = None
            for layers in cfg.layer_sets:
                hcfg = {"layers": layers, "poolings": cfg.poolings, "hidden": 0, "C_grid": cfg.C_grid}
                head = fit_plr_linear(tr.feats, tr.labels, va.feats, va.labels, hcfg, d_model, seed=cfg.seed)
                auc = mean_auc(va.labels.numpy(), predict(head, va.feats, self, hcfg))
                log.info("plr layers %s: val auc %.4f", layers, auc)
                if best is None or auc > best[0]:
                    best = (auc, head, hcfg)
            _, head, hcfg = best
            return head, {k: v for k, v in hcfg.items() if k != "C_grid"}
        hcfg = {"layers": cfg.layer_sets[-1], "poolings": cfg.poolings, "hidden": cfg.hidden}
        head = fit_torch(self, tr.feats, tr.labels, va.feats, va.labels, hcfg, d_model, seed=cfg.seed,
                         epochs=cfg.epochs, patience=cfg.patience, lr=cfg.lr, weight_decay=cfg.weight_decay,
                         batch_size=cfg.batch_size)
        return head, hcfg

    def check(self, cfg) -> None:
        pass


def fit_plr_linear(train, y_tr: torch.Tensor, val, y_va: torch.Tensor,
                   cfg: dict, d_model: int, seed: int = 0) -> PLRHead:
    """Linear PLR by (balanced) logistic regression per head, C tuned on val AUC; stored as tensors."""
    head = PLRHead(d_model, y_tr.shape[1], cfg["layers"], cfg["poolings"], 0)
    x_tr = head.features(PLR().cached_input(train, list(range(train.ntok.shape[0])), cfg))
    x_va = head.features(PLR().cached_input(val, list(range(val.ntok.shape[0])), cfg))
    mu, sd = x_tr.mean(0), x_tr.std(0).clamp_min(1e-4)
    head.mu.copy_(mu)
    head.sd.copy_(sd)
    x_tr, x_va = ((x_tr - mu) / sd).numpy(), ((x_va - mu) / sd).numpy()
    w = torch.zeros(y_tr.shape[1], x_tr.shape[1])
    b = torch.zeros(y_tr.shape[1])
    for j in range(y_tr.shape[1]):
        k_tr, k_va = ~torch.isnan(y_tr[:, j]), ~torch.isnan(y_va[:, j])
        # the regularisation path, strongest L2 first, each fit warm-started from the previous one
        # (same optimum, a fraction of the L-BFGS iterations: a user's guard retrains in seconds)
        best = fit_best_c(x_tr[k_tr.numpy()], y_tr[k_tr, j].numpy(), x_va[k_va.numpy()], y_va[k_va, j].numpy(),
                          sorted(cfg.get("C_grid", PROBE_CS)), warm_start=True, max_iter=500, seed=seed)
        cfg.setdefault("C", []).append(float(best.c))  # the chosen strength per head, recorded
        w[j] = torch.as_tensor(best.coef, dtype=torch.float32)
        b[j] = best.intercept
    with torch.no_grad():
        head.net.weight.copy_(w)
        head.net.bias.copy_(b)
    return head
