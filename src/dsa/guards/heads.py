"""Guard head architectures reading taps of a frozen base: PLR, RTB, LST and window.

Every head maps a `GuardInput` (pooled states and/or per-token ladder states) to logits
[batch, n_heads] and reports its parameter count and FLOPs per token. Inputs are standardised by
buffers (mean/std from the training set) because the base's residual stream has a few very large
dimensions.

- PLR: concat(mean/last pooled states of some layers) -> linear (or one hidden layer MLP).
- RTB (Res-Tuning bypass): b_l = down_l(h_l) + b_{l-1} + up_l(gelu(b_{l-1})), token-wise, width r;
  readout of the last bypass state (mean + last token) -> linear.
- LST (Ladder side-tuning): s_i = mu_i * down_i(h_i) + (1 - mu_i) * s_{i-1}, mu_i = sigmoid(g_i / T),
  then a causal pre-norm attention + MLP block at width r; own head on mean + last token.
- Window (max of rolling means): a linear probe on every token's states of some layers, averaged
  over each run of `window` consecutive tokens, and the highest window wins. Benign text around a
  request adds windows but cannot lower the request's own window, so the score does not dilute
  with length (a plain mean over the prompt does; Kramár et al. 2026, "max of rolling means").
  Because the probe is linear, a window's logit is the mean of its tokens' logits: the head keeps
  one number per token and head, never the states.

What the rest of the package needs of each head type (its taps, inputs, streaming state, training
entry) is in `dsa.guards.kinds`, one module per type, with the factory `build_head` over them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class GuardInput:
    """What a head reads. `pooled[(layer, how)]` is [b, d]; `tokens` [b, T, w, d] with `mask` [b, w]."""

    pooled: dict[tuple[int, str], torch.Tensor] | None = None
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    states: dict[int, torch.Tensor] | None = None  # window heads: {layer: [b, s, d]} with `mask` [b, s]


def masked_mean_last(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[b, w, r] states, [b, w] mask (real tokens at the right end) -> [b, 2r] (mean, last)."""
    m = mask.unsqueeze(-1).to(x.dtype)
    mean = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
    return torch.cat([mean, x[:, -1]], -1)


class PLRHead(nn.Module):
    """Pooled linear readout (hidden=0) or small MLP probe over concatenated pooled states."""

    def __init__(self, d_model: int, n_heads: int, layers: list[int], poolings: list[str], hidden: int = 0):
        super().__init__()
        self.layers, self.poolings, self.hidden = list(layers), list(poolings), hidden
        f = d_model * len(layers) * len(poolings)
        self.register_buffer("mu", torch.zeros(f))
        self.register_buffer("sd", torch.ones(f))
        self.net = nn.Linear(f, n_heads) if hidden == 0 else nn.Sequential(
            nn.Linear(f, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, n_heads))

    def features(self, x: GuardInput) -> torch.Tensor:
        return torch.cat([x.pooled[(li, how)] for li in self.layers for how in self.poolings], -1).float()

    def forward(self, x: GuardInput) -> torch.Tensor:
        return self.forward_features(self.features(x))

    def forward_features(self, f: torch.Tensor) -> torch.Tensor:
        """Logits [b, heads] of concatenated pooled features [b, f] (as `features` orders them)."""
        return self.net((f - self.mu) / self.sd)

    def token_logits(self, per_layer: dict[int, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Streaming: each token scored as if the text ended there (running mean, itself as last).
        per_layer[i] is [b, s, d] (right-padded), mask [b, s]; returns [b, s, heads]."""
        m = mask.unsqueeze(-1).float()
        parts = []
        for li in self.layers:
            h = per_layer[li].float() * m
            run_mean = h.cumsum(1) / m.cumsum(1).clamp_min(1.0)
            parts += [run_mean if how == "mean" else h for how in self.poolings]
        return self.net((torch.cat(parts, -1) - self.mu) / self.sd)

    def flops_per_token(self) -> float:
        f = self.mu.numel()
        return 2.0 * (f * self.net.out_features if self.hidden == 0 else f * self.hidden)

    def flops_per_sequence(self) -> float:
        n_out = self.net.out_features if self.hidden == 0 else self.net[-1].out_features
        f = self.mu.numel()
        return 2.0 * (f * n_out if self.hidden == 0 else f * self.hidden + self.hidden * n_out)


class _TokenNorm(nn.Module):
    """Per-ladder-tap standardisation of [b, T, w, d] tokens by buffers fitted on training tokens."""

    def __init__(self, n_taps: int, d_model: int):
        super().__init__()
        self.register_buffer("mu", torch.zeros(n_taps, 1, d_model))
        self.register_buffer("sd", torch.ones(n_taps, 1, d_model))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return (t.float() - self.mu) / self.sd


class RTBHead(nn.Module):
    """Res-Tuning bypass: token-wise bypass stream of width r fed by every ladder tap."""

    def __init__(self, d_model: int, n_heads: int, n_taps: int, width: int = 64):
        super().__init__()
        self.norm = _TokenNorm(n_taps, d_model)
        self.down = nn.ModuleList(nn.Linear(d_model, width) for _ in range(n_taps))
        self.up = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                                              nn.Linear(width, width)) for _ in range(n_taps))
        self.out_norm = nn.LayerNorm(width)
        self.head = nn.Linear(2 * width, n_heads)
        self.width, self.n_taps, self.d_model = width, n_taps, d_model

    def stream(self, x: GuardInput) -> torch.Tensor:
        t = self.norm(x.tokens)  # [b, T, w, d]
        b = torch.zeros(*t.shape[:1], t.shape[2], self.width, device=t.device)
        for i in range(self.n_taps):
            b = self.down[i](t[:, i]) + b + self.up[i](b)  # [b, w, r]
        return self.out_norm(b)

    def forward(self, x: GuardInput) -> torch.Tensor:
        return self.head(masked_mean_last(self.stream(x), x.mask))

    def token_logits(self, x: GuardInput) -> torch.Tensor:
        """[b, w, heads]: each token scored as if it were the last (running mean up to it)."""
        s = self.stream(x) * x.mask.unsqueeze(-1)
        run_mean = s.cumsum(1) / x.mask.cumsum(1).clamp_min(1).unsqueeze(-1)
        return self.head(torch.cat([run_mean, s], -1))

    def flops_per_token(self) -> float:
        r, d = self.width, self.d_model
        return 2.0 * self.n_taps * (d * r + 2 * r * r)

    def flops_per_sequence(self) -> float:
        return 2.0 * self.head.in_features * self.head.out_features


class _SideBlock(nn.Module):
    def __init__(self, width: int, n_attn_heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, n_attn_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = s.shape[1]
        causal = torch.triu(torch.ones(w, w, dtype=torch.bool, device=s.device), 1)
        pad = mask == 0
        # a fully padded key row would give NaN; padded queries are ignored downstream anyway
        attn_mask = (causal.unsqueeze(0) | pad.unsqueeze(1)) & ~torch.eye(w, dtype=torch.bool, device=s.device)
        h = self.ln1(s)
        a, _ = self.attn(h, h, h, attn_mask=attn_mask.repeat_interleave(self.attn.num_heads, 0),
                         need_weights=False)
        s = s + a
        return s + self.mlp(self.ln2(s))


class LSTHead(nn.Module):
    """Ladder side network of width r with gated fusion of the ladder taps and causal side blocks."""

    def __init__(self, d_model: int, n_heads: int, n_taps: int, width: int = 64, n_attn_heads: int = 4,
                 gate_temperature: float = 0.1):
        super().__init__()
        self.norm = _TokenNorm(n_taps, d_model)
        self.down = nn.ModuleList(nn.Linear(d_model, width) for _ in range(n_taps))
        self.gate = nn.Parameter(torch.zeros(n_taps))
        self.blocks = nn.ModuleList(_SideBlock(width, n_attn_heads) for _ in range(n_taps))
        self.out_norm = nn.LayerNorm(width)
        self.head = nn.Linear(2 * width, n_heads)
        self.width, self.n_taps, self.d_model, self.temperature = width, n_taps, d_model, gate_temperature

    def stream(self, x: GuardInput) -> torch.Tensor:
        t = self.norm(x.tokens)  # [b, T, w, d]
        s = self.down[0](t[:, 0])  # [b, w, r]
        for i in range(self.n_taps):
            if i > 0:
                mu = torch.sigmoid(self.gate[i] / self.temperature)
                s = mu * self.down[i](t[:, i]) + (1 - mu) * s
            s = self.blocks[i](s, x.mask)
        return self.out_norm(s)

    def forward(self, x: GuardInput) -> torch.Tensor:
        return self.head(masked_mean_last(self.stream(x), x.mask))

    def flops_per_token(self, context: int = 64) -> float:
        r, d = self.width, self.d_model
        per_block = 4 * r * r + 2 * 2 * r * r + 2 * context * r  # qkvo + mlp + attention scores/values
        return 2.0 * self.n_taps * (d * r + per_block)

    def flops_per_sequence(self) -> float:
        return 2.0 * self.head.in_features * self.head.out_features


def rolling_max(z: torch.Tensor, mask: torch.Tensor, window: int) -> torch.Tensor:
    """Max over positions of the mean of `z` over the last `window` real tokens [b, s, h] -> [b, h].

    Only full windows count, except in a row shorter than `window`, whose one window is all of it.
    Left or right padding (real tokens where mask is 1). A row without real tokens gives -inf.
    """
    m = mask.to(z.dtype).unsqueeze(-1)  # [b, s, 1]
    zc = torch.nn.functional.pad((z * m).cumsum(1), (0, 0, 1, 0))  # [b, s+1, h]
    mc = torch.nn.functional.pad(m.cumsum(1), (0, 0, 1, 0))
    back = lambda c: c[:, 1:] - torch.cat([c[:, :1].expand(-1, min(window, c.shape[1] - 1), -1),  # noqa: E731
                                            c[:, 1:-window] if c.shape[1] - 1 > window else c[:, :0]], 1)
    s, n = back(zc), back(mc)  # window sums and real-token counts ending at each position
    total = m.sum(1, keepdim=True)
    valid = (m > 0) & (n >= torch.minimum(total, torch.full_like(total, float(window))))
    mean = s / n.clamp_min(1.0)
    return mean.masked_fill(~valid, float("-inf")).amax(1)


class WindowHead(nn.Module):
    """Linear probe per token on concatenated layers, read out as the max of `window`-token rolling
    means (see the module doc). Standardised by `mu`/`sd` buffers as PLR."""

    def __init__(self, d_model: int, n_heads: int, layers: list[int], window: int = 16):
        super().__init__()
        self.layers, self.window, self.d_model = list(layers), int(window), d_model
        f = d_model * len(layers)
        self.register_buffer("mu", torch.zeros(f))
        self.register_buffer("sd", torch.ones(f))
        self.net = nn.Linear(f, n_heads)

    def token_logits(self, states: dict[int, torch.Tensor]) -> torch.Tensor:
        """Per-token logits without the bias, {layer: [b, s, d]} -> [b, s, heads] (a sum over layers,
        so no [b, s, L·d] concatenation is made)."""
        d = self.d_model
        z = None
        for j, li in enumerate(self.layers):
            w = self.net.weight[:, j * d:(j + 1) * d] / self.sd[j * d:(j + 1) * d]  # [heads, d]
            part = states[li].float() @ w.T - (self.mu[j * d:(j + 1) * d] @ w.T)
            z = part if z is None else z + part
        return z

    def forward(self, x: GuardInput) -> torch.Tensor:
        return rolling_max(self.token_logits(x.states), x.mask, self.window) + self.net.bias

    def forward_windows(self, f: torch.Tensor) -> torch.Tensor:
        """Logits [n, heads] of window-mean features [n, L·d] (training reads windows directly)."""
        return self.net((f - self.mu) / self.sd)

    def flops_per_token(self) -> float:
        return 2.0 * self.mu.numel() * self.net.out_features

    def flops_per_sequence(self) -> float:
        return 0.0


def n_params(head: nn.Module) -> int:
    return sum(p.numel() for p in head.parameters())


def base_flops_per_token(model: nn.Module, context: int = 64) -> float:
    """Analytic FLOPs of one base forward per token: 2 × non-embedding matmul params + attention."""
    cfg = model.config
    d, n_layers = cfg.hidden_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * cfg.intermediate_size  # q,o + k,v + gate/up/down
    lm_head = d * cfg.vocab_size
    return 2.0 * (n_layers * per_layer + lm_head) + 2.0 * n_layers * 2 * context * d
