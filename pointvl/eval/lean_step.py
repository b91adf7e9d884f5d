"""The decoding step without Hugging Face's per-step machinery: a Qwen2-style text stack (the
language model of Qwen2.5-VL, or Qwen2) called layer by layer on a preallocated KV cache.

Why: at the tiny profile's size (2 layers, d = 128) a step of ``model(...)`` with a
``DynamicCache`` spends most of its time outside arithmetic (module dispatch, the causal mask
built from the 2-D attention mask, ``torch.cat`` of the whole cache at every token;
``benchmarks/profile_decode.py`` measures both). Here each step is the layers' arithmetic, in
the order and with the kernels transformers uses, on buffers written in place; on the CPU the
log-probs are bitwise those of the module path (``tests/test_lean_step.py``; on a GPU, fused
shapes may pick other GEMM kernels: equal to rounding).

    tok (b,) -> embed                                          h (b, 1, d)
    per layer:  x = RMSNorm(h)
                q, k, v = x [Wq Wk Wv] + [bq bk bv]               (b, H|Hkv, 1, dh)
                q, k = rope(q, k; cos, sin of the row's position)  (q and k at once;
                       cos / sin of all T steps computed at the first step, then sliced)
                K[:, :, s], V[:, :, s] = k, v                    (B, Hkv, L + T, dh) in place
                a = SDPA(q, K[:, :, :s+1], V[...], key mask)     (b, H, 1, dh)
                h = h + a Wo;  x = RMSNorm(h)
                g, u = x [Wgate Wup];  h = h + (silu(g) * u) Wdown
    logits = lm_head(RMSNorm(h))                                  (b, V)

Rows that finish stay in the buffers (their tokens are ignored) until a quarter of the batch
has finished, then the buffers are compacted: one copy per quarter instead of one per row.

``LeanStep.supports(model)`` says whether a model has this shape (Qwen2 / Qwen2.5-VL text
layers, full attention, SDPA or eager, plain linear layers); ``decode`` falls back to the
model's own modules otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.integrations.sdpa_attention import repeat_kv


def text_stack(model):
    """The text model (``layers`` / ``norm`` / ``rotary_emb``) of a Qwen2.5-VL-style policy
    (its ``language_model``) or of a Qwen2-style causal LM (``model``); None if neither."""
    inner = getattr(model, "model", None)
    lm = getattr(inner, "language_model", None)
    if lm is not None and hasattr(inner, "rope_deltas"):
        return lm
    if inner is not None and hasattr(inner, "layers") and hasattr(inner, "rotary_emb"):
        return inner
    return None


def _rms(x: torch.Tensor, norm) -> torch.Tensor:
    """Qwen2's RMSNorm, op for op: float32 variance, rsqrt, weight after the cast back."""
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(dtype)


def _linear(x: torch.Tensor, layer) -> torch.Tensor:
    """``layer(x)`` for an ``nn.Linear`` without the module call (the same addmm / mm)."""
    return F.linear(x, layer.weight, layer.bias)


def _fused_weights(layer) -> tuple:
    """One matrix for q / k / v (with their biases) and one for gate / up, so a layer runs 4
    matrix products per token instead of 7: (W_qkv ((H + 2 Hkv) dh, d), b_qkv, W_gate_up
    (2 I, d), H dh, Hkv dh, I). Each output column is still the dot product of the same row
    and column (bitwise equal to the separate layers on the CPU, tested); built per ``decode``
    call, since the weights change between RL steps."""
    a, m = layer.self_attn, layer.mlp
    w = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
    bias = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
    gu = torch.cat([m.gate_proj.weight, m.up_proj.weight])
    return w, bias, gu, a.q_proj.out_features, a.k_proj.out_features, m.gate_proj.out_features


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LeanStep:
    """Decoding steps of one ``decode`` call. Built from the prefill cache (already repeated
    G times); ``__call__(tok, position_ids)`` -> logits (b, V) of the next token.

    ``attention_mask`` (B, L) marks the prompt's padding (None: no padding, no key mask, as
    ``generate`` drops it). ``max_new_tokens`` sizes the buffers: L + max_new_tokens keys.
    """

    @staticmethod
    def supports(model) -> bool:
        """True for a Qwen2-style text stack this class reproduces: full attention (no
        sliding window), SDPA or eager attention, RMSNorm, a gated MLP, plain ``nn.Linear``
        layers holding their whole weights (a ZeRO-3 shard or an adapter is not), q / k / v
        with biases (Qwen2's)."""
        lm = text_stack(model)
        if lm is None or not hasattr(model, "lm_head"):
            return False
        cfg = lm.config
        if getattr(cfg, "use_sliding_window", False):
            return False
        if any(t != "full_attention" for t in getattr(cfg, "layer_types", ["full_attention"])):
            return False
        if getattr(cfg, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
            return False
        layer = lm.layers[0]
        attn, mlp = layer.self_attn, layer.mlp
        if not hasattr(attn, "num_key_value_groups") or not hasattr(mlp, "act_fn"):
            return False
        linears = [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        linears += [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
        # plain nn.Linear with its full weight (not a LoRA wrapper, not a ZeRO-3 shard)
        if any(type(m) is not torch.nn.Linear or m.weight.dim() != 2 for m in linears):
            return False
        if any(m.bias is None for m in linears[:3]):  # _fused_weights concatenates q/k/v biases
            return False
        return hasattr(layer.input_layernorm, "variance_epsilon")

    def __init__(self, model, cache, attention_mask: torch.Tensor | None, max_new_tokens: int):
        self.model, self.lm = model, text_stack(model)
        self.embed = model.get_input_embeddings()
        self.eager = self.lm.config._attn_implementation == "eager"
        first = cache.layers[0].keys  # (B, Hkv, L, dh)
        B, Hkv, L, dh = first.shape
        self.head_dim = dh
        S = L + max_new_tokens
        self.k, self.v = [], []
        for layer in cache.layers:  # prefill keys / values into (B, Hkv, L + T, dh) buffers
            k = first.new_empty((B, Hkv, S, dh))
            v = first.new_empty((B, Hkv, S, dh))
            k[:, :, :L], v[:, :, :L] = layer.keys, layer.values
            self.k.append(k)
            self.v.append(v)
        self.length = self.prompt_length = L  # keys written so far / by the prefill
        self.max_new_tokens = max_new_tokens
        self.rope: tuple[torch.Tensor, torch.Tensor] | None = None  # (B, T, dh) cos, sin
        self.fused = [_fused_weights(layer) for layer in self.lm.layers]
        # key mask (B, 1, 1, S): the prompt's padding is False; None when there is none
        if attention_mask is None:
            self.key_mask = None
        else:
            self.key_mask = torch.ones((B, 1, 1, S), dtype=torch.bool, device=first.device)
            self.key_mask[:, 0, 0, :L] = attention_mask.bool()

    def select(self, rows: torch.Tensor) -> None:
        """Keep the batch rows ``rows`` (b',) of the buffers (the others finished): each kept
        row's buffer is copied whole, one contiguous block per row (unwritten keys too: a
        strided copy of the written part alone was ~10x slower)."""
        # (b, Hkv, S, dh) -> (b', Hkv, S, dh)
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]
        if self.key_mask is not None:
            self.key_mask = self.key_mask[rows]
        if self.rope is not None:
            self.rope = (self.rope[0][rows], self.rope[1][rows])

    def _attend(self, attn, q, s: int, i: int) -> torch.Tensor:
        """Attention of q (b, H, 1, dh) over the first s keys of layer i -> (b, 1, H * dh),
        as transformers' sdpa / eager interfaces compute it for one query token."""
        K, V = self.k[i][:, :, :s], self.v[i][:, :, :s]  # (b, Hkv, s, dh)
        mask = self.key_mask[..., :s] if self.key_mask is not None else None  # (b, 1, 1, s)
        b, H, _, dh = q.shape
        n_rep = attn.num_key_value_groups
        if self.eager:
            return self._attend_eager(attn, q, K, V, mask)
        if n_rep > 1 and mask is None:
            out = F.scaled_dot_product_attention(q, K, V, scale=attn.scaling, enable_gqa=True)
        elif n_rep > 1:  # transformers' pack_gqa: the group's queries as a query length
            qg = q.reshape(b, H // n_rep, n_rep, dh)  # (b, Hkv, n_rep, dh)
            out = F.scaled_dot_product_attention(qg, K, V, attn_mask=mask, scale=attn.scaling)
        else:
            out = F.scaled_dot_product_attention(q, K, V, attn_mask=mask, scale=attn.scaling)
        out = out.reshape(out.shape[0], -1, 1, dh).transpose(1, 2).contiguous()  # (b, 1, H, dh)
        return out.reshape(b, 1, -1)

    def _attend_eager(self, attn, q, K, V, mask) -> torch.Tensor:
        """The eager interface: repeat_kv, q K^T * scale + additive mask, softmax in fp32."""
        n_rep = attn.num_key_value_groups
        K, V = repeat_kv(K, n_rep), repeat_kv(V, n_rep)  # (b, H, s, dh)
        w = torch.matmul(q, K.transpose(2, 3)) * attn.scaling  # (b, H, 1, s)
        if mask is not None:
            w = w + torch.where(mask, 0.0, torch.finfo(w.dtype).min).to(w.dtype)
        w = torch.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return torch.matmul(w, V).transpose(1, 2).contiguous().reshape(q.shape[0], 1, -1)

    @torch.no_grad()
    def __call__(self, tok: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Logits (b, V) after feeding ``tok`` (b,) at ``position_ids`` ((b, 1) or (4, b, 1):
        a text row + 3 M-RoPE rows, as ``decode`` keeps them)."""
        h = self.embed(tok[:, None])  # (b, 1, d)
        if self.rope is None:  # cos / sin of this and every later step, in one call
            pos = position_ids[1:] if position_ids.dim() == 3 else position_ids
            ahead = torch.arange(self.max_new_tokens, device=pos.device)  # (T,)
            self.rope = self.lm.rotary_emb(h, pos + ahead)  # (b, T, dh) each
        t = self.length - self.prompt_length  # decoding steps run before this one
        cos = self.rope[0][:, None, t : t + 1]  # (b, 1, 1, dh)
        sin = self.rope[1][:, None, t : t + 1]
        s, dh = self.length, self.head_dim
        for i, layer in enumerate(self.lm.layers):
            attn = layer.self_attn
            x = _rms(h, layer.input_layernorm)  # (b, 1, d)
            b = x.shape[0]
            w_qkv, b_qkv, w_gu, nq, nkv, ni = self.fused[i]
            qkv = F.linear(x, w_qkv, b_qkv)  # (b, 1, (H + 2 Hkv) dh)
            qk, v = qkv.split((nq + nkv, nkv), dim=-1)
            qk = qk.view(b, 1, -1, dh).transpose(1, 2)  # (b, H + Hkv, 1, dh)
            v = v.view(b, 1, -1, dh).transpose(1, 2)  # (b, Hkv, 1, dh)
            qk = (qk * cos) + (_rotate_half(qk) * sin)  # q and k rotated at once
            q, k = qk.split((nq // dh, nkv // dh), dim=1)  # (b, H, 1, dh), (b, Hkv, 1, dh)
            self.k[i][:, :, s : s + 1] = k
            self.v[i][:, :, s : s + 1] = v
            h = h + _linear(self._attend(attn, q, s + 1, i), attn.o_proj)  # (b, 1, d)
            x = _rms(h, layer.post_attention_layernorm)
            mlp = layer.mlp
            gate, up = F.linear(x, w_gu).split((ni, ni), dim=-1)
            gated = mlp.act_fn(gate) * up
            h = h + _linear(gated, mlp.down_proj)  # (b, 1, d)
        self.length = s + 1
        return self.model.lm_head(_rms(h, self.lm.norm)[:, -1])  # (b, V)
