"""`DSALlamaForCausalLM`: a Llama-family base served by vLLM with dsa's guard heads and DSA
alignment adapter in the same forward.

One step of the engine:

    base forward (vLLM's compiled/eager LlamaModel; guard taps and the adapter's input are
        returned as aux hidden states, `hidden + residual` after layer i = dsa's `layers.{i}.resid_post`)
    → per request: running sum / last token of each PLR guard tap over the prompt's tokens, and
        each window head's per-token logits folded into its running max of rolling means
        (`PromptWindow`) (split by `query_start_loc`; chunked prefill is fine, prefix caching is
        refused because cached prompt tokens never reach the model)
    → when a prompt is complete: the guard heads' scores, λ = max(policy(score), requested floor)
        (or the requested λ exactly, for `dsa_alignment_exact` requests on an engine that allows them;
        `row_lambda`, by `dsa.align.policy.decide_lambda`)
    → the adapter tail (k extra decoder layers named `dsa_tail.layers.{L+i}`, so they get their
        own paged KV cache) when some row needs it
    → compute_logits: (1 − λ)·base + λ·aligned per row; λ = 0 rows are the base logits bit for bit.

The tail runs on the tokens of rows that have λ > 0 or have not finished reading their prompt
(their λ is not known yet and their tail KV must be complete if it turns out > 0); a prompt read
in one step is scored before the tail runs, so an unflagged request never runs it, and decode
steps of unflagged traffic skip it altogether.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import torch
from torch import nn

from dsa.extras import needs_extra

with needs_extra("vllm", "vLLM integration (dsa.vllm)"):
    from vllm.config import VllmConfig
    from vllm.forward_context import get_forward_context, is_forward_context_available
    from vllm.model_executor.layers.layernorm import RMSNorm
    from vllm.model_executor.model_loader.weight_utils import default_weight_loader
    from vllm.model_executor.models.llama import LlamaDecoderLayer, LlamaForCausalLM

from dsa.adapter_io import load_adapter
from dsa.align.logit_adapter import mix_logits
from dsa.align.policy import decide_lambda, make_policy, request_alignment
from dsa.guards.bank import GuardAdapter, GuardBank
from dsa.guards.heads import GuardInput
from dsa.guards.kinds import ARCHS
from dsa.guards.prompt_window import PromptWindow
from dsa.runtime import policy_threshold, resolve_policy_head
from dsa.vllm.config import ARCHITECTURE, DSAEngineConfig, fingerprint_dir
from dsa.vllm.rows import ROWS

log = logging.getLogger(__name__)

# guard head types this model scores in its forward, by how it reads them (`GuardHead.vllm_reads`):
# "pooled" (per-row mean/last sums of `cfg["layers"]`) or "token_logits" (a `PromptWindow` each)
RUNS_INSIDE = tuple(arch for arch, kind in ARCHS.items() if kind.vllm_reads is not None)

# HF (transformers) names of a tail layer's weights -> (vLLM parameter, shard id)
_STACKED = {"q_proj": ("qkv_proj", "q"), "k_proj": ("qkv_proj", "k"), "v_proj": ("qkv_proj", "v"),
            "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1)}


class DSALlamaForCausalLM(LlamaForCausalLM):
    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        _refuse_unsupported(vllm_config)
        hf = vllm_config.model_config.hf_config
        self.dsa_config = cfg = DSAEngineConfig.from_hf_config(hf)
        n, d = hf.num_hidden_layers, hf.hidden_size
        fp = self._base_fingerprint(vllm_config.model_config.model) if cfg.verify_base else None

        with _default_dtype(torch.float32):  # vLLM builds the model under the serving dtype
            adapters = [GuardAdapter.load(p, fp, d) for p in cfg.guards]
        for a in adapters:
            if a.kind.vllm_reads is None:
                raise NotImplementedError(f"{a.task}: only {' and '.join(RUNS_INSIDE)} guard heads run inside vLLM "
                                          f"so far (got {a.arch})")
        self.bank = GuardBank(adapters) if adapters else None
        self.policy_head = resolve_policy_head(self.bank, cfg.policy_head)
        kwargs = dict(cfg.policy_kwargs)
        if self.policy_head is not None:
            kwargs.setdefault("threshold", policy_threshold(self.bank, self.policy_head))
        self.policy = make_policy(cfg.policy, **kwargs)
        plr = [a for a in adapters if a.kind.vllm_reads == "pooled"]
        self.mean_layers = sorted({li for a in plr for li in a.cfg["layers"] if "mean" in a.cfg["poolings"]})
        self.last_layers = sorted({li for a in plr for li in a.cfg["layers"] if "last" in a.cfg["poolings"]})
        self.window_adapters = [(j, a) for j, a in enumerate(adapters) if a.kind.vllm_reads == "token_logits"]

        self.adapter_tensors: dict[str, torch.Tensor] | None = None
        self.k = 0
        taps = set(self.mean_layers) | set(self.last_layers) | {li for _, a in self.window_adapters
                                                                 for li in a.cfg["layers"]}
        if cfg.adapter:
            meta, self.adapter_tensors = load_adapter(cfg.adapter, fp, kind="dsa_logit_adapter")
            self.k = int(meta["config"]["k"])
            self.adapter_input = n - self.k - 1  # layers.{n-k-1}.resid_post feeds the tail
            taps.add(self.adapter_input)
            self.dsa_tail = nn.ModuleList(
                LlamaDecoderLayer(vllm_config=vllm_config, prefix=f"{prefix}dsa_tail.layers.{n + i}")
                for i in range(self.k))
            self.dsa_norm = RMSNorm(d, eps=hf.rms_norm_eps)
        # aux hidden state j is the input of layer j = the resid_post of layer j - 1
        self.taps = sorted(taps)
        self.model.aux_hidden_state_layers = tuple(t + 1 for t in self.taps)
        self._step: dict | None = None

    @staticmethod
    def _base_fingerprint(model: str) -> str:
        if not os.path.isdir(model):
            raise ValueError(f"cannot verify dsa adapters against {model!r} (not a local weights directory); "
                             "serve a local directory or set verify_base=False")
        return fingerprint_dir(model)

    # ---- forward --------------------------------------------------------------------------------
    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None, **kwargs):
        out = self.model(input_ids, positions, intermediate_tensors, inputs_embeds)
        hidden, aux = out if isinstance(out, tuple) else (out, [])
        taps = dict(zip(self.taps, aux, strict=True))  # layer -> [tokens, d]
        self._step = None
        qsl = _query_start_loc()
        if not ROWS.active:
            raise RuntimeError(f"{ARCHITECTURE} needs its row state: pass "
                               "logits_processors=['dsa.vllm.rows:DSARowState'] to the engine")
        real = qsl is not None and len(qsl) - 1 == len(ROWS.rows) and all(r is not None for r in ROWS.rows)
        if not real:  # profile / warm-up runs: no requests behind the tokens
            if self.k:
                self._tail(taps[self.adapter_input], positions)
            return hidden
        self._read_prompts(qsl, taps)
        rows = ROWS.rows
        lam = torch.tensor([r.lam or 0.0 for r in rows], dtype=torch.float32)
        need = [(r.lam or 0.0) > 0 or r.lam is None for r in rows] if self.k else []
        aligned_last = None
        if any(need):
            h = taps[self.adapter_input]
            if all(need):
                aligned = self._tail(h, positions)
            else:  # only the tokens of rows that are (or may still be) aligned
                idx = torch.cat([torch.arange(qsl[i], qsl[i + 1]) for i, x in enumerate(need) if x]).to(h.device)
                aligned = self._tail_rows(h, positions, idx)
            last_idx = torch.tensor(qsl[1:], device=aligned.device) - 1
            aligned_last = aligned[last_idx]  # [num_reqs, d], the rows compute_logits gets (λ > 0 ones are real)
        self._step = {"lam": lam, "aligned_last": aligned_last}
        return hidden

    def _tail(self, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        residual = None
        for layer in self.dsa_tail:
            h, residual = layer(positions, h, residual)
        h, _ = self.dsa_norm(h, residual)
        return h

    def _tail_rows(self, h: torch.Tensor, positions: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The tail on the tokens `idx` only: `LlamaDecoderLayer.forward` with every per-token
        matrix (norms, q/k/v/o projections, MLP) on those tokens, and the attention call on the
        whole step (its metadata covers every token; the others get zero q/k/v, written to tail KV
        slots of rows whose λ is 0 and that never read the tail). Rows outside `idx` come back zero."""
        x, residual, pos = h[idx], None, positions[idx]
        for layer in self.dsa_tail:
            if residual is None:
                residual, x = x, layer.input_layernorm(x)
            else:
                x, residual = layer.input_layernorm(x, residual)
            attn = layer.self_attn
            qkv, _ = attn.qkv_proj(x)
            q, k, v = qkv.split([attn.q_size, attn.kv_size, attn.kv_size], dim=-1)
            q, k = attn.rotary_emb(pos, q, k)
            full = [t.new_zeros(h.shape[0], t.shape[-1]).index_copy_(0, idx, t) for t in (q, k, v)]
            x, _ = attn.o_proj(attn.attn(*full)[idx])
            x, residual = layer.post_attention_layernorm(x, residual)
            x = layer.mlp(x)
        x, _ = self.dsa_norm(x, residual)
        return x.new_zeros(h.shape[0], x.shape[-1]).index_copy_(0, idx, x)

    def _read_prompts(self, qsl: list[int], taps: dict[int, torch.Tensor]) -> None:
        """Add this step's prompt tokens to each row's pooled taps and window states; score the
        rows whose prompt is now complete and fix their λ."""
        complete = []
        z_step = None  # per window adapter: this step's per-token logits [tokens, heads], made once
        for i, row in enumerate(ROWS.rows):
            q = qsl[i + 1] - qsl[i]
            start, row.done = row.done, row.done + q
            if row.lam is not None or start >= row.prompt_len:
                continue
            a, n_prompt = qsl[i], min(row.done, row.prompt_len) - start  # prompt tokens in this chunk
            for li in self.mean_layers:
                s = taps[li][a:a + n_prompt].float().sum(0)
                row.sums[li] = s if li not in row.sums else row.sums[li] + s
            if self.window_adapters:
                if z_step is None:
                    z_step = self._token_logits(taps)
                for j, ad in self.window_adapters:
                    row.windows.setdefault(j, PromptWindow(ad.head.window)).extend(z_step[j][a:a + n_prompt])
            if row.done >= row.prompt_len:
                for li in self.last_layers:
                    row.last[li] = taps[li][a + n_prompt - 1].float()
                complete.append(row)
        if complete:
            self._score(complete)

    @torch.no_grad()
    def _token_logits(self, taps: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """{adapter index: [tokens, heads]} per-token logits (no bias) of each window head over
        the whole step (one matrix product per layer; rows then take their prompt tokens)."""
        out = {}
        for j, a in self.window_adapters:
            dev = next(a.head.buffers()).device
            out[j] = a.head.token_logits({li: taps[li].to(dev) for li in a.cfg["layers"]}).float()
        return out

    @torch.no_grad()
    def _score(self, rows: list) -> None:
        scores: dict[str, torch.Tensor] = {}
        if self.bank is not None:
            for ai, a in enumerate(self.bank.adapters):
                dev = next(a.head.buffers()).device
                if a.kind.vllm_reads == "token_logits":  # max of rolling means, as `WindowHead.forward`
                    logits = torch.stack([r.windows[ai].best.to(dev) for r in rows]) + a.head.net.bias
                    p = a.probs(logits.float()).cpu()
                else:
                    pooled = {}
                    for li in a.cfg["layers"]:
                        for how in a.cfg["poolings"]:
                            pooled[(li, how)] = torch.stack(
                                [r.sums[li] / max(r.prompt_len, 1) if how == "mean" else r.last[li] for r in rows])
                    p = a.probs(a.head(GuardInput(pooled={k: v.to(dev) for k, v in pooled.items()})).float()).cpu()
                for j, q in enumerate(a.qualified):
                    scores[q] = p[:, j]
            lam = self.policy(scores[self.policy_head]).float()
        else:
            lam = torch.zeros(len(rows))
        for i, row in enumerate(rows):
            row.lam = row_lambda(float(lam[i]), row, self.dsa_config.allow_exact_alignment, bool(self.k),
                                 guarded=self.bank is not None)
            row.scores = {q: float(s[i]) for q, s in scores.items()}
            row.sums, row.last, row.windows = {}, {}, {}
            ROWS.store(row)

    # ---- logits -------------------------------------------------------------------------------------
    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self._mix(hidden_states, super().compute_logits)

    def compute_logits_local(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self._mix(hidden_states, super().compute_logits_local)  # vocab-sharded: mixing is elementwise

    def _mix(self, hidden_states: torch.Tensor, head) -> torch.Tensor | None:
        logits = head(hidden_states)
        step, self._step = self._step, None  # once per step: a later call (prompt logprobs) gets the base
        if (logits is None or step is None or step["aligned_last"] is None
                or step["lam"].shape[0] != hidden_states.shape[0]):
            return logits  # no aligned rows this step
        lam = step["lam"]
        sel = (lam > 0).nonzero().flatten()
        if sel.numel() == 0:
            return logits
        aligned = head(step["aligned_last"][sel.to(hidden_states.device)])
        out = logits.float()  # bf16 -> fp32 is exact: λ = 0 rows keep the base values
        idx = sel.to(out.device)
        out[idx] = mix_logits(out[idx], aligned, lam[sel])
        return out

    # ---- weights ------------------------------------------------------------------------------------
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        loaded = set(super().load_weights(weights))
        params = dict(self.named_parameters())
        for name, t in (self.adapter_tensors or {}).items():
            target, shard = _tail_param(name)
            p = params[target]
            loader = getattr(p, "weight_loader", default_weight_loader)
            loader(p, t.to(p.dtype)) if shard is None else loader(p, t.to(p.dtype), shard)
            loaded.add(target)
        self.adapter_tensors = None
        missing = {n for n, _ in self.named_parameters() if n.startswith("dsa_")} - loaded
        if missing:
            raise ValueError(f"dsa adapter weights missing for {sorted(missing)}")
        return loaded


def row_lambda(policy_lam: float, row, allow_exact: bool, can_align: bool, guarded: bool = True) -> float:
    """λ of a request whose prompt has been scored (`dsa.align.policy`: `request_alignment` then
    `decide_lambda`): max(policy λ, the requested floor); the requested value exactly for a
    `dsa_alignment_exact` request on an engine that allows it (an engine that does not serves it
    as a floor, so its clients can only raise λ); 0 without an adapter. `guarded`: the engine has
    guard heads (without them the policy λ is 0 and the requested value is λ)."""
    if row.exact and not allow_exact and can_align:
        log.warning("%s asked for an exact λ, which this engine does not allow (allow_exact_alignment=False): "
                    "served as a floor", row.key or "a request")
    req = request_alignment(row.alignment, exact=row.exact and allow_exact, guarded=guarded)
    return decide_lambda(policy_lam, req.alignment, req.floor, can_align=can_align)


class _default_dtype:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def __enter__(self):
        self.prev = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc) -> None:
        torch.set_default_dtype(self.prev)


def _tail_param(name: str) -> tuple[str, str | int | None]:
    """`layers.{i}.self_attn.q_proj.weight` (HF, as the adapter stores it) -> (vLLM name, shard)."""
    if name == "norm.weight":
        return "dsa_norm.weight", None
    parts = name.split(".")
    if parts[0] != "layers":
        raise ValueError(f"unexpected adapter tensor {name!r}")
    rest = ".".join(parts[2:])
    for hf, (vl, shard) in _STACKED.items():
        if f".{hf}." in f".{rest}":
            return f"dsa_tail.{parts[1]}.{rest.replace(hf, vl)}", shard
    return f"dsa_tail.{parts[1]}.{rest}", None


def _query_start_loc() -> list[int] | None:
    if not is_forward_context_available():
        return None
    meta = get_forward_context().attn_metadata
    if isinstance(meta, list):  # micro-batches: not supported, treated as no requests
        return None
    if not meta:
        return None
    first = next(iter(meta.values()))
    return first.query_start_loc.tolist()


def _refuse_unsupported(vllm_config: VllmConfig) -> None:
    if vllm_config.cache_config.enable_prefix_caching:
        raise ValueError(f"{ARCHITECTURE}: set enable_prefix_caching=False (cached prompt tokens never "
                         "reach the model, so the guard could not pool them)")
    if vllm_config.speculative_config is not None:
        raise ValueError(f"{ARCHITECTURE}: speculative decoding is not supported")
    if vllm_config.parallel_config.pipeline_parallel_size > 1:
        raise NotImplementedError(f"{ARCHITECTURE}: pipeline parallelism is not supported")
