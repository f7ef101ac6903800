#!/usr/bin/python3
"""Builds the probe corpus: small transformer modules written from their equations, one per
export form, exported with torch.onnx.export at two or three opsets, with reference inputs and outputs
and a manifest of each module's architecture facts.

Run from anywhere with torch 1.13 and onnx:  /usr/bin/python3 testdata/probes/make_probes.py
The output is deterministic (fixed seeds; npz members written with a fixed timestamp).
See README.md beside this file for the forms and their equations.
"""
import io
import json
import math
import os
import sys
import zipfile

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))

V, E, H, D, FF, L, MAXPOS = 16, 32, 4, 8, 40, 2, 16
MIN = torch.finfo(torch.float32).min
TRACE_B, TRACE_S = 3, 8  # the shape the exporter traces
REF_B, REF_S, REF_T = 2, 11, 7  # the reference run: another batch and sequence length
PAST = 3  # cached positions before the step (gpt2-past; the trace uses the same)


# ---------------------------------------------------------------- building blocks


class Attn(nn.Module):
    """Marks attention modules: the manifest counts them (kind self or cross)."""

    is_attention = True
    kind = "self"
    causal = False

    def __init__(self, heads, kv_heads=None):
        super().__init__()
        self.heads = heads
        self.kv_heads = kv_heads or heads


class FFN(nn.Module):
    """Marks feed-forward modules: one activation each."""

    is_ffn = True


class RMSNorm(nn.Module):
    """y = w * x / sqrt(mean(x^2) + eps), computed in float32 (LLaMA/T5 form: Pow, rsqrt)."""

    def __init__(self, n, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        x = x.to(torch.float32)
        var = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(var + self.eps)
        return self.weight * x.to(dt)


class RMSNormDiv(RMSNorm):
    """The same norm written as x*x, mean, Sqrt and Div."""

    def forward(self, x):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps) * self.weight


def gelu_new(x):
    """GELU, tanh approximation written out (GPT-2's gelu_new)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def padding_bias(mask):
    """[B,S] 1 = keep, 0 = pad  ->  additive [B,1,1,S]: 0 or the most negative float."""
    return (1.0 - mask[:, None, None, :].to(torch.float32)) * MIN


def heads(x, n):
    """[B,S,n*D] -> [B,n,S,D]."""
    B, S, _ = x.shape
    return x.view(B, S, n, -1).transpose(1, 2)


def merge(x):
    """[B,H,S,D] -> [B,S,H*D]."""
    B, _, S, _ = x.shape
    return x.transpose(1, 2).reshape(B, S, -1)


class MLP(FFN):
    """fc2(act(fc1(x)))."""

    def __init__(self, act, e=E, ff=FF):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(e, ff), nn.Linear(ff, e), act

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Gated(FFN):
    """down(act(x W_gate) * (x W_up)), no biases (SwiGLU with SiLU, GeGLU with GELU)."""

    def __init__(self, act, e=E, ff=FF):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(e, ff, bias=False), nn.Linear(e, ff, bias=False), nn.Linear(ff, e, bias=False)
        self.act = act

    def forward(self, x):
        return self.down(self.act(self.gate(x)) * self.up(x))


class Model(nn.Module):
    num_layers = L
    inputs = ("input_ids", "attention_mask")
    outputs = ("last_hidden_state",)


# ---------------------------------------------------------------- gpt2-causal


class Conv1D(nn.Module):
    """GPT-2's linear layer with an [in, out] weight: addmm on the 2-D view (Gemm) or matmul + add."""

    def __init__(self, nin, nout, addmm):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(nin, nout))
        self.bias = nn.Parameter(torch.zeros(nout))
        self.addmm = addmm

    def forward(self, x):
        size = x.size()[:-1] + (self.weight.size(1),)
        if self.addmm:
            return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size)
        return torch.matmul(x, self.weight) + self.bias


class GPT2Attention(Attn):
    causal = True

    def __init__(self):
        super().__init__(H)
        self.c_attn, self.c_proj = Conv1D(E, 3 * E, True), Conv1D(E, E, True)
        self.register_buffer("bias", torch.tril(torch.ones(MAXPOS, MAXPOS, dtype=torch.bool)).view(1, 1, MAXPOS, MAXPOS), persistent=False)

    def forward(self, x, pad):
        q, k, v = self.c_attn(x).split(E, dim=2)
        q, k, v = heads(q, H).contiguous(), heads(k, H).contiguous(), heads(v, H).contiguous()
        w = torch.matmul(q, k.transpose(-1, -2))
        w = w / torch.full([], v.size(-1) ** 0.5, dtype=w.dtype)
        S = q.size(-2)
        causal = self.bias[:, :, S - S : S, :S]
        w = torch.where(causal, w, torch.tensor(MIN, dtype=w.dtype))
        w = w + pad
        w = F.softmax(w, dim=-1)
        return self.c_proj(merge(torch.matmul(w, v)))


class GPT2MLP(FFN):
    def __init__(self):
        super().__init__()
        self.c_fc, self.c_proj = Conv1D(E, FF, False), Conv1D(FF, E, False)

    def forward(self, x):
        return self.c_proj(gelu_new(self.c_fc(x)))


class GPT2(Model):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, E), nn.Embedding(MAXPOS, E)
        self.ln_1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(GPT2Attention() for _ in range(L))
        self.ln_2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(GPT2MLP() for _ in range(L))
        self.ln_f = nn.LayerNorm(E)

    def forward(self, input_ids, attention_mask):
        pos = torch.arange(0, input_ids.size(-1), dtype=torch.long).unsqueeze(0)
        x = self.wte(input_ids) + self.wpe(pos)
        pad = padding_bias(attention_mask)
        for i in range(L):
            x = x + self.attn[i](self.ln_1[i](x), pad)
            x = x + self.mlp[i](self.ln_2[i](x))
        return self.ln_f(x)


class GPT2PastAttention(GPT2Attention):
    """GPT-2 attention with a key/value cache: K and V are the cache concatenated with this
    step's keys and values along the sequence; the causal buffer is sliced to the queries'
    rows [P, P+S) and the keys' columns [0, P+S)."""

    def forward(self, x, pad, pk, pv):
        q, k, v = self.c_attn(x).split(E, dim=2)
        q, k, v = heads(q, H), heads(k, H), heads(v, H)
        k, v = torch.cat((pk, k), dim=-2), torch.cat((pv, v), dim=-2)
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D)
        S, T = q.size(-2), k.size(-2)
        causal = self.bias[:, :, T - S : T, :T]
        w = torch.where(causal, w, torch.tensor(MIN, dtype=w.dtype)) + pad
        w = F.softmax(w, dim=-1)
        return self.c_proj(merge(torch.matmul(w, v))), k, v


class GPT2Past(GPT2):
    inputs = ("input_ids", "attention_mask", "past_key", "past_value")
    outputs = ("last_hidden_state", "present_key", "present_value")

    def __init__(self):
        super().__init__()
        self.attn = nn.ModuleList(GPT2PastAttention() for _ in range(L))

    def forward(self, input_ids, attention_mask, past_key, past_value):
        P = past_key.size(-2)
        pos = torch.arange(P, P + input_ids.size(-1), dtype=torch.long).unsqueeze(0)
        x = self.wte(input_ids) + self.wpe(pos)
        pad = padding_bias(attention_mask)
        ks, vs = [], []
        for i in range(L):
            a, k, v = self.attn[i](self.ln_1[i](x), pad, past_key[i], past_value[i])
            ks.append(k)
            vs.append(v)
            x = x + a
            x = x + self.mlp[i](self.ln_2[i](x))
        return self.ln_f(x), torch.stack(ks), torch.stack(vs)


# ---------------------------------------------------------------- llama and rotary-interleaved


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def repeat_kv(x, n_rep):
    """[B,KV,S,D] -> [B,KV*n_rep,S,D] by unsqueeze, expand, reshape."""
    B, kv, S, d = x.shape
    return x[:, :, None, :, :].expand(B, kv, n_rep, S, d).reshape(B, kv * n_rep, S, d)


class LlamaAttention(Attn):
    causal = True
    rotaries = 2

    def __init__(self, kv_heads=2):
        super().__init__(H, kv_heads)
        self.q_proj = nn.Linear(E, H * D, bias=False)
        self.k_proj = nn.Linear(E, kv_heads * D, bias=False)
        self.v_proj = nn.Linear(E, kv_heads * D, bias=False)
        self.o_proj = nn.Linear(H * D, E, bias=False)

    def forward(self, x, mask, cos, sin):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), self.kv_heads), heads(self.v_proj(x), self.kv_heads)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // self.kv_heads), repeat_kv(v, H // self.kv_heads)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(merge(torch.matmul(w, v)))


class Llama(Model):
    inputs = ("input_ids", "attention_mask", "position_ids")

    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, E)
        self.input_layernorm = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.self_attn = nn.ModuleList(LlamaAttention() for _ in range(L))
        self.post_attention_layernorm = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(Gated(F.silu) for _ in range(L))
        self.norm = RMSNorm(E)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
        freqs = torch.outer(torch.arange(MAXPOS).float(), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", emb.cos(), persistent=False)
        self.register_buffer("sin_cached", emb.sin(), persistent=False)

    def forward(self, input_ids, attention_mask, position_ids):
        B, S = input_ids.shape
        x = self.embed_tokens(input_ids)
        cos = self.cos_cached[:S][position_ids].unsqueeze(1)  # [B,1,S,D]
        sin = self.sin_cached[:S][position_ids].unsqueeze(1)
        causal = torch.triu(torch.full((S, S), MIN), diagonal=1)
        mask = causal[None, None, :, :] + padding_bias(attention_mask)
        for i in range(L):
            x = x + self.self_attn[i](self.input_layernorm[i](x), mask, cos, sin)
            x = x + self.mlp[i](self.post_attention_layernorm[i](x))
        return self.norm(x)


def rotate_interleaved(x, cos, sin):
    """Pairs (x[2i], x[2i+1]) rotated by the angle of position and frequency i."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class InterleavedAttention(Attn):
    causal = True
    rotaries = 2

    def __init__(self):
        super().__init__(H)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(E, E, bias=False) for _ in range(4))

    def forward(self, x, causal, pad, cos, sin):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), H), heads(self.v_proj(x), H)
        q, k = rotate_interleaved(q, cos, sin), rotate_interleaved(k, cos, sin)
        w = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(D))
        w = w.masked_fill(causal, MIN) + pad
        w = torch.softmax(w, dim=-1)
        return self.o_proj(merge(torch.matmul(w, v)))


class RotaryInterleaved(Model):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.norm1 = nn.ModuleList(RMSNormDiv(E) for _ in range(L))
        self.attn = nn.ModuleList(InterleavedAttention() for _ in range(L))
        self.norm2 = nn.ModuleList(RMSNormDiv(E) for _ in range(L))
        self.mlp = nn.ModuleList(Gated(F.silu) for _ in range(L))
        self.norm = RMSNormDiv(E)
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D)), persistent=False)

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        t = torch.arange(S, dtype=torch.float32)
        freqs = t[:, None] * self.inv_freq[None, :]  # [S, D/2]
        cos, sin = freqs.cos()[None, None], freqs.sin()[None, None]
        causal = torch.triu(torch.ones(S, S, dtype=torch.bool), diagonal=1)
        pad = padding_bias(attention_mask)
        x = self.embed(input_ids)
        for i in range(L):
            x = x + self.attn[i](self.norm1[i](x), causal, pad, cos, sin)
            x = x + self.mlp[i](self.norm2[i](x))
        return self.norm(x)


# ---------------------------------------------------------------- gptj-rotary


def rotate_every_two(x):
    """Pairs (x[2i], x[2i+1]) -> (-x[2i+1], x[2i])."""
    return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)


class GPTJAttention(Attn):
    causal = True
    rotaries = 2

    def __init__(self):
        super().__init__(H)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(E, E, bias=False) for _ in range(4))

    def forward(self, x, causal, pad, cos, sin):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), H), heads(self.v_proj(x), H)
        q = q * cos + rotate_every_two(q) * sin
        k = k * cos + rotate_every_two(k) * sin
        w = torch.matmul(q, k.transpose(-1, -2))
        w = torch.where(causal, w, torch.tensor(MIN)) / math.sqrt(D) + pad
        w = torch.softmax(w, dim=-1)
        return self.out_proj(merge(torch.matmul(w, v)))


class GPTJ(Model):
    """GPT-J's block: parallel attention and MLP off one LayerNorm, rotate-every-two rotary
    with sin and cos gathered from one [positions, D] table and each angle repeated in two
    adjacent channels, causal mask as a sliced boolean buffer filled by Where."""

    inputs = ("input_ids", "attention_mask", "position_ids")

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(V, E)
        self.ln = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(GPTJAttention() for _ in range(L))
        self.mlp = nn.ModuleList(MLP(gelu_new) for _ in range(L))
        self.ln_f = nn.LayerNorm(E)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
        freqs = torch.outer(torch.arange(MAXPOS).float(), inv_freq)
        self.register_buffer("embed_positions", torch.cat((freqs.sin(), freqs.cos()), dim=-1), persistent=False)
        self.register_buffer("bias", torch.tril(torch.ones(MAXPOS, MAXPOS, dtype=torch.bool))[None, None], persistent=False)

    def forward(self, input_ids, attention_mask, position_ids):
        S = input_ids.shape[1]
        sincos = self.embed_positions[position_ids]  # [B,S,D]
        sin, cos = torch.split(sincos, D // 2, dim=-1)
        # Each angle twice in a row (torch.repeat_interleave's own export is wrong at
        # other shapes than the traced one): by a stack, and by an expand.
        sin = torch.stack((sin, sin), dim=-1).flatten(-2)[:, None]  # [B,1,S,D]
        cos = cos[..., None].expand(*cos.shape, 2).flatten(-2)[:, None]
        causal = self.bias[:, :, :S, :S]
        pad = padding_bias(attention_mask)
        x = self.wte(input_ids)
        for i in range(L):
            h = self.ln[i](x)
            x = x + self.attn[i](h, causal, pad, cos, sin) + self.mlp[i](h)
        return self.ln_f(x)


# ---------------------------------------------------------------- neox


class NeoXAttention(Attn):
    causal = True
    rotaries = 2

    def __init__(self):
        super().__init__(H)
        self.query_key_value, self.dense = nn.Linear(E, 3 * E), nn.Linear(E, E)
        self.rotary_ndims = D // 2

    def forward(self, x, causal, pad, cos, sin):
        B, S, _ = x.shape
        qkv = self.query_key_value(x).view(B, S, H, 3 * D)  # per head: its q, k and v
        q = qkv[..., :D].permute(0, 2, 1, 3)
        k = qkv[..., D : 2 * D].permute(0, 2, 1, 3)
        v = qkv[..., 2 * D :].permute(0, 2, 1, 3)
        r = self.rotary_ndims
        q = torch.cat((q[..., :r] * cos + rotate_half(q[..., :r]) * sin, q[..., r:]), dim=-1)
        k = torch.cat((k[..., :r] * cos + rotate_half(k[..., :r]) * sin, k[..., r:]), dim=-1)
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D)
        w = torch.where(causal, w, torch.tensor(MIN, dtype=w.dtype)) + pad
        w = torch.softmax(w, dim=-1)
        return self.dense(merge(torch.matmul(w, v)))


class NeoX(Model):
    """GPT-NeoX / Pythia: Q, K and V packed per head in one projection ([B,S,H,3D], each
    head's q, k, v sliced off its last axis), partial rotate-half rotary on the first half
    of each head (the other half passed through), parallel residual with two LayerNorms:
    x + attn(LN1(x)) + mlp(LN2(x))."""

    inputs = ("input_ids", "attention_mask", "position_ids")

    def __init__(self):
        super().__init__()
        self.embed_in = nn.Embedding(V, E)
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(NeoXAttention() for _ in range(L))
        self.mlp = nn.ModuleList(MLP(F.gelu) for _ in range(L))
        self.final_layer_norm = nn.LayerNorm(E)
        r = D // 2
        inv_freq = 1.0 / (10000 ** (torch.arange(0, r, 2).float() / r))
        freqs = torch.outer(torch.arange(MAXPOS).float(), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", emb.cos()[None, None], persistent=False)
        self.register_buffer("sin_cached", emb.sin()[None, None], persistent=False)
        self.register_buffer("bias", torch.tril(torch.ones(MAXPOS, MAXPOS, dtype=torch.bool))[None, None], persistent=False)

    def forward(self, input_ids, attention_mask, position_ids):
        S = input_ids.shape[1]
        cos = self.cos_cached[0, 0][position_ids][:, None]  # [B,1,S,r]
        sin = self.sin_cached[0, 0][position_ids][:, None]
        causal = self.bias[:, :, :S, :S]
        pad = padding_bias(attention_mask)
        x = self.embed_in(input_ids)
        for i in range(L):
            x = x + self.attn[i](self.ln1[i](x), causal, pad, cos, sin) + self.mlp[i](self.ln2[i](x))
        return self.final_layer_norm(x)


# ---------------------------------------------------------------- bloom


def alibi_slopes(n):
    """The geometric head slopes of ALiBi for a power-of-two head count."""
    start = 2 ** (-(2 ** -(math.log2(n) - 3)))
    return torch.tensor([start ** (i + 1) for i in range(n)])


class BloomAttention(Attn):
    causal = True

    def __init__(self):
        super().__init__(H)
        self.query_key_value, self.dense = nn.Linear(E, 3 * E), nn.Linear(E, E)

    def forward(self, x, alibi, mask):
        B, S, _ = x.shape
        qkv = self.query_key_value(x).view(B, S, H, 3, D)  # per head: q, k, v
        q = qkv[..., 0, :].transpose(1, 2).reshape(B * H, S, D)
        k = qkv[..., 1, :].permute(0, 2, 3, 1).reshape(B * H, D, S)
        v = qkv[..., 2, :].transpose(1, 2).reshape(B * H, S, D)
        w = alibi.baddbmm(batch1=q, batch2=k, beta=1.0, alpha=1.0 / math.sqrt(D))  # [B*H,S,S]
        w = w.view(B, H, S, S).masked_fill(mask, MIN)
        p = F.softmax(w, dim=-1, dtype=torch.float32).view(B * H, S, S)
        ctx = torch.bmm(p, v).view(B, H, S, D).permute(0, 2, 1, 3).reshape(B, S, E)
        return self.dense(ctx)


class MPTAttention(Attn):
    causal = True

    def __init__(self):
        super().__init__(H)
        self.Wqkv, self.out_proj = nn.Linear(E, 3 * E, bias=False), nn.Linear(E, E, bias=False)

    def forward(self, x, bias):
        q, k, v = self.Wqkv(x).chunk(3, dim=2)
        q, v = heads(q, H), heads(v, H)
        k = heads(k, H).permute(0, 1, 3, 2)  # [B,H,D,T]
        w = q.matmul(k) * (1 / math.sqrt(D)) + bias  # the ALiBi and mask term after the scale
        return self.out_proj(merge(torch.softmax(w, dim=-1).matmul(v)))


class BiaslessLayerNorm(nn.Module):
    """MPT's LayerNorm without a bias (low_precision_layernorm, no_bias=True)."""

    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, None, 1e-5)


class MPT(Model):
    """MPT: ALiBi on the key position only ([1, H, 1, T], relative to the last key: the
    softmax is blind to a shift per query), the causal and padding masks filled into it
    once, packed Wqkv chunked in three, no biases anywhere, LayerNorms without a bias, no
    position embeddings."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(V, E)
        self.norm_1 = nn.ModuleList(BiaslessLayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(MPTAttention() for _ in range(L))
        self.norm_2 = nn.ModuleList(BiaslessLayerNorm(E) for _ in range(L))
        self.ffn = nn.ModuleList(MPTFFN() for _ in range(L))
        self.norm_f = BiaslessLayerNorm(E)
        self.register_buffer("slopes", alibi_slopes(H), persistent=False)

    def forward(self, input_ids, attention_mask):
        B, T = input_ids.shape
        dist = torch.arange(1 - T, 1, dtype=torch.float32).view(1, 1, 1, T)
        bias = self.slopes.view(1, H, 1, 1) * dist  # [1,H,1,T]
        causal = ~torch.ones(T, T, dtype=torch.bool).tril()[None, None]
        pad = (attention_mask == 0).view(B, 1, 1, T)
        bias = bias.masked_fill(pad, MIN).masked_fill(causal, MIN)  # [B,H,T,T]
        x = self.wte(input_ids)
        for i in range(L):
            x = x + self.attn[i](self.norm_1[i](x), bias)
            x = x + self.ffn[i](self.norm_2[i](x))
        return self.norm_f(x)


class MPTFFN(FFN):
    def __init__(self):
        super().__init__()
        self.up_proj, self.down_proj = nn.Linear(E, FF, bias=False), nn.Linear(FF, E, bias=False)

    def forward(self, x):
        return self.down_proj(F.gelu(self.up_proj(x)))


class BroadcastGQAAttention(Attn):
    """Grouped-query attention by matmul broadcasting, with no repeat of K and V: Q viewed
    [B, KV, H/KV, S, D] against K [B, KV, 1, D, T] and V [B, KV, 1, T, D]."""

    def __init__(self, kv_heads=2):
        super().__init__(H, kv_heads)
        self.q_proj = nn.Linear(E, H * D, bias=False)
        self.k_proj, self.v_proj = nn.Linear(E, kv_heads * D, bias=False), nn.Linear(E, kv_heads * D, bias=False)
        self.o_proj = nn.Linear(H * D, E, bias=False)

    def forward(self, x, mask):
        B, S, _ = x.shape
        KV = self.kv_heads
        q = self.q_proj(x).view(B, S, KV, H // KV, D).permute(0, 2, 3, 1, 4)
        k = self.k_proj(x).view(B, S, KV, 1, D).permute(0, 2, 3, 4, 1)
        v = self.v_proj(x).view(B, S, KV, 1, D).permute(0, 2, 3, 1, 4)
        w = torch.softmax(torch.matmul(q, k) / math.sqrt(D) + mask[:, :, None], dim=-1)  # mask [B,1,1,1,T]
        c = torch.matmul(w, v).reshape(B, H, S, D).transpose(1, 2).reshape(B, S, H * D)
        return self.o_proj(c)


class BroadcastGQA(Model):
    """Pre-RMSNorm blocks whose attention groups the query heads by broadcasting against
    two K/V heads, SwiGLU FFN, a padding mask."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.ln1 = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(BroadcastGQAAttention() for _ in range(L))
        self.ln2 = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(Gated(F.silu) for _ in range(L))
        self.norm = RMSNorm(E)

    def forward(self, input_ids, attention_mask):
        mask = padding_bias(attention_mask)
        x = self.embed(input_ids)
        for i in range(L):
            x = x + self.attn[i](self.ln1[i](x), mask)
            x = x + self.mlp[i](self.ln2[i](x))
        return self.norm(x)


class Bloom(Model):
    """BLOOM: ALiBi (slope_h · position of the key, from the cumulative sum of the padding
    mask, as [B·H, 1, S] added by baddbmm with the 1/√D scale on Q·Kᵀ), 3-D heads
    [B·H, S, D], Q, K and V packed per head as [B,S,H,3,D], causal and padding combined
    into one boolean mask filled with min_f32, LayerNorm after the embedding, pre-LN,
    GELU (tanh) MLP."""

    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(V, E)
        self.word_embeddings_layernorm = nn.LayerNorm(E)
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(BloomAttention() for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(gelu_new) for _ in range(L))
        self.ln_f = nn.LayerNorm(E)
        self.register_buffer("slopes", alibi_slopes(H), persistent=False)

    def forward(self, input_ids, attention_mask):
        B, S = input_ids.shape
        pos = ((attention_mask.cumsum(dim=-1) - 1) * attention_mask)[:, None, :].to(torch.float32)  # [B,1,S]
        alibi = (self.slopes[None, :, None] * pos).reshape(B * H, 1, S)
        causal = torch.triu(torch.ones(S, S, dtype=torch.bool), diagonal=1)[None, None]
        mask = causal | (attention_mask[:, None, None, :] == 0)
        x = self.word_embeddings_layernorm(self.word_embeddings(input_ids))
        for i in range(L):
            x = x + self.attn[i](self.ln1[i](x), alibi, mask)
            x = x + self.mlp[i](self.ln2[i](x))
        return self.ln_f(x)


# ---------------------------------------------------------------- swin

SW_P, SW_WS = 8, 4  # swin: an 8x8 patch grid in windows of 4x4
SW_N, SW_NW = SW_WS * SW_WS, (SW_P // SW_WS) ** 2


def swin_relative_index(ws):
    """[N, N] index into the (2ws-1)^2 relative-position table, for windows of ws x ws."""
    c = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # [2, N]
    rel = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def swin_shift_mask(p, ws, shift):
    """[nW, N, N]: 0 where two tokens of a shifted window came from the same region, else -100."""
    img = torch.zeros(p, p)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[hs, wsl] = cnt
            cnt += 1
    win = img.view(p // ws, ws, p // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    m = win[:, None, :] - win[:, :, None]
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


class SwinAttention(Attn):
    """Window attention on [B·nW, N, C]: packed qkv reshaped [Bw, N, 3, H, D], Q scaled,
    a relative-position bias gathered from a learned table by a constant index, and in
    shifted windows the [nW, N, N] region mask added through a 5-D view of the scores."""

    def __init__(self, shift):
        super().__init__(H)
        self.shift = shift
        self.qkv, self.proj = nn.Linear(E, 3 * E), nn.Linear(E, E)
        self.table = nn.Parameter(torch.zeros((2 * SW_WS - 1) ** 2, H))
        self.register_buffer("index", swin_relative_index(SW_WS), persistent=False)
        self.register_buffer("mask", swin_shift_mask(SW_P, SW_WS, SW_WS // 2), persistent=False)

    def forward(self, x):
        Bw, N, C = x.shape
        qkv = self.qkv(x).reshape(Bw, N, 3, H, C // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * (C // H) ** -0.5
        w = q @ k.transpose(-2, -1)
        bias = self.table[self.index.view(-1)].view(N, N, -1).permute(2, 0, 1)
        w = w + bias.unsqueeze(0)
        if self.shift:
            w = w.view(Bw // SW_NW, SW_NW, H, N, N) + self.mask.unsqueeze(1).unsqueeze(0)
            w = w.view(-1, H, N, N)
        w = w.softmax(dim=-1)
        return self.proj((w @ v).transpose(1, 2).reshape(Bw, N, C))


class Swin(Model):
    """Swin Transformer stage: patch Conv, LayerNorm; blocks alternate window attention and
    shifted-window attention (torch.roll by half a window, region mask); windows
    partitioned from and merged back into the [B, 8, 8, C] grid by view/permute; pre-LN
    blocks with GELU MLPs; final LN."""

    inputs = ("pixel_values",)

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, E, kernel_size=2, stride=2)
        self.patch_norm = nn.LayerNorm(E)
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(SwinAttention(i % 2 == 1) for i in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(nn.GELU()) for _ in range(L))
        self.layernorm = nn.LayerNorm(E)

    def forward(self, pixel_values):
        x = self.patch_norm(self.patch(pixel_values).flatten(2).transpose(1, 2))  # [B, 64, C]
        B, _, C = x.shape
        p, ws = SW_P, SW_WS
        for i in range(L):
            h = self.ln1[i](x).view(B, p, p, C)
            if self.attn[i].shift:
                h = torch.roll(h, shifts=(-ws // 2, -ws // 2), dims=(1, 2))
            win = h.view(B, p // ws, ws, p // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)
            a = self.attn[i](win)
            a = a.view(B, p // ws, p // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, p, p, C)
            if self.attn[i].shift:
                a = torch.roll(a, shifts=(ws // 2, ws // 2), dims=(1, 2))
            x = x + a.reshape(B, p * p, C)
            x = x + self.mlp[i](self.ln2[i](x))
        return self.layernorm(x)


# ---------------------------------------------------------------- falcon


class FalconAttention(Attn):
    causal = True
    rotaries = 2

    def __init__(self):
        super().__init__(H, 1)
        self.query_key_value = nn.Linear(E, (H + 2) * D, bias=False)
        self.dense = nn.Linear(E, E, bias=False)

    def forward(self, x, mask, cos, sin):
        B, S, _ = x.shape
        qkv = self.query_key_value(x).view(B, S, H + 2, D)  # H query heads, one key, one value
        q = qkv[:, :, :-2].transpose(1, 2)  # [B,H,S,D]
        k = qkv[:, :, -2:-1].transpose(1, 2)  # [B,1,S,D]
        v = qkv[:, :, -1:].transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        w = (q @ k.transpose(-1, -2)) / math.sqrt(D) + mask  # K broadcast over the heads
        w = F.softmax(w, dim=-1)
        return self.dense(merge(w @ v))


class Falcon(Model):
    """Falcon-7B: multi-query attention packed in one projection ([B,S,H+2,D]: the query
    heads, then one key and one value head, sliced off the head axis), rotate-half rotary
    with cos/sin computed from arange(S), one LayerNorm feeding attention and MLP in
    parallel, no biases, causal + padding as one additive mask."""

    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(V, E)
        self.ln = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(FalconAttention() for _ in range(L))
        self.mlp = nn.ModuleList(MLP(F.gelu) for _ in range(L))
        self.ln_f = nn.LayerNorm(E)
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D)), persistent=False)

    def rotary_and_mask(self, S, attention_mask):
        """cos, sin [1, 1, S, D] computed from arange(S); causal + padding mask."""
        t = torch.arange(S, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        mask = torch.triu(torch.full((S, S), MIN), diagonal=1)[None, None] + padding_bias(attention_mask)
        return emb.cos()[None, None], emb.sin()[None, None], mask

    def forward(self, input_ids, attention_mask):
        cos, sin, mask = self.rotary_and_mask(input_ids.shape[1], attention_mask)
        x = self.word_embeddings(input_ids)
        for i in range(L):
            h = self.ln[i](x)
            x = x + self.attn[i](h, mask, cos, sin) + self.mlp[i](h)
        return self.ln_f(x)


class Falcon40BAttention(Attn):
    """Falcon-40B's (new_decoder_architecture) grouped attention: one projection viewed
    [B, S, KV, H/KV + 2, D], each group's query heads then its key and its value; K and V
    taken by index lists ([-2], [-1]) and expanded to the queries' shape, then the groups
    and heads flattened into H heads."""

    causal = True
    rotaries = 2

    def __init__(self):
        super().__init__(H, 2)
        self.query_key_value = nn.Linear(E, (H + 2 * 2) * D, bias=False)
        self.dense = nn.Linear(E, E, bias=False)

    def forward(self, x, mask, cos, sin):
        B, S, _ = x.shape
        qkv = self.query_key_value(x).view(B, S, 2, H // 2 + 2, D)
        q = qkv[:, :, :, :-2]
        k = qkv[:, :, :, [-2]].expand(q.shape)
        v = qkv[:, :, :, [-1]].expand(q.shape)
        q, k, v = (t.flatten(2, 3).transpose(1, 2) for t in (q, k, v))
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        w = (q @ k.transpose(-1, -2)) / math.sqrt(D) + mask
        w = F.softmax(w, dim=-1)
        return self.dense(merge(w @ v))


class Falcon40B(Falcon):
    """Falcon-40B: grouped attention from one interleaved projection, two LayerNorms per
    layer (ln_attn, ln_mlp) feeding attention and MLP in parallel."""

    def __init__(self):
        super().__init__()
        self.attn = nn.ModuleList(Falcon40BAttention() for _ in range(L))
        self.ln_mlp = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))

    def forward(self, input_ids, attention_mask):
        cos, sin, mask = self.rotary_and_mask(input_ids.shape[1], attention_mask)
        x = self.word_embeddings(input_ids)
        for i in range(L):
            x = x + self.attn[i](self.ln[i](x), mask, cos, sin) + self.mlp[i](self.ln_mlp[i](x))
        return self.ln_f(x)


# ---------------------------------------------------------------- t5


def t5_bucket(rel, num_buckets=32, max_distance=64):
    """Bidirectional bucket of a relative position: exact below num_buckets/4, log-spaced above."""
    num_buckets //= 2
    ret = (rel > 0).to(torch.long) * num_buckets
    n = torch.abs(rel)
    max_exact = num_buckets // 2
    small = n < max_exact
    large = max_exact + (torch.log(n.float() / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return ret + torch.where(small, n, large)


class T5Attention(Attn):
    def __init__(self):
        super().__init__(H)
        self.q, self.k, self.v, self.o = (nn.Linear(E, E, bias=False) for _ in range(4))

    def forward(self, x, bias):
        q, k, v = heads(self.q(x), H), heads(self.k(x), H), heads(self.v(x), H)
        w = torch.matmul(q, k.transpose(3, 2)) + bias  # no 1/sqrt(d): folded into the init in T5
        w = F.softmax(w.float(), dim=-1).type_as(w)
        return self.o(merge(torch.matmul(w, v)))


class T5ReluFFN(FFN):
    def __init__(self):
        super().__init__()
        self.wi, self.wo = nn.Linear(E, FF, bias=False), nn.Linear(FF, E, bias=False)

    def forward(self, x):
        return self.wo(F.relu(self.wi(x)))


class T5(Model):
    def __init__(self, geglu):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.relative_attention_bias = nn.Embedding(32, H)
        self.ln1 = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(T5Attention() for _ in range(L))
        self.ln2 = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.ff = nn.ModuleList((Gated(gelu_new) if geglu else T5ReluFFN()) for _ in range(L))
        self.final_layer_norm = RMSNorm(E)

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        ctx = torch.arange(S, dtype=torch.long)[:, None]
        mem = torch.arange(S, dtype=torch.long)[None, :]
        bucket = t5_bucket(mem - ctx)
        bias = self.relative_attention_bias(bucket).permute([2, 0, 1]).unsqueeze(0)  # [1,H,S,S]
        bias = bias + padding_bias(attention_mask)  # computed once, added in every layer
        x = self.embed(input_ids)
        for i in range(L):
            x = x + self.attn[i](self.ln1[i](x), bias)
            x = x + self.ff[i](self.ln2[i](x))
        return self.final_layer_norm(x)


def t5_causal_bucket(rel, num_buckets=32, max_distance=128):
    """Unidirectional bucket (the decoder's): only keys at or before the query count; exact
    below num_buckets/2, log-spaced above."""
    n = -torch.min(rel, torch.zeros_like(rel))
    max_exact = num_buckets // 2
    small = n < max_exact
    large = max_exact + (torch.log(n.float() / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return torch.where(small, n, large)


class T5CrossAttention(Attn):
    kind = "cross"

    def __init__(self):
        super().__init__(H)
        self.q, self.k, self.v, self.o = (nn.Linear(E, E, bias=False) for _ in range(4))

    def forward(self, x, enc, mask):
        q, k, v = heads(self.q(x), H), heads(self.k(enc), H), heads(self.v(enc), H)
        w = torch.matmul(q, k.transpose(3, 2)) + mask  # no position bias across
        w = F.softmax(w.float(), dim=-1).type_as(w)
        return self.o(merge(torch.matmul(w, v)))


class T5EncDec(Model):
    """T5 encoder and decoder: the decoder's self-attention adds a causal bucketed bias
    (its own table) and the causal mask, computed once; its cross-attention reads the
    encoder output with the encoder's padding mask."""

    num_layers = 2 * L
    inputs = ("input_ids", "attention_mask", "decoder_input_ids")
    outputs = ("last_hidden_state", "encoder_last_hidden_state")

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.enc_bias, self.dec_bias = nn.Embedding(32, H), nn.Embedding(32, H)
        self.enc_ln1 = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.enc_attn = nn.ModuleList(T5Attention() for _ in range(L))
        self.enc_ln2 = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.enc_ff = nn.ModuleList(T5ReluFFN() for _ in range(L))
        self.enc_final = RMSNorm(E)
        self.dec_ln1 = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.dec_attn = nn.ModuleList(T5Attention() for _ in range(L))
        self.dec_ln2 = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.dec_cross = nn.ModuleList(T5CrossAttention() for _ in range(L))
        self.dec_ln3 = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.dec_ff = nn.ModuleList(T5ReluFFN() for _ in range(L))
        self.dec_final = RMSNorm(E)

    def forward(self, input_ids, attention_mask, decoder_input_ids):
        S, T = input_ids.shape[1], decoder_input_ids.shape[1]
        ctx, mem = torch.arange(S)[:, None], torch.arange(S)[None, :]
        bias = self.enc_bias(t5_bucket(mem - ctx)).permute([2, 0, 1]).unsqueeze(0)
        bias = bias + padding_bias(attention_mask)
        x = self.embed(input_ids)
        for i in range(L):
            x = x + self.enc_attn[i](self.enc_ln1[i](x), bias)
            x = x + self.enc_ff[i](self.enc_ln2[i](x))
        enc = self.enc_final(x)
        tq, tk = torch.arange(T)[:, None], torch.arange(T)[None, :]
        dbias = self.dec_bias(t5_causal_bucket(tk - tq)).permute([2, 0, 1]).unsqueeze(0)  # [1,H,T,T]
        causal = (tk <= tq).to(torch.float32)[None, None]
        dbias = dbias + (1.0 - causal) * MIN
        cross = padding_bias(attention_mask)
        y = self.embed(decoder_input_ids)
        for i in range(L):
            y = y + self.dec_attn[i](self.dec_ln1[i](y), dbias)
            y = y + self.dec_cross[i](self.dec_ln2[i](y), enc, cross)
            y = y + self.dec_ff[i](self.dec_ln3[i](y))
        return self.dec_final(y), enc


# ---------------------------------------------------------------- bart


class BartAttention(Attn):
    def __init__(self, kind="self", causal=False):
        super().__init__(H)
        self.kind, self.causal = kind, causal
        self.scaling = D ** -0.5
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x, kv, mask):
        B, S, _ = x.size()
        T = kv.size(1)

        def shape(t, n):
            return t.view(B, n, H, D).transpose(1, 2).contiguous()

        q = shape(self.q_proj(x) * self.scaling, S).view(B * H, -1, D)
        k = shape(self.k_proj(kv), T).reshape(B * H, -1, D)
        v = shape(self.v_proj(kv), T).reshape(B * H, -1, D)
        w = torch.bmm(q, k.transpose(1, 2))
        w = w.view(B, H, S, T) + mask
        w = w.view(B * H, S, T)
        w = F.softmax(w, dim=-1)
        o = torch.bmm(w, v)
        o = o.view(B, H, S, D).transpose(1, 2).reshape(B, S, E)
        return self.out_proj(o)


def expand_mask(mask, tgt):
    """[B,S] -> [B,1,tgt,S] additive: the most negative float where mask is 0."""
    B, S = mask.shape
    inverted = 1.0 - mask[:, None, None, :].expand(B, 1, tgt, S).to(torch.float32)
    return inverted.masked_fill(inverted.to(torch.bool), MIN)


class BartEncoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn, self.self_attn_layer_norm = BartAttention(), nn.LayerNorm(E)
        self.ffn, self.final_layer_norm = MLP(F.gelu), nn.LayerNorm(E)

    def forward(self, x, mask):
        x = self.self_attn_layer_norm(x + self.self_attn(x, x, mask))
        return self.final_layer_norm(x + self.ffn(x))


class BartDecoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn, self.self_attn_layer_norm = BartAttention("self", True), nn.LayerNorm(E)
        self.encoder_attn, self.encoder_attn_layer_norm = BartAttention("cross"), nn.LayerNorm(E)
        self.ffn, self.final_layer_norm = MLP(F.gelu), nn.LayerNorm(E)

    def forward(self, x, enc, causal, cross):
        x = self.self_attn_layer_norm(x + self.self_attn(x, x, causal))
        x = self.encoder_attn_layer_norm(x + self.encoder_attn(x, enc, cross))
        return self.final_layer_norm(x + self.ffn(x))


class Bart(Model):
    num_layers = 2 * L  # L encoder and L decoder layers
    inputs = ("input_ids", "attention_mask", "decoder_input_ids")
    outputs = ("last_hidden_state", "encoder_last_hidden_state")

    def __init__(self):
        super().__init__()
        self.shared = nn.Embedding(V, E)
        self.enc_pos, self.dec_pos = nn.Embedding(MAXPOS + 2, E), nn.Embedding(MAXPOS + 2, E)
        self.enc_ln, self.dec_ln = nn.LayerNorm(E), nn.LayerNorm(E)
        self.encoder = nn.ModuleList(BartEncoderLayer() for _ in range(L))
        self.decoder = nn.ModuleList(BartDecoderLayer() for _ in range(L))

    def forward(self, input_ids, attention_mask, decoder_input_ids):
        B, S = input_ids.shape
        T = decoder_input_ids.shape[1]
        x = self.shared(input_ids) + self.enc_pos(torch.arange(0, S, dtype=torch.long) + 2)
        x = self.enc_ln(x)
        mask = expand_mask(attention_mask, S)
        for layer in self.encoder:
            x = layer(x, mask)
        enc = x
        cond = torch.arange(T)
        causal = torch.full((T, T), MIN).masked_fill(cond < (cond + 1).view(T, 1), 0.0)
        causal = causal[None, None, :, :].expand(B, 1, T, T)
        cross = expand_mask(attention_mask, T)
        y = self.shared(decoder_input_ids) + self.dec_pos(torch.arange(0, T, dtype=torch.long) + 2)
        y = self.dec_ln(y)
        for layer in self.decoder:
            y = layer(y, enc, causal, cross)
        return y, enc


class BartPastAttention(Attn):
    """One decoding step of BART's attention with caches, as Optimum's decoder_with_past
    exports it: self-attention concatenates the cached keys and values [B,H,P,D] with this
    step's; cross-attention reads the encoder's keys and values [B,H,S,D] straight from the
    inputs, with no projection."""

    def __init__(self, kind):
        super().__init__(H)
        self.kind = kind
        self.causal = kind == "self"
        self.q_proj, self.out_proj = nn.Linear(E, E), nn.Linear(E, E)
        if kind == "self":
            self.k_proj, self.v_proj = nn.Linear(E, E), nn.Linear(E, E)

    def forward(self, x, pk, pv, mask):
        q = heads(self.q_proj(x) * D ** -0.5, H)
        k, v = pk, pv
        if self.kind == "self":
            k = torch.cat((pk, heads(self.k_proj(x), H)), dim=2)
            v = torch.cat((pv, heads(self.v_proj(x), H)), dim=2)
        w = F.softmax(torch.matmul(q, k.transpose(2, 3)) + mask, dim=-1)
        return self.out_proj(merge(torch.matmul(w, v))), k, v


class BartDecoderPastLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn, self.self_attn_layer_norm = BartPastAttention("self"), nn.LayerNorm(E)
        self.encoder_attn, self.encoder_attn_layer_norm = BartPastAttention("cross"), nn.LayerNorm(E)
        self.ffn, self.final_layer_norm = MLP(F.gelu), nn.LayerNorm(E)

    def forward(self, x, pk, pv, ck, cv, causal, cross):
        a, k, v = self.self_attn(x, pk, pv, causal)
        x = self.self_attn_layer_norm(x + a)
        x = self.encoder_attn_layer_norm(x + self.encoder_attn(x, ck, cv, cross)[0])
        return self.final_layer_norm(x + self.ffn(x)), k, v


class BartDecoderPast(Model):
    inputs = ("decoder_input_ids", "attention_mask", "past_key", "past_value", "cross_key", "cross_value")
    outputs = ("last_hidden_state", "present_key", "present_value")

    def __init__(self):
        super().__init__()
        self.shared = nn.Embedding(V, E)
        self.dec_pos = nn.Embedding(MAXPOS + 2, E)
        self.dec_ln = nn.LayerNorm(E)
        self.layers = nn.ModuleList(BartDecoderPastLayer() for _ in range(L))

    def forward(self, decoder_input_ids, attention_mask, past_key, past_value, cross_key, cross_value):
        B, T = decoder_input_ids.shape
        P = past_key.size(-2)
        pos = torch.arange(P, P + T, dtype=torch.long) + 2
        y = self.dec_ln(self.shared(decoder_input_ids) + self.dec_pos(pos))
        keys = torch.arange(P + T)[None, :]
        rows = torch.arange(T)[:, None] + P
        causal = torch.zeros(T, P + T).masked_fill(keys > rows, MIN)[None, None]  # [1,1,T,P+T]
        cross = padding_bias(attention_mask)
        ks, vs = [], []
        for i, layer in enumerate(self.layers):
            y, k, v = layer(y, past_key[i], past_value[i], cross_key[i], cross_value[i], causal, cross)
            ks.append(k)
            vs.append(v)
        return y, torch.stack(ks), torch.stack(vs)


# ---------------------------------------------------------------- vision


class ViTAttention(Attn):
    def __init__(self):
        super().__init__(H)
        self.query, self.key, self.value, self.dense = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x):
        q, k, v = heads(self.query(x), H), heads(self.key(x), H), heads(self.value(x), H)
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D)
        w = F.softmax(w, dim=-1)
        return self.dense(merge(torch.matmul(w, v)))


class ViT(Model):
    inputs = ("pixel_values",)

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, E, kernel_size=4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 17, E))
        self.ln_before = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(ViTAttention() for _ in range(L))
        self.ln_after = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(nn.GELU()) for _ in range(L))
        self.layernorm = nn.LayerNorm(E)

    def forward(self, pixel_values):
        B = pixel_values.shape[0]
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1) + self.position_embeddings
        for i in range(L):
            x = x + self.attn[i](self.ln_before[i](x))
            x = x + self.mlp[i](self.ln_after[i](x))
        return self.layernorm(x)


VE, VH = 32, 2  # vit-fusedqkv: 2 heads of 16


class FusedQKVAttention(Attn):
    def __init__(self):
        super().__init__(VH)
        self.scale = (VE // VH) ** -0.5
        self.qkv, self.proj = nn.Linear(VE, 3 * VE), nn.Linear(VE, VE)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, VH, C // VH).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * self.scale
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class DeiT(Model):
    inputs = ("pixel_values",)

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, VE, kernel_size=4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, VE))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, VE))
        self.pos_embed = nn.Parameter(torch.zeros(1, 18, VE))
        self.norm1 = nn.ModuleList(nn.LayerNorm(VE, eps=1e-6) for _ in range(L))
        self.attn = nn.ModuleList(FusedQKVAttention() for _ in range(L))
        self.gamma1 = nn.ParameterList(nn.Parameter(torch.ones(VE)) for _ in range(L))
        self.norm2 = nn.ModuleList(nn.LayerNorm(VE, eps=1e-6) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(nn.GELU(), VE) for _ in range(L))
        self.gamma2 = nn.ParameterList(nn.Parameter(torch.ones(VE)) for _ in range(L))
        self.norm = nn.LayerNorm(VE, eps=1e-6)

    def forward(self, pixel_values):
        B = pixel_values.shape[0]
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(B, -1, -1), self.dist_token.expand(B, -1, -1), x), dim=1)
        x = x + self.pos_embed
        for i in range(L):
            x = x + self.gamma1[i] * self.attn[i](self.norm1[i](x))
            x = x + self.gamma2[i] * self.mlp[i](self.norm2[i](x))
        return self.norm(x)


# ---------------------------------------------------------------- conv1x1


class ChannelLayerNorm(nn.Module):
    """LayerNorm over C of a channel-first [B,C,S] tensor."""

    def __init__(self, n):
        super().__init__()
        self.ln = nn.LayerNorm(n)

    def forward(self, x):
        return self.ln(x.permute(0, 2, 1)).permute(0, 2, 1)


class ConvAttention(Attn):
    def __init__(self):
        super().__init__(H)
        self.q, self.k, self.v, self.o = (nn.Conv1d(E, E, 1) for _ in range(4))

    def forward(self, x, pad):
        B, C, S = x.shape
        q = self.q(x).view(B, H, D, S).permute(0, 1, 3, 2)  # [B,H,S,D]
        k = self.k(x).view(B, H, D, S)  # [B,H,D,S]: K transposed already
        v = self.v(x).view(B, H, D, S).permute(0, 1, 3, 2)
        w = F.softmax(torch.matmul(q, k) / math.sqrt(D) + pad, dim=-1)
        ctx = torch.matmul(w, v).permute(0, 1, 3, 2).reshape(B, C, S)
        return self.o(ctx)


class ConvFFN(FFN):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(E, FF, 1), nn.Conv1d(FF, E, 1)

    def forward(self, x):
        return self.c2(F.gelu(self.c1(x)))


class Conv1x1(Model):
    def __init__(self):
        super().__init__()
        self.tok, self.pos = nn.Embedding(V, E), nn.Embedding(MAXPOS, E)
        self.emb_ln = nn.LayerNorm(E)
        self.attn = nn.ModuleList(ConvAttention() for _ in range(L))
        self.ln1 = nn.ModuleList(ChannelLayerNorm(E) for _ in range(L))
        self.ffn = nn.ModuleList(ConvFFN() for _ in range(L))
        self.ln2 = nn.ModuleList(ChannelLayerNorm(E) for _ in range(L))

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        x = self.emb_ln(self.tok(input_ids) + self.pos(torch.arange(S)))
        x = x.permute(0, 2, 1)  # [B,C,S]
        pad = padding_bias(attention_mask)
        for i in range(L):
            x = self.ln1[i](x + self.attn[i](x, pad))
            x = self.ln2[i](x + self.ffn[i](x))
        return x.permute(0, 2, 1)


class ConvGLUFFN(FFN):
    """A gated FFN channel-first: one 1x1 Conv makes gate and up (2F channels), halved on
    the channels."""

    gated = True

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(E, 2 * FF, 1), nn.Conv1d(FF, E, 1)

    def forward(self, x):
        gate, up = self.c1(x).chunk(2, dim=1)
        return self.c2(F.silu(gate) * up)


class Conv1x1GLU(Conv1x1):
    def __init__(self):
        super().__init__()
        self.ffn = nn.ModuleList(ConvGLUFFN() for _ in range(L))


# ---------------------------------------------------------------- sd-spatial

CTX = 24  # the text encoder's width, another than the image tokens'


class SDAttention(Attn):
    """diffusers' CrossAttention with its classic processor: Q, K, V without bias, heads
    folded into the batch ([B*H, S, D]), scores by baddbmm(empty, q, kT, beta=0,
    alpha=scale), bmm with V, heads unfolded; to_out with bias."""

    def __init__(self, ctx=None):
        super().__init__(H)
        self.kind = "self" if ctx is None else "cross"
        self.to_q = nn.Linear(E, E, bias=False)
        self.to_k, self.to_v = nn.Linear(ctx or E, E, bias=False), nn.Linear(ctx or E, E, bias=False)
        self.to_out = nn.Linear(E, E)
        self.scale = D**-0.5

    @staticmethod
    def fold(x):
        B, S, _ = x.shape
        return x.reshape(B, S, H, D).permute(0, 2, 1, 3).reshape(B * H, S, D)

    def forward(self, x, ctx=None):
        ctx = x if ctx is None else ctx
        q, k, v = self.fold(self.to_q(x)), self.fold(self.to_k(ctx)), self.fold(self.to_v(ctx))
        empty = torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=q.dtype)
        scores = torch.baddbmm(empty, q, k.transpose(-1, -2), beta=0, alpha=self.scale)
        out = torch.bmm(scores.softmax(dim=-1), v)
        BH, S, _ = out.shape
        out = out.reshape(BH // H, H, S, D).permute(0, 2, 1, 3).reshape(BH // H, S, E)
        return self.to_out(out)


class GEGLUFFN(FFN):
    """diffusers' FeedForward: one projection to 2F halved into hidden and gate,
    hidden * gelu(gate), then the down projection."""

    gated = True

    def __init__(self):
        super().__init__()
        self.proj, self.out = nn.Linear(E, 2 * FF), nn.Linear(FF, E)

    def forward(self, x):
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return self.out(hidden * F.gelu(gate))


class SDSpatial(Model):
    """Stable Diffusion's Transformer2DModel, twice, over a conv's feature map: GroupNorm,
    a 1x1 Conv in, the map as tokens [B, h*w, C]; pre-LN self-attention, cross-attention
    to the text states and GEGLU FFN; back to the map, a 1x1 Conv out, the residual."""

    inputs = ("pixel_values", "encoder_hidden_states")

    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(3, E, 3, stride=2, padding=1)
        self.gn = nn.ModuleList(nn.GroupNorm(8, E, eps=1e-6) for _ in range(L))
        self.proj_in = nn.ModuleList(nn.Conv2d(E, E, 1) for _ in range(L))
        self.norm1, self.norm2, self.norm3 = (nn.ModuleList(nn.LayerNorm(E) for _ in range(L)) for _ in range(3))
        self.attn1 = nn.ModuleList(SDAttention() for _ in range(L))
        self.attn2 = nn.ModuleList(SDAttention(CTX) for _ in range(L))
        self.ff = nn.ModuleList(GEGLUFFN() for _ in range(L))
        self.proj_out = nn.ModuleList(nn.Conv2d(E, E, 1) for _ in range(L))

    def forward(self, pixel_values, encoder_hidden_states):
        x = self.conv_in(pixel_values)
        B, C, h, w = x.shape
        for i in range(L):
            res = x
            t = self.proj_in[i](self.gn[i](x)).permute(0, 2, 3, 1).reshape(B, h * w, C)
            t = self.attn1[i](self.norm1[i](t)) + t
            t = self.attn2[i](self.norm2[i](t), encoder_hidden_states) + t
            t = self.ff[i](self.norm3[i](t)) + t
            x = self.proj_out[i](t.reshape(B, h, w, C).permute(0, 3, 1, 2)) + res
        return x


# ---------------------------------------------------------------- sam


SAM_GRID, SAM_WIN = 8, 4  # the patch grid of a 32x32 image, and the window of the local layers


def sam_rel_pos(size, table):
    """The table's rows for every (query, key) offset along one axis: [size, size, D]."""
    q = torch.arange(size)[:, None]
    k = torch.arange(size)[None, :]
    return table[(q - k + size - 1).long()]


class SAMAttention(Attn):
    """SAM's image-encoder attention over a [B, h, w, C] grid: packed qkv, heads folded into
    the batch, scores (q·scale)·kᵀ plus the decomposed relative positions — q·Rhᵀ and
    q·Rwᵀ (einsum of the unscaled q with tables gathered by offset) broadcast over the
    scores viewed as [B·H, h, w, h, w]."""

    def __init__(self, size):
        super().__init__(H)
        self.qkv, self.proj = nn.Linear(E, 3 * E), nn.Linear(E, E)
        self.rel_h = nn.Parameter(torch.randn(2 * size - 1, D) * 0.1)
        self.rel_w = nn.Parameter(torch.randn(2 * size - 1, D) * 0.1)
        self.scale = D**-0.5

    def forward(self, x):
        B, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(B, h * w, 3, H, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, B * H, h * w, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        Rh, Rw = sam_rel_pos(h, self.rel_h), sam_rel_pos(w, self.rel_w)
        r_q = q.reshape(B * H, h, w, D)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)
        attn = (attn.view(B * H, h, w, h, w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).view(B * H, h * w, h * w)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).view(B, H, h, w, -1).permute(0, 2, 3, 1, 4).reshape(B, h, w, -1)
        return self.proj(x)


class SAMBlock(nn.Module):
    def __init__(self, window):
        super().__init__()
        self.window = window
        self.norm1, self.norm2 = nn.LayerNorm(E, eps=1e-6), nn.LayerNorm(E, eps=1e-6)
        self.attn = SAMAttention(window or SAM_GRID)
        self.mlp = MLP(nn.GELU())

    def forward(self, x):
        shortcut = x
        x = self.norm1(x)
        if self.window:
            B, h, w, C = x.shape
            n = self.window
            x = x.view(B, h // n, n, w // n, n, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, n, n, C)
            x = self.attn(x)
            x = x.view(B, h // n, w // n, n, n, C).permute(0, 1, 3, 2, 4, 5).reshape(B, h, w, C)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class SAMEncoder(Model):
    """SAM's ViT image encoder: a 4x4 patch Conv kept as a [B, h, w, C] grid plus absolute
    positions [1, h, w, C]; a windowed block (4x4 windows) then a global one; the neck, a
    1x1 Conv and a channel LayerNorm written out (over axis 1, not a transformer norm)."""

    inputs = ("pixel_values",)

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, E, 4, stride=4)
        self.pos = nn.Parameter(torch.randn(1, SAM_GRID, SAM_GRID, E) * 0.02)
        self.blocks = nn.ModuleList([SAMBlock(SAM_WIN), SAMBlock(0)])
        self.neck = nn.Conv2d(E, E, 1, bias=False)
        self.neck_w, self.neck_b = nn.Parameter(torch.ones(E) + 0.1 * torch.randn(E)), nn.Parameter(0.1 * torch.randn(E))

    def forward(self, pixel_values):
        x = self.patch(pixel_values).permute(0, 2, 3, 1) + self.pos
        for b in self.blocks:
            x = b(x)
        x = self.neck(x.permute(0, 3, 1, 2))
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + 1e-6)
        return self.neck_w[:, None, None] * x + self.neck_b[:, None, None]


# ---------------------------------------------------------------- conformer-relpos


def rel_shift(x):
    """Transformer-XL's shift of [B, H, S, 2S-1] scores over relative offsets to [B, H, S, S]
    over keys: a zero column in front, viewed [B, H, 2S, S], its first row dropped, viewed
    back, the first S columns kept."""
    B, H_, S, P = x.shape
    xp = torch.cat([torch.zeros((B, H_, S, 1), dtype=x.dtype), x], dim=-1)
    xp = xp.view(B, H_, P + 1, S)
    return xp[:, :, 1:].view_as(x)[:, :, :, : P // 2 + 1]


class RelPosAttention(Attn):
    """Conformer's (and Transformer-XL's) relative-position self-attention, as
    wav2vec2-conformer writes it: ((q + u)·kᵀ + rel_shift((q + v)·pᵀ)) / √d, with p the
    projected sinusoidal embeddings of the 2S-1 offsets and u, v learned per-head biases."""

    def __init__(self):
        super().__init__(H)
        self.q, self.k, self.v, self.o = (nn.Linear(E, E) for _ in range(4))
        self.pos = nn.Linear(E, E, bias=False)
        self.bias_u = nn.Parameter(torch.randn(H, D) * 0.1)
        self.bias_v = nn.Parameter(torch.randn(H, D) * 0.1)

    def forward(self, x, pos_emb, pad):
        B, S, _ = x.shape
        q = self.q(x).view(B, S, H, D)
        k, v = heads(self.k(x), H), heads(self.v(x), H)
        p = self.pos(pos_emb).view(1, -1, H, D)
        ac = (q + self.bias_u).transpose(1, 2) @ k.transpose(-2, -1)
        bd = rel_shift((q + self.bias_v).transpose(1, 2) @ p.permute(0, 2, 3, 1))
        w = F.softmax((ac + bd) / math.sqrt(D) + pad, dim=-1)
        return self.o(merge(w @ v))


class ConformerRelPos(Model):
    """A Conformer-style encoder's attention path: token embeddings, sinusoidal
    embeddings of the relative offsets S-1 … -(S-1) sliced from a table around its centre,
    pre-LN blocks of relative-position attention and a SiLU FFN, a final LayerNorm."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        pos = torch.arange(MAXPOS - 1, -MAXPOS, -1, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, E, 2, dtype=torch.float32) * (-math.log(10000.0) / E))
        pe = torch.zeros(2 * MAXPOS - 1, E)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        self.register_buffer("pe", pe[None], persistent=False)
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(RelPosAttention() for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.ffn = nn.ModuleList(MLP(F.silu) for _ in range(L))
        self.norm = nn.LayerNorm(E)

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        x = self.embed(input_ids)
        pos_emb = self.pe[:, MAXPOS - S : MAXPOS + S - 1]
        pad = padding_bias(attention_mask)
        for i in range(L):
            x = x + self.attn[i](self.ln1[i](x), pos_emb, pad)
            x = x + self.ffn[i](self.ln2[i](x))
        return self.norm(x)


# ---------------------------------------------------------------- einsum


class EinsumAttention(Attn):
    """Attention written with einsum, as research code and Funnel write it: scores
    einsum("bhid,bhjd->bhij"), context einsum("bhij,bhjd->bhid"), heads merged by
    einsum over the output projection's [H, D, E] weight ("bihd,hde->bie")."""

    def __init__(self):
        super().__init__(H)
        self.q, self.k, self.v = (nn.Linear(E, E) for _ in range(3))
        self.o = nn.Parameter(torch.randn(H, D, E) * 0.1)

    def forward(self, x, pad):
        q, k, v = heads(self.q(x), H), heads(self.k(x), H), heads(self.v(x), H)
        w = F.softmax(torch.einsum("bhid,bhjd->bhij", q, k) * D**-0.5 + pad, dim=-1)
        ctx = torch.einsum("bhij,bhjd->bhid", w, v)
        return torch.einsum("bhid,hde->bie", ctx, self.o)


class XLEinsumAttention(Attn):
    """Transformer-XL's layout: sequence-first [S, B, H, D] heads, scores
    einsum("ibnd,jbnd->ijbn") normalised over j (axis 1), context einsum("ijbn,jbnd->ibnd")."""

    def __init__(self):
        super().__init__(H)
        self.qkv, self.o = nn.Linear(E, 3 * E, bias=False), nn.Linear(E, E, bias=False)

    def forward(self, x, pad):
        S, B, _ = x.shape
        q, k, v = self.qkv(x).view(S, B, 3, H, D).unbind(2)
        s = torch.einsum("ibnd,jbnd->ijbn", q, k) * D**-0.5 + pad
        ctx = torch.einsum("ijbn,jbnd->ibnd", F.softmax(s, dim=1), v)
        return self.o(ctx.reshape(S, B, E))


class EinsumEncoder(Model):
    """Post-LN encoder layers: one of einsum attention on [B, S, E], one of Transformer-XL's
    sequence-first einsum attention (its padding mask as [1, S, B, 1] over the keys)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.a0, self.a1 = EinsumAttention(), XLEinsumAttention()
        self.ln = nn.ModuleList(nn.LayerNorm(E) for _ in range(2 * L))
        self.ffn = nn.ModuleList(MLP(nn.GELU()) for _ in range(L))

    def forward(self, input_ids, attention_mask):
        x = self.embed(input_ids)
        pad = padding_bias(attention_mask)
        x = self.ln[0](x + self.a0(x, pad))
        x = self.ln[1](x + self.ffn[0](x))
        xs = x.transpose(0, 1)
        xs = xs + self.a1(xs, pad[:, 0, 0, :].transpose(0, 1)[None, :, :, None])
        x = self.ln[2](xs.transpose(0, 1))
        return self.ln[3](x + self.ffn[1](x))


# ---------------------------------------------------------------- chatglm


def glm_rope(x, cache):
    """ChatGLM2's rotary on the first half of each head, pairs interleaved: x [S, B, H, D],
    cache [S, 1, D/4, 2] of (cos, sin); the second half passes through."""
    rot = cache.shape[-2] * 2
    x, x_pass = x[..., :rot], x[..., rot:]
    S = x.size(0)
    xs = x.reshape(S, -1, x.size(2), rot // 2, 2)
    c = cache.view(S, -1, 1, xs.size(3), 2)
    out = torch.stack(
        [xs[..., 0] * c[..., 0] - xs[..., 1] * c[..., 1], xs[..., 1] * c[..., 0] + xs[..., 0] * c[..., 1]], -1
    )
    return torch.cat((out.flatten(3), x_pass), dim=-1)


class GLMAttention(Attn):
    """ChatGLM2/3's self-attention, sequence-first [S, B, E]: one projection with biases
    split by sizes into Q (H heads) and K, V (2 groups); rotary on half of each head; K and V
    repeated by unsqueeze/expand/view; the scores of [S, B·H, D] operands by baddbmm into an
    uninitialised buffer with beta 0 and alpha 1/(√D·coeff), then times coeff (the layer
    number: query-key layer scaling), filled with −inf where the boolean mask is set."""

    causal = True
    rotaries = 2

    def __init__(self, layer):
        super().__init__(H, 2)
        self.coeff = float(layer + 1)
        self.query_key_value = nn.Linear(E, (H + 2 * 2) * D)
        self.dense = nn.Linear(H * D, E, bias=False)

    def forward(self, x, mask, cache):
        S, B, _ = x.shape
        q, k, v = self.query_key_value(x).split([H * D, 2 * D, 2 * D], dim=-1)
        q, k, v = q.view(S, B, H, D), k.view(S, B, 2, D), v.view(S, B, 2, D)
        q, k = glm_rope(q, cache), glm_rope(k, cache)
        k = k.unsqueeze(-2).expand(-1, -1, -1, H // 2, -1).contiguous().view(S, B, H, D)
        v = v.unsqueeze(-2).expand(-1, -1, -1, H // 2, -1).contiguous().view(S, B, H, D)
        q, k = q.view(S, B * H, D), k.view(S, B * H, D)
        buf = torch.empty(B * H, S, S, dtype=q.dtype)
        w = torch.baddbmm(buf, q.transpose(0, 1), k.transpose(0, 1).transpose(1, 2), beta=0.0, alpha=1.0 / (math.sqrt(D) * self.coeff))
        w = w.view(B, H, S, S).float() * self.coeff
        w = w.masked_fill(mask, float("-inf"))
        w = F.softmax(w, dim=-1).type_as(v)
        ctx = torch.bmm(w.view(B * H, S, S), v.view(S, B * H, D).transpose(0, 1))
        ctx = ctx.view(B, H, S, D).permute(2, 0, 1, 3).contiguous().view(S, B, H * D)
        return self.dense(ctx)


class ChatGLM(Model):
    """ChatGLM2/3: embeddings transposed to sequence-first, pre-RMSNorm blocks of GLM
    attention and a packed SwiGLU (one projection chunked into gate and up), a final
    RMSNorm; the mask from a tril of ones times the padding, minus (padding − 1) on the
    query rows, kept where ≥ 0.5."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.input_layernorm = nn.ModuleList(RMSNorm(E, 1e-5) for _ in range(L))
        self.self_attention = nn.ModuleList(GLMAttention(i) for i in range(L))
        self.post_attention_layernorm = nn.ModuleList(RMSNorm(E, 1e-5) for _ in range(L))
        self.mlp = nn.ModuleList(PackedGated() for _ in range(L))
        self.final_layernorm = RMSNorm(E, 1e-5)
        rot = D // 2
        theta = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
        idx = torch.outer(torch.arange(MAXPOS).float(), theta)
        self.register_buffer("rope", torch.stack([idx.cos(), idx.sin()], -1)[:, None], persistent=False)

    def forward(self, input_ids, attention_mask):
        B, S = input_ids.shape
        x = self.embedding(input_ids).transpose(0, 1)
        pad = attention_mask.float()
        full = torch.ones(B, S, S).tril() * pad.unsqueeze(1)
        full = full - (pad.unsqueeze(-1) - 1)
        mask = (full < 0.5).unsqueeze(1)
        cache = self.rope[:S]
        for i in range(L):
            x = x + self.self_attention[i](self.input_layernorm[i](x), mask, cache)
            x = x + self.mlp[i](self.post_attention_layernorm[i](x))
        return self.final_layernorm(x).transpose(0, 1)


# ---------------------------------------------------------------- levit


class LinearBN(nn.Module):
    """LeViT's MLPLayerWithBN: a bias-free Linear, then BatchNorm1d over the tokens
    flattened to [B·N, C] and reshaped back."""

    def __init__(self, cin, cout):
        super().__init__()
        self.linear = nn.Linear(cin, cout, bias=False)
        self.batch_norm = nn.BatchNorm1d(cout)

    def forward(self, x):
        y = self.linear(x)
        return self.batch_norm(y.flatten(0, 1)).reshape_as(y)


LV_KD, LV_R, LV_RES = 4, 2, 4  # levit: key size, value ratio, grid side


class LevitAttention(Attn):
    """LeViT's attention: one LinearBN viewed [B, N, H, -1] and split per head into Q, K
    (key size 4) and V (8 = ratio · key size); scores · key_size^−½ plus a learned bias
    per head and token offset, gathered by a constant index table; Hardswish before the
    output LinearBN."""

    def __init__(self):
        super().__init__(H)
        self.qkv = LinearBN(E, H * (2 * LV_KD + LV_R * LV_KD))
        self.proj = LinearBN(H * LV_R * LV_KD, E)
        pts = [(i, j) for i in range(LV_RES) for j in range(LV_RES)]
        offsets, idx = {}, []
        for p1 in pts:
            for p2 in pts:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                offsets.setdefault(off, len(offsets))
                idx.append(offsets[off])
        self.attention_biases = nn.Parameter(torch.zeros(H, len(offsets)))
        self.register_buffer("idx", torch.tensor(idx).view(len(pts), len(pts)), persistent=False)

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, H, -1).split([LV_KD, LV_KD, LV_R * LV_KD], dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        w = q @ k.transpose(-2, -1) * LV_KD**-0.5 + self.attention_biases[:, self.idx]
        w = w.softmax(dim=-1)
        y = (w @ v).transpose(1, 2).reshape(B, N, H * LV_R * LV_KD)
        return self.proj(F.hardswish(y))


class LevitMLP(FFN):
    def __init__(self):
        super().__init__()
        self.up, self.down = LinearBN(E, 2 * E), LinearBN(2 * E, E)

    def forward(self, x):
        return self.down(F.hardswish(self.up(x)))


class Levit(Model):
    """LeViT: a conv stem (Conv + BatchNorm + Hardswish, stride 4) to a 4x4 grid of
    tokens; residual blocks of LeViT attention and a LinearBN MLP, with no LayerNorm."""

    inputs = ("pixel_values",)

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, E, 4, 4), nn.BatchNorm2d(E), nn.Hardswish())
        self.attn = nn.ModuleList(LevitAttention() for _ in range(L))
        self.mlp = nn.ModuleList(LevitMLP() for _ in range(L))
        # Running statistics of a trained model (init_weights sets parameters only).
        g = torch.Generator().manual_seed(7)
        for mod in self.modules():
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                mod.running_mean.copy_(0.2 * torch.randn(mod.num_features, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(mod.num_features, generator=g))

    def forward(self, pixel_values):
        x = self.stem(pixel_values).flatten(2).transpose(1, 2)
        for i in range(L):
            x = x + self.attn[i](x)
            x = x + self.mlp[i](x)
        return x


# ---------------------------------------------------------------- decoders: internlm2, stablelm2, cohere, gpt-oss sinks


def partial_rotate_half(x, r, cos, sin):
    """Rotate-half rotary on the first r channels of each head, the rest passed through."""
    return torch.cat((x[..., :r] * cos + rotate_half(x[..., :r]) * sin, x[..., r:]), dim=-1)


class InternLM2Attention(LlamaAttention):
    """InternLM2: one bias-free wqkv viewed [B, S, KV, H/KV + 2, D] (each group: its query
    heads, its key, its value); q = the first H/KV of the group axis merged to H heads,
    k and v taken by a scalar index (-2, -1), which drops the axis."""

    def __init__(self):
        super().__init__(2)
        self.wqkv = nn.Linear(E, (H + 2 * self.kv_heads) * D, bias=False)
        del self.q_proj, self.k_proj, self.v_proj

    def forward(self, x, mask, cos, sin):
        B, S, _ = x.shape
        KV, G = self.kv_heads, H // self.kv_heads
        qkv = self.wqkv(x).view(B, S, KV, G + 2, D)
        q = qkv[..., :G, :].reshape(B, S, H, D).transpose(1, 2)
        k, v = qkv[..., -2, :].transpose(1, 2), qkv[..., -1, :].transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, G), repeat_kv(v, G)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(merge(torch.matmul(w, v)))


class InternLM2(Llama):
    def __init__(self):
        super().__init__()
        self.self_attn = nn.ModuleList(InternLM2Attention() for _ in range(L))


class PerHeadLayerNorm(nn.Module):
    """StableLM-2's QK LayerNorm: one bias-free LayerNorm per head over [B, 1, S, D] slices of
    [B, n, S, D], concatenated back on the head axis."""

    def __init__(self, n, d):
        super().__init__()
        self.norms = nn.ModuleList(BiaslessLayerNorm(d) for _ in range(n))

    def forward(self, x):
        return torch.cat([f(t) for f, t in zip(self.norms, torch.split(x, 1, dim=1))], dim=1)


class StableLM2Attention(Attn):
    """StableLM-2: Q/K/V with biases, GQA, per-head QK LayerNorms, partial rotate-half
    rotary on the first quarter of each head (16 channels, 4 rotated)."""

    causal = True
    rotaries = 2
    d, rot = 16, 4

    def __init__(self):
        super().__init__(H, 2)
        d = self.d
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(E, H * d), nn.Linear(E, 2 * d), nn.Linear(E, 2 * d)
        self.o_proj = nn.Linear(H * d, E, bias=False)
        self.q_layernorm, self.k_layernorm = PerHeadLayerNorm(H, d), PerHeadLayerNorm(2, d)

    def forward(self, x, mask, cos, sin):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), 2), heads(self.v_proj(x), 2)
        q, k = self.q_layernorm(q), self.k_layernorm(k)
        r = self.rot
        q = partial_rotate_half(q, r, cos, sin)
        k = partial_rotate_half(k, r, cos, sin)
        k, v = repeat_kv(k, H // 2), repeat_kv(v, H // 2)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.d) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(v.dtype)
        return self.o_proj(merge(torch.matmul(w, v)))


class StableLM2(Model):
    """StableLM-2 (12B layout): one LayerNorm with bias feeding attention and a SwiGLU MLP
    in parallel, rotary computed from the position ids, Trilu causal mask plus padding."""

    inputs = ("input_ids", "attention_mask", "position_ids")

    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, E)
        self.input_layernorm = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.self_attn = nn.ModuleList(StableLM2Attention() for _ in range(L))
        self.mlp = nn.ModuleList(Gated(F.silu) for _ in range(L))
        self.norm = nn.LayerNorm(E)
        r = StableLM2Attention.rot
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, r, 2).float() / r)), persistent=False)

    def forward(self, input_ids, attention_mask, position_ids):
        S = input_ids.shape[1]
        cos, sin = rotary_from_positions(self.inv_freq, position_ids)
        mask = torch.triu(torch.full((S, S), MIN), diagonal=1)[None, None] + padding_bias(attention_mask)
        x = self.embed_tokens(input_ids)
        for i in range(L):
            h = self.input_layernorm[i](x)
            x = x + self.self_attn[i](h, mask, cos, sin) + self.mlp[i](h)
        return self.norm(x)


class CohereLayerNorm(BiaslessLayerNorm):
    """Cohere's LayerNorm without a bias, written out in float32: mean, centred variance,
    rsqrt, weight."""

    def forward(self, x):
        dt = x.dtype
        x = x.to(torch.float32)
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + 1e-5)
        return (self.weight.to(torch.float32) * x).to(dt)


class CohereAttention(LlamaAttention):
    """Cohere / Command-R: GQA, rotate-every-two rotary applied in float32, cos and sin
    with each angle repeated in two adjacent channels."""

    def project(self, x):
        return heads(self.q_proj(x), H), heads(self.k_proj(x), self.kv_heads), heads(self.v_proj(x), self.kv_heads)

    def forward(self, x, mask, cos, sin):
        q, k, v = self.project(x)
        dt = q.dtype
        q, k = q.float(), k.float()
        q = (q * cos + rotate_every_two(q) * sin).to(dt)
        k = (k * cos + rotate_every_two(k) * sin).to(dt)
        k, v = repeat_kv(k, H // self.kv_heads), repeat_kv(v, H // self.kv_heads)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(merge(torch.matmul(w, v)))


class Cohere(Model):
    """Cohere / Command-R: one bias-free LayerNorm feeding attention and a SwiGLU MLP in
    parallel, rotary from the position ids, the final norm scaled by the logit scale."""

    inputs = ("input_ids", "attention_mask", "position_ids")
    logit_scale = 0.0625

    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, E)
        self.input_layernorm = nn.ModuleList(CohereLayerNorm(E) for _ in range(L))
        self.self_attn = nn.ModuleList(CohereAttention() for _ in range(L))
        self.mlp = nn.ModuleList(Gated(F.silu) for _ in range(L))
        self.norm = CohereLayerNorm(E)
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D)), persistent=False)

    def forward(self, input_ids, attention_mask, position_ids):
        S = input_ids.shape[1]
        B = position_ids.shape[0]
        f = (self.inv_freq[None, :, None].expand(B, -1, 1) @ position_ids[:, None, :].float()).transpose(1, 2)
        # repeat_interleave(f, 2, dim=-1) as newer exporters write it (torch 1.13's Loop
        # export bakes the traced sizes into the graph's reshapes).
        emb = f[..., None].expand(*f.shape, 2).flatten(-2)  # [B,S,D]
        cos, sin = emb.cos()[:, None], emb.sin()[:, None]
        mask = torch.triu(torch.full((S, S), MIN), diagonal=1)[None, None] + padding_bias(attention_mask)
        x = self.embed_tokens(input_ids)
        for i in range(L):
            h = self.input_layernorm[i](x)
            x = x + self.self_attn[i](h, mask, cos, sin) + self.mlp[i](h)
        return self.norm(x) * self.logit_scale


class SinkAttention(LlamaAttention):
    """GPT-OSS: a learned logit per head concatenated to every row of the scores before the
    softmax and dropped after, so each row's weights sum to less than one. Attention with
    sinks: GroupQueryAttention's head_sink computes it (causal), Attention-23 and
    MultiHeadAttention do not."""

    has_sinks = True

    def __init__(self):
        super().__init__(2)
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(E, H * D), nn.Linear(E, 2 * D), nn.Linear(E, 2 * D)
        self.o_proj = nn.Linear(H * D, E)
        self.sinks = nn.Parameter(torch.zeros(H))

    def forward(self, x, mask, cos, sin):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), self.kv_heads), heads(self.v_proj(x), self.kv_heads)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // self.kv_heads), repeat_kv(v, H // self.kv_heads)
        w = torch.matmul(q, k.transpose(2, 3)) * D**-0.5 + mask
        B, _, S, _ = w.shape
        c = torch.cat([w, self.sinks.reshape(1, -1, 1, 1).expand(B, -1, S, 1)], dim=-1)
        c = c - c.max(dim=-1, keepdim=True).values
        p = F.softmax(c, dim=-1, dtype=torch.float32)[..., :-1]
        return self.o_proj(merge(torch.matmul(p, v)))


class GPTOSSSinks(Llama):
    def __init__(self):
        super().__init__()
        self.self_attn = nn.ModuleList(SinkAttention() for _ in range(L))


class GPTOSSSliding(GPTOSSSinks):
    """GPT-OSS's alternation: layer 0 attends through a sliding window (a query sees the
    WINDOW latest keys, itself included: banned where j > i or j <= i - WINDOW, from Range
    comparisons), layer 1 through the full causal mask (Trilu); both with sinks, both masks
    with the padding added."""

    WINDOW = 4

    def forward(self, input_ids, attention_mask, position_ids):
        B, S = input_ids.shape
        x = self.embed_tokens(input_ids)
        cos = self.cos_cached[:S][position_ids].unsqueeze(1)
        sin = self.sin_cached[:S][position_ids].unsqueeze(1)
        i = torch.arange(S)[:, None]
        j = torch.arange(S)[None, :]
        window = torch.zeros(S, S).masked_fill((j > i) | (j <= i - self.WINDOW), MIN)
        causal = torch.triu(torch.full((S, S), MIN), diagonal=1)
        pad = padding_bias(attention_mask)
        masks = (window[None, None, :, :] + pad, causal[None, None, :, :] + pad)
        for l in range(L):
            x = x + self.self_attn[l](self.input_layernorm[l](x), masks[l % 2], cos, sin)
            x = x + self.mlp[l](self.post_attention_layernorm[l](x))
        return self.norm(x)


class BaichuanAttention(Attn):
    """Baichuan-13B: one bias-free W_pack whose output [B, S, 3E] is unflattened to
    [B, S, 3, E], moved to [3, B, S, E] by unsqueeze, transpose and squeeze, and indexed
    0, 1, 2 into Q, K and V; the ALiBi-and-causal mask added after the scale."""

    causal = True

    def __init__(self):
        super().__init__(H)
        self.W_pack, self.o_proj = nn.Linear(E, 3 * E, bias=False), nn.Linear(E, E, bias=False)

    def forward(self, x, mask):
        B, S, _ = x.shape
        p = self.W_pack(x).view(B, S, 3, E).unsqueeze(0).transpose(0, -2).squeeze(-2)  # unflatten
        q, k, v = heads(p[0], H), heads(p[1], H), heads(p[2], H)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + mask
        w = F.softmax(w, dim=-1)
        return self.o_proj(merge(torch.matmul(w, v)))


class Baichuan(Model):
    """Baichuan-13B: ALiBi on the key position (slope_h · j) plus the −inf causal mask as one
    constant [H, positions, positions] buffer sliced to [:, :S, :S], with the padding
    added; RMSNorm, SwiGLU, no position embeddings."""

    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, E)
        self.input_layernorm = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.self_attn = nn.ModuleList(BaichuanAttention() for _ in range(L))
        self.post_attention_layernorm = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(Gated(F.silu) for _ in range(L))
        self.norm = RMSNorm(E)
        alibi = alibi_slopes(H)[:, None, None] * torch.arange(MAXPOS).float()[None, None, :]
        future = torch.triu(torch.full((MAXPOS, MAXPOS), float("-inf")), 1)
        self.register_buffer("alibi_mask", future[None] + alibi, persistent=False)

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        mask = self.alibi_mask[:, :S, :S][None] + padding_bias(attention_mask)
        x = self.embed_tokens(input_ids)
        for i in range(L):
            x = x + self.self_attn[i](self.input_layernorm[i](x), mask)
            x = x + self.mlp[i](self.post_attention_layernorm[i](x))
        return self.norm(x)


class OpenELMAttention(Attn):
    """OpenELM: a layer's own head counts; one bias-free qkv_proj viewed
    [B, S, q + 2kv, D], transposed to [B, q + 2kv, S, D] and split on the head axis into
    Q, K and V; RMSNorm over the head size on Q and K; rotate-half rotary; K and V
    repeated to the query heads."""

    causal = True
    rotaries = 2

    def __init__(self, q_heads, kv_heads):
        super().__init__(q_heads, kv_heads)
        self.qkv_proj = nn.Linear(E, (q_heads + 2 * kv_heads) * D, bias=False)
        self.q_norm, self.k_norm = RMSNorm(D), RMSNorm(D)
        self.out_proj = nn.Linear(q_heads * D, E, bias=False)

    def forward(self, x, mask, cos, sin):
        B, S, _ = x.shape
        h, kv = self.heads, self.kv_heads
        qkv = self.qkv_proj(x).view(B, S, h + 2 * kv, D).transpose(1, 2)
        q, k, v = qkv.split([h, kv, kv], dim=1)
        q, k = self.q_norm(q), self.k_norm(k)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, h // kv), repeat_kv(v, h // kv)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(v.dtype)
        return self.out_proj(merge(torch.matmul(w, v)))


class OpenELMFFN(FFN):
    """OpenELM's GLU with one proj_1 to twice a layer's own width, chunked into gate and up."""

    gated = True

    def __init__(self, ff):
        super().__init__()
        self.proj_1, self.proj_2 = nn.Linear(E, 2 * ff, bias=False), nn.Linear(ff, E, bias=False)

    def forward(self, x):
        g, u = self.proj_1(x).chunk(2, dim=-1)
        return self.proj_2(F.silu(g) * u)


class OpenELM(Llama):
    """OpenELM: layer-wise scaling, each layer its own query and K/V head counts (2/1, then
    4/2) and FFN width; RMSNorm; a Trilu causal mask plus padding."""

    def __init__(self):
        super().__init__()
        self.self_attn = nn.ModuleList(OpenELMAttention(h, kv) for h, kv in ((2, 1), (4, 2)))
        self.mlp = nn.ModuleList(OpenELMFFN(ff) for ff in (24, 48))


class Phi2Attention(Attn):
    """Phi-2: Q, K, V and dense with biases, head size 10 (H·D ≠ hidden), partial
    rotate-half rotary on the first 4 channels of each head (40%), scores in float32."""

    causal = True
    rotaries = 2
    d, rot = 10, 4

    def __init__(self):
        super().__init__(H)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(E, H * self.d) for _ in range(3))
        self.dense = nn.Linear(H * self.d, E)

    def forward(self, x, mask, cos, sin):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), H), heads(self.v_proj(x), H)
        r = self.rot
        q = partial_rotate_half(q, r, cos, sin)
        k = partial_rotate_half(k, r, cos, sin)
        w = torch.matmul(q.to(torch.float32), k.to(torch.float32).transpose(2, 3)) / math.sqrt(self.d) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(v.dtype)
        return self.dense(merge(torch.matmul(w, v)))


class Phi2(Model):
    """Phi-2: one LayerNorm feeding attention and a gelu_new MLP in parallel, cos/sin from a
    [positions, rot] table gathered by position ids, triu causal mask plus padding."""

    inputs = ("input_ids", "attention_mask", "position_ids")

    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, E)
        self.input_layernorm = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.self_attn = nn.ModuleList(Phi2Attention() for _ in range(L))
        self.mlp = nn.ModuleList(MLP(gelu_new) for _ in range(L))
        self.final_layernorm = nn.LayerNorm(E)
        r = Phi2Attention.rot
        inv_freq = 1.0 / (10000 ** (torch.arange(0, r, 2).float() / r))
        emb = torch.outer(torch.arange(MAXPOS).float(), inv_freq).repeat(1, 2)
        self.register_buffer("cos_cached", emb.cos(), persistent=False)
        self.register_buffer("sin_cached", emb.sin(), persistent=False)

    def forward(self, input_ids, attention_mask, position_ids):
        S = input_ids.shape[1]
        cos = self.cos_cached[:S][position_ids].unsqueeze(1)
        sin = self.sin_cached[:S][position_ids].unsqueeze(1)
        mask = torch.triu(torch.full((S, S), MIN), diagonal=1)[None, None] + padding_bias(attention_mask)
        x = self.embed_tokens(input_ids)
        for i in range(L):
            h = self.input_layernorm[i](x)
            x = x + self.self_attn[i](h, mask, cos, sin) + self.mlp[i](h)
        return self.final_layernorm(x)


def relu_squared(x):
    """Squared ReLU (Primer, Persimmon, Nemotron's relu2): torch.square(relu(x))."""
    return torch.square(F.relu(x))


def relu_pow2(x):
    """Squared ReLU written relu(x) ** 2."""
    return F.relu(x) ** 2


class PersimmonAttention(Attn):
    """Persimmon: Q, K and V packed per head as [B, S, H, 3, D] with biases; a LayerNorm
    over the head size (with bias, shared by the heads) on Q and K in the [B, S, H, D]
    layout; partial rotate-half rotary on the first half of each head."""

    causal = True
    rotaries = 2

    def __init__(self):
        super().__init__(H)
        self.query_key_value, self.dense = nn.Linear(E, 3 * E), nn.Linear(E, E)
        self.q_layernorm, self.k_layernorm = nn.LayerNorm(D), nn.LayerNorm(D)

    def forward(self, x, mask, cos, sin):
        B, S, _ = x.shape
        qkv = self.query_key_value(x).view(B, S, H, 3, D)
        q, k, v = self.q_layernorm(qkv[..., 0, :]), self.k_layernorm(qkv[..., 1, :]), qkv[..., 2, :]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        r = D // 2
        q = partial_rotate_half(q, r, cos, sin)
        k = partial_rotate_half(k, r, cos, sin)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.dense(merge(torch.matmul(w, v)))


class Persimmon(Model):
    """Persimmon / Nemotron: pre-LayerNorm blocks whose MLP is up, squared ReLU, down (the
    first layer's written torch.square(relu(x)), the second's relu(x) ** 2); rotary from
    the position ids; triu causal mask plus padding; final LayerNorm."""

    inputs = ("input_ids", "attention_mask", "position_ids")

    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, E)
        self.input_layernorm = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.self_attn = nn.ModuleList(PersimmonAttention() for _ in range(L))
        self.post_attention_layernorm = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(a) for a in (relu_squared, relu_pow2))
        self.final_layernorm = nn.LayerNorm(E)
        r = D // 2
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, r, 2).float() / r)), persistent=False)

    def forward(self, input_ids, attention_mask, position_ids):
        S = input_ids.shape[1]
        cos, sin = rotary_from_positions(self.inv_freq, position_ids)
        mask = torch.triu(torch.full((S, S), MIN), diagonal=1)[None, None] + padding_bias(attention_mask)
        x = self.embed_tokens(input_ids)
        for i in range(L):
            x = x + self.self_attn[i](self.input_layernorm[i](x), mask, cos, sin)
            x = x + self.mlp[i](self.post_attention_layernorm[i](x))
        return self.final_layernorm(x)


class CohereQKNormAttention(CohereAttention):
    """Command-R+: Cohere's attention with QK-norm: its bias-free float32 LayerNorm over the
    head size with a weight per head ([heads, D]), on Q and K viewed [B, S, heads, D]."""

    def __init__(self):
        super().__init__()
        self.q_norm, self.k_norm = CohereLayerNorm(H * D), CohereLayerNorm(self.kv_heads * D)
        self.q_norm.weight, self.k_norm.weight = nn.Parameter(torch.ones(H, D)), nn.Parameter(torch.ones(self.kv_heads, D))

    def project(self, x):
        B, S, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, S, H, D)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(B, S, self.kv_heads, D)).transpose(1, 2)
        return q, k, heads(self.v_proj(x), self.kv_heads)


class CohereQKNorm(Cohere):
    def __init__(self):
        super().__init__()
        self.self_attn = nn.ModuleList(CohereQKNormAttention() for _ in range(L))


class QWenAttention(Attn):
    """Qwen (v1): one c_attn with biases split by sizes into Q, K, V viewed [B, S, H, D];
    rotate-half rotary applied in float32 in that layout (cos/sin [1, S, 1, D] from
    arange(S)), then the heads permuted; causal by Where of a tril of ones sized by the
    keys; the padding added; no bias on c_proj."""

    causal = True
    rotaries = 2

    def __init__(self):
        super().__init__(H)
        self.c_attn, self.c_proj = nn.Linear(E, 3 * E), nn.Linear(E, E, bias=False)

    def forward(self, x, pad, cos, sin):
        B, S, _ = x.shape
        q, k, v = self.c_attn(x).split(E, dim=2)
        q, k, v = q.view(B, S, H, D), k.view(B, S, H, D), v.view(B, S, H, D)
        q = (q.float() * cos + rotate_half(q.float()) * sin).type_as(q)
        k = (k.float() * cos + rotate_half(k.float()) * sin).type_as(k)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        w = torch.matmul(q, k.transpose(-1, -2)) / torch.full([], v.size(-1) ** 0.5, dtype=q.dtype)
        T = k.size(-2)
        causal = torch.tril(torch.ones((T, T), dtype=torch.bool)).view(1, 1, T, T)
        w = torch.where(causal, w, torch.tensor(MIN, dtype=w.dtype)) + pad
        w = F.softmax(w, dim=-1)
        return self.c_proj(merge(torch.matmul(w, v)))


class QWenMLP(FFN):
    """Qwen (v1): c_proj(w1(x) * silu(w2(x))), the up projection on the left."""

    gated = True

    def __init__(self):
        super().__init__()
        self.w1, self.w2, self.c_proj = nn.Linear(E, FF, bias=False), nn.Linear(E, FF, bias=False), nn.Linear(FF, E, bias=False)

    def forward(self, x):
        return self.c_proj(self.w1(x) * F.silu(self.w2(x)))


class QWen(Model):
    """Qwen (v1): RMSNorm pre-norm blocks, rotary in the [B, S, H, D] layout, SwiGLU with the
    up projection first."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(V, E)
        self.ln_1 = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(QWenAttention() for _ in range(L))
        self.ln_2 = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(QWenMLP() for _ in range(L))
        self.ln_f = RMSNorm(E)
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D)), persistent=False)

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        freqs = torch.outer(torch.arange(S, dtype=torch.float32), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)[None, :, None, :]  # [1,S,1,D]
        cos, sin = emb.cos(), emb.sin()
        pad = padding_bias(attention_mask)
        x = self.wte(input_ids)
        for i in range(L):
            x = x + self.attn[i](self.ln_1[i](x), pad, cos, sin)
            x = x + self.mlp[i](self.ln_2[i](x))
        return self.ln_f(x)
CA_N = 16  # cait: a 4x4 grid of patches


def layer_scaled_blocks(m, attn, prefix=""):
    """Gives m L layer-scaled pre-LayerNorm blocks (CaiT, XCiT), named with prefix: norm1,
    attn (attn()), gamma1, norm2, mlp (GELU), gamma2; run one with layer_scaled."""
    ln = lambda: nn.LayerNorm(E, eps=1e-6)
    gamma = lambda: nn.Parameter(torch.ones(E))
    for name, mk in (("norm1", ln), ("attn", attn), ("gamma1", gamma), ("norm2", ln), ("mlp", lambda: MLP(nn.GELU())), ("gamma2", gamma)):
        lst = nn.ParameterList if mk is gamma else nn.ModuleList
        setattr(m, prefix + name, lst(mk() for _ in range(L)))


def layer_scaled(m, i, x, prefix="", attn_in=None):
    """Block i of layer_scaled_blocks: x + γ1·attn(norm1(attn_in)), then x + γ2·mlp(norm2(x));
    attn_in is x unless given (CaiT's class attention reads cat(cls, patches))."""
    blk = lambda name: getattr(m, prefix + name)[i]
    x = x + blk("gamma1") * blk("attn")(blk("norm1")(x if attn_in is None else attn_in))
    return x + blk("gamma2") * blk("mlp")(blk("norm2")(x))


class TalkingHeads(nn.Module):
    """CaiT's talking-heads self-attention: the heads are mixed by a Linear over the head
    axis before the softmax and again after it, so every head's weights read every head's
    scores. Softmax-shaped, but not attention per head: it must never fuse as attention."""

    is_attention = False
    heads = kv_heads = H

    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(E, 3 * E), nn.Linear(E, E)
        self.proj_l, self.proj_w = nn.Linear(H, H), nn.Linear(H, H)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4)
        w = (q * D**-0.5) @ k.transpose(-2, -1)
        w = self.proj_l(w.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        w = w.softmax(dim=-1)
        w = self.proj_w(w.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.proj((w @ v).transpose(1, 2).reshape(B, N, C))


class ClassAttention(Attn):
    """CaiT's class attention: Q from the class token alone (x[:, 0]), K and V from the
    class token and the patches; Q scaled."""

    kind = "cross"

    def __init__(self):
        super().__init__(H)
        self.q, self.k, self.v, self.proj = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x):
        B, N, C = x.shape
        q = self.q(x[:, 0]).unsqueeze(1).reshape(B, 1, H, D).permute(0, 2, 1, 3)
        k = self.k(x).reshape(B, N, H, D).permute(0, 2, 1, 3)
        v = self.v(x).reshape(B, N, H, D).permute(0, 2, 1, 3)
        w = ((q * D**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((w @ v).transpose(1, 2).reshape(B, 1, C))


class CaiT(Model):
    """CaiT: patches plus learned positions (no class token yet) through layer-scaled
    pre-LayerNorm blocks with talking-heads self-attention; then the class token joins in
    class-attention blocks: cls + γ·CA(LN(cat(cls, patches))), cls + γ·MLP(LN(cls)); the
    patches are not updated there; final LayerNorm over cat(cls, patches)."""

    inputs = ("pixel_values",)

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, E, kernel_size=4, stride=4)
        self.pos_embed = nn.Parameter(torch.zeros(1, CA_N, E))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E))
        layer_scaled_blocks(self, TalkingHeads, "sa_")
        layer_scaled_blocks(self, ClassAttention, "ca_")
        self.norm = nn.LayerNorm(E, eps=1e-6)

    def forward(self, pixel_values):
        B = pixel_values.shape[0]
        x = self.patch(pixel_values).flatten(2).transpose(1, 2) + self.pos_embed
        for i in range(L):
            x = layer_scaled(self, i, x, "sa_")
        cls = self.cls_token.expand(B, -1, -1)
        for i in range(L):
            cls = layer_scaled(self, i, cls, "ca_", torch.cat((cls, x), dim=1))
        return self.norm(torch.cat((cls, x), dim=1))


PV_N, PV_C = 6, 24  # perceiver: latents, input channels


class PerceiverAttention(Attn):
    """Perceiver's attention: Q from the (normed) latents, K and V from the (normed)
    inputs of their own width; scores / √d plus the inputs' padding (cross), or latent
    self-attention with no mask."""

    def __init__(self, kind, n, kv_dim):
        super().__init__(n)
        self.kind, self.d = kind, E // n
        self.query, self.key, self.value = nn.Linear(E, E), nn.Linear(kv_dim, E), nn.Linear(kv_dim, E)
        self.dense = nn.Linear(E, E)

    def forward(self, x, kv, mask=None):
        q, k, v = heads(self.query(x), self.heads), heads(self.key(kv), self.heads), heads(self.value(kv), self.heads)
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d)
        if mask is not None:
            w = w + mask
        return self.dense(merge(torch.matmul(F.softmax(w, dim=-1), v)))


class Perceiver(Model):
    """Perceiver: a learned latent array [N, E] expanded to the batch queries the inputs
    [B, S, C] (one head, LayerNorms on both sides, the inputs' padding masked), an MLP
    residual; then latent self-attention blocks (pre-LayerNorm, GELU MLP)."""

    inputs = ("inputs", "attention_mask")

    def __init__(self):
        super().__init__()
        self.latents = nn.Parameter(torch.zeros(PV_N, E))
        self.ln_q, self.ln_kv = nn.LayerNorm(E), nn.LayerNorm(PV_C)
        self.cross = PerceiverAttention("cross", 1, PV_C)
        self.ln_c, self.mlp_c = nn.LayerNorm(E), MLP(nn.GELU())
        pre_norm_blocks(self, lambda: PerceiverAttention("self", H, E), nn.GELU())

    def forward(self, inputs, attention_mask):
        B = inputs.shape[0]
        z = self.latents.expand(B, -1, -1)
        z = z + self.cross(self.ln_q(z), self.ln_kv(inputs), padding_bias(attention_mask))
        z = z + self.mlp_c(self.ln_c(z))
        for i in range(L):
            h = self.ln1[i](z)
            z = z + self.attn[i](h, h)
            z = z + self.mlp[i](self.ln2[i](z))
        return z


class FunnelAttention(Attn):
    """Funnel's attention: Q from x (all tokens, or the pooled sequence), K and V from the
    full sequence, scores / √D plus its padding."""

    def __init__(self, kind):
        super().__init__(H)
        self.kind = kind
        self.q_head = nn.Linear(E, E, bias=False)
        self.k_head, self.v_head, self.post_proj = nn.Linear(E, E), nn.Linear(E, E), nn.Linear(E, E)

    def forward(self, q_in, kv, pad):
        q, k, v = heads(self.q_head(q_in), H), heads(self.k_head(kv), H), heads(self.v_head(kv), H)
        w = torch.matmul(q * D**-0.5, k.transpose(-1, -2)) + pad
        return self.post_proj(merge(torch.matmul(F.softmax(w, dim=-1), v)))


class Funnel(Model):
    """Funnel Transformer: post-LayerNorm blocks; the second block's queries are the
    sequence mean-pooled to half its length (stride 2, the last odd token alone), its keys
    and values the full sequence, and its residual is the pooled sequence; GELU MLP;
    embedding LayerNorm."""

    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(V, E)
        self.emb_ln = nn.LayerNorm(E)
        self.attn = nn.ModuleList([FunnelAttention("self"), FunnelAttention("cross")])
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(nn.GELU()) for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))

    def forward(self, input_ids, attention_mask):
        x = self.emb_ln(self.word_embeddings(input_ids))
        pad = padding_bias(attention_mask)
        for i in range(L):
            q = x
            if i == 1:
                q = F.avg_pool2d(self.before_pool(x)[:, None], (2, 1), stride=(2, 1), ceil_mode=True)[:, 0]
            x = self.ln1[i](q + self.attn[i](q, x, pad))
            x = self.ln2[i](x + self.mlp[i](x))
        return x

    def before_pool(self, x):
        return x


class FunnelSeparateCls(Funnel):
    """Funnel as the HF model pools by default (separate_cls, truncate_seq): the first token
    put in front of all but the last, cat(x[:, :1], x[:, :-1]), before the pooling."""

    def before_pool(self, x):
        return torch.cat((x[:, :1], x[:, :-1]), dim=1)


class XCA(nn.Module):
    """XCiT's cross-covariance attention: q, k, v as [B, H, D, N] (channels as rows), q
    and k L2-normalised over the tokens, softmax(q̂·k̂ᵀ · τ_h) over the channel axis (a
    [D, D] map per head, τ a learned temperature per head), times v, back to [B, N, C].
    Softmax-shaped, but the product contracts the tokens: counted as not attention."""

    is_attention = False
    heads = kv_heads = H

    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(E, 3 * E), nn.Linear(E, E)
        self.temperature = nn.Parameter(torch.ones(H, 1, 1))

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4)
        q, k, v = q.transpose(-2, -1), k.transpose(-2, -1), v.transpose(-2, -1)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        w = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.proj((w @ v).permute(0, 3, 1, 2).reshape(B, N, C))


class XCiT(Model):
    """XCiT's blocks over patches plus learned positions: x + γ1·XCA(LN(x)),
    x + γ2·MLP(LN(x)) (the local patch interaction left out); final LayerNorm."""

    inputs = ("pixel_values",)

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, E, kernel_size=4, stride=4)
        self.pos_embed = nn.Parameter(torch.zeros(1, CA_N, E))
        layer_scaled_blocks(self, XCA)
        self.norm = nn.LayerNorm(E, eps=1e-6)

    def forward(self, pixel_values):
        x = self.patch(pixel_values).flatten(2).transpose(1, 2) + self.pos_embed
        for i in range(L):
            x = layer_scaled(self, i, x)
        return self.norm(x)


TS_T, TS_G = 2, 2  # timesformer: frames, patch grid side (8x8 frames, 4x4 patches)


class TimeSformer(Model):
    """TimeSformer's divided space-time attention over video [B, T, 3, 8, 8]: per-frame
    patches (h, w, t order) plus a class token, spatial and temporal positions; each layer
    attends over time ([B·h·w, T, C], pre-LN, a dense after it) added to the patches, then
    over space ([B·T, 1 + h·w, C] with the class token repeated to every frame, pre-LN),
    the class token's outputs averaged over the frames; both residuals added to the
    concatenated tokens; pre-LN GELU MLP; final LN."""

    inputs = ("pixel_values",)

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, VE, kernel_size=4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, VE))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + TS_G * TS_G, VE))
        self.time_embed = nn.Parameter(torch.zeros(1, TS_T, VE))
        self.temporal_layernorm = nn.ModuleList(nn.LayerNorm(VE, eps=1e-6) for _ in range(L))
        self.temporal_attention = nn.ModuleList(FusedQKVAttention() for _ in range(L))
        self.temporal_dense = nn.ModuleList(nn.Linear(VE, VE) for _ in range(L))
        self.layernorm_before = nn.ModuleList(nn.LayerNorm(VE, eps=1e-6) for _ in range(L))
        self.attention = nn.ModuleList(FusedQKVAttention() for _ in range(L))
        self.layernorm_after = nn.ModuleList(nn.LayerNorm(VE, eps=1e-6) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(nn.GELU(), VE) for _ in range(L))
        self.layernorm = nn.LayerNorm(VE, eps=1e-6)

    def forward(self, pixel_values):
        B, T, C3, Hh, Ww = pixel_values.shape
        N, C = TS_G * TS_G, VE
        x = self.patch(pixel_values.reshape(B * T, C3, Hh, Ww)).flatten(2).transpose(1, 2)  # [B·T, N, C]
        x = x + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)
        x = x.reshape(B, T, N, C).permute(0, 2, 1, 3).reshape(B * N, T, C) + self.time_embed
        x = torch.cat((cls, x.reshape(B, N * T, C)), dim=1)  # patches in (h, w, t) order
        for i in range(L):
            t = x[:, 1:].reshape(B * N, T, C)
            t = self.temporal_dense[i](self.temporal_attention[i](self.temporal_layernorm[i](t)))
            temporal = x[:, 1:] + t.reshape(B, N * T, C)
            init_cls = x[:, :1]
            cls = init_cls.repeat(1, T, 1).reshape(B * T, 1, C)
            s = temporal.reshape(B, N, T, C).permute(0, 2, 1, 3).reshape(B * T, N, C)
            s = self.attention[i](self.layernorm_before[i](torch.cat((cls, s), dim=1)))
            cls = s[:, 0].reshape(B, T, C).mean(1, keepdim=True)
            s = s[:, 1:].reshape(B, T, N, C).permute(0, 2, 1, 3).reshape(B, N * T, C)
            x = torch.cat((init_cls, temporal), dim=1) + torch.cat((cls, s), dim=1)
            x = x + self.mlp[i](self.layernorm_after[i](x))
        return self.layernorm(x)


PT_P = 12  # patchtst: patch length


class BatchNormTokens(nn.Module):
    """PatchTST's norm: BatchNorm1d over the features, through transposes ([B, S, E] to
    [B, E, S] and back)."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(E)

    def forward(self, x):
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


class ResidualAttention(Attn):
    """PatchTST's residual attention: K projected straight to [B, H, D, S]; scores =
    Q·Kᵀ·D^−½ plus the previous layer's scores (before their softmax), returned for the
    next layer."""

    def __init__(self):
        super().__init__(H)
        self.W_Q, self.W_K, self.W_V, self.to_out = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x, prev):
        B, S, _ = x.shape
        q = self.W_Q(x).view(B, S, H, D).transpose(1, 2)
        k = self.W_K(x).view(B, S, H, D).permute(0, 2, 3, 1)
        v = self.W_V(x).view(B, S, H, D).transpose(1, 2)
        scores = torch.matmul(q, k) * D**-0.5
        if prev is not None:
            scores = scores + prev
        out = torch.matmul(F.softmax(scores, dim=-1), v)
        return self.to_out(out.transpose(1, 2).reshape(B, S, E)), scores


class PatchTST(Model):
    """PatchTST's encoder over patches [B, S, 12]: a Linear to the model width plus learned
    positions sliced to S; post-norm blocks whose norms are BatchNorm1d through
    transposes (trained running statistics); residual attention; GELU MLP."""

    inputs = ("patches",)

    def __init__(self):
        super().__init__()
        self.W_P = nn.Linear(PT_P, E)
        self.W_pos = nn.Parameter(torch.zeros(MAXPOS, E))
        self.attn = nn.ModuleList(ResidualAttention() for _ in range(L))
        self.norm_attn = nn.ModuleList(BatchNormTokens() for _ in range(L))
        self.mlp = nn.ModuleList(MLP(nn.GELU()) for _ in range(L))
        self.norm_ffn = nn.ModuleList(BatchNormTokens() for _ in range(L))
        g = torch.Generator().manual_seed(11)
        for mod in self.modules():
            if isinstance(mod, nn.BatchNorm1d):
                mod.running_mean.copy_(0.2 * torch.randn(mod.num_features, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(mod.num_features, generator=g))

    def forward(self, patches):
        x = self.W_P(patches) + self.W_pos[: patches.shape[1]]
        scores = None
        for i in range(L):
            a, scores = self.attn[i](x, scores)
            x = self.norm_attn[i](x + a)
            x = self.norm_ffn[i](x + self.mlp[i](x))
        return x


# ---------------------------------------------------------------- conformer-block


class ConformerRotaryAttention(Attn):
    """wav2vec2-conformer's rotary self-attention: the rotary (rotate-half, cos and sin
    [S, 1, 1, D]) is applied to the hidden states viewed [S, B, H, D], before linear_q and
    linear_k (V reads the hidden states as they are); scores / √d plus the padding."""

    rotaries = 1  # one rotary a layer, on the input Q and K share

    def __init__(self):
        super().__init__(H)
        self.linear_q, self.linear_k, self.linear_v, self.linear_out = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x, cos, sin, pad):
        B, S, _ = x.shape
        h = x.transpose(0, 1).view(S, B, H, D)
        r = (h * cos + rotate_half(h) * sin).view(S, B, E).transpose(0, 1)
        q, k, v = heads(self.linear_q(r), H), heads(self.linear_k(r), H), heads(self.linear_v(x), H)
        w = F.softmax(torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(D) + pad, dim=-1)
        return self.linear_out(merge(torch.matmul(w, v)))


class ConformerConvModule(nn.Module):
    """The Conformer convolution module channel-first: LayerNorm, pointwise Conv1d to 2E, GLU
    over the channels, padding zeroed (Wav2Vec2-BERT), depthwise Conv1d (kernel 5, same
    padding), BatchNorm1d, SiLU, pointwise Conv1d back to E."""

    def __init__(self):
        super().__init__()
        self.layer_norm = nn.LayerNorm(E)
        self.pointwise_conv1 = nn.Conv1d(E, 2 * E, 1, bias=False)
        self.depthwise_conv = nn.Conv1d(E, E, 5, padding=2, groups=E, bias=False)
        self.batch_norm = nn.BatchNorm1d(E)
        self.pointwise_conv2 = nn.Conv1d(E, E, 1, bias=False)

    def forward(self, x, keep):
        x = self.layer_norm(x).transpose(1, 2)
        x = F.glu(self.pointwise_conv1(x), dim=1)
        x = x.masked_fill(~keep[:, None, :], 0.0)
        x = F.silu(self.batch_norm(self.depthwise_conv(x)))
        return self.pointwise_conv2(x).transpose(1, 2)


class ConformerBlock(Model):
    """Full Conformer blocks (wav2vec2-conformer with rotary positions): x + ½·FFN(LN(x)),
    x + rotary attention(LN(x)), x + conv module(x), x + ½·FFN(LN(x)), then the block's
    final LayerNorm; the FFNs Linear, SiLU, Linear."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        mods = lambda f: nn.ModuleList(f() for _ in range(L))
        self.ffn1_ln, self.ffn1 = mods(lambda: nn.LayerNorm(E)), mods(lambda: MLP(F.silu))
        self.attn_ln, self.attn = mods(lambda: nn.LayerNorm(E)), mods(ConformerRotaryAttention)
        self.conv = mods(ConformerConvModule)
        self.ffn2_ln, self.ffn2 = mods(lambda: nn.LayerNorm(E)), mods(lambda: MLP(F.silu))
        self.final_ln = mods(lambda: nn.LayerNorm(E))
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D)), persistent=False)
        g = torch.Generator().manual_seed(13)
        for mod in self.modules():
            if isinstance(mod, nn.BatchNorm1d):
                mod.running_mean.copy_(0.2 * torch.randn(mod.num_features, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(mod.num_features, generator=g))

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        x = self.embed(input_ids)
        f = torch.einsum("i,j->ij", torch.arange(S, dtype=torch.float32), self.inv_freq)
        emb = torch.cat((f, f), dim=-1)
        cos, sin = emb.cos()[:, None, None, :], emb.sin()[:, None, None, :]
        pad = padding_bias(attention_mask)
        keep = attention_mask.to(torch.bool)
        for i in range(L):
            x = x + 0.5 * self.ffn1[i](self.ffn1_ln[i](x))
            x = x + self.attn[i](self.attn_ln[i](x), cos, sin, pad)
            x = x + self.conv[i](x, keep)
            x = x + 0.5 * self.ffn2[i](self.ffn2_ln[i](x))
            x = self.final_ln[i](x)
        return x


# ---------------------------------------------------------------- mask2former-masked

M2F_N = 6  # mask2former: object queries


class Mask2FormerLayer(nn.Module):
    """Mask2Former's decoder layer (post-norm): masked cross-attention (Q the queries plus
    their position embedding, K the features plus theirs, V the features; a boolean mask
    per head), self-attention (Q and K with the query positions, V without), a ReLU FFN;
    nn.MultiheadAttention, sequence-first."""

    def __init__(self):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(E, H, dropout=0.0)
        self.self_attn = nn.MultiheadAttention(E, H, dropout=0.0)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(E), nn.LayerNorm(E), nn.LayerNorm(E)
        self.mlp = MLP(F.relu)
        self.marks = nn.ModuleList([Attn(H), Attn(H)])
        self.marks[0].kind = "cross"

    def forward(self, q, qpos, mem, mpos, mask):
        a = self.cross_attn(q + qpos, mem + mpos, value=mem, attn_mask=mask, need_weights=False)[0]
        q = self.norm1(q + a)
        a = self.self_attn(q + qpos, q + qpos, value=q, need_weights=False)[0]
        q = self.norm2(q + a)
        return self.norm3(q + self.mlp(q))


class Mask2Former(Model):
    """Mask2Former's transformer decoder over a 4x4 feature map (strided Conv, sine 2-D
    positions): learned query features and positions [N, E] expanded to the batch; before
    each layer a mask prediction, einsum(LN(q) MLP, features), thresholded:
    sigmoid(m) < 0.5 masks a feature, rows that mask every feature reset to unmasked,
    repeated to each head [B·H, N, HW]; a final LayerNorm."""

    inputs = ("pixel_values",)

    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, E, kernel_size=4, stride=4)
        self.query_feat, self.query_embed = nn.Embedding(M2F_N, E), nn.Embedding(M2F_N, E)
        self.layers = nn.ModuleList(Mask2FormerLayer() for _ in range(L))
        self.pred_norm = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mask_embed = nn.ModuleList(nn.Sequential(nn.Linear(E, E), nn.ReLU(), nn.Linear(E, E)) for _ in range(L))
        self.decoder_norm = nn.LayerNorm(E)
        pe = sine_positions_2d()
        self.register_buffer("pos", pe[:, None, :], persistent=False)  # [HW, 1, E]

    def attn_mask(self, i, q, feat):
        """[B·H, N, HW] boolean: True where the query may not look."""
        m = torch.einsum("bqc,bcs->bqs", self.mask_embed[i](self.pred_norm[i](q.transpose(0, 1))), feat)
        m = m.sigmoid() < 0.5
        m = m & ~(m.sum(-1, keepdim=True) == m.shape[-1])
        return m[:, None].repeat(1, H, 1, 1).flatten(0, 1)

    def forward(self, pixel_values):
        feat = self.backbone(pixel_values).flatten(2)  # [B, E, HW]
        mem = feat.permute(2, 0, 1)  # [HW, B, E]
        B = pixel_values.shape[0]
        q = self.query_feat.weight[:, None].expand(-1, B, -1)
        qpos = self.query_embed.weight[:, None].expand(-1, B, -1)
        for i, layer in enumerate(self.layers):
            q = layer(q, qpos, mem, self.pos, self.attn_mask(i, q, feat))
        return self.decoder_norm(q).transpose(0, 1)


class Mask2FormerHF(Mask2Former):
    """Mask2Former's masks as HF writes them: sigmoid, flatten, repeated to the heads,
    < 0.5, then the rows that mask everything reset by index assignment at
    torch.where(mask.sum(-1) == mask.shape[-1])."""

    def attn_mask(self, i, q, feat):
        m = torch.einsum("bqc,bcs->bqs", self.mask_embed[i](self.pred_norm[i](q.transpose(0, 1))), feat)
        m = m.sigmoid().unsqueeze(1).repeat(1, H, 1, 1).flatten(0, 1) < 0.5
        m[torch.where(m.sum(-1) == m.shape[-1])] = False
        return m


# ---------------------------------------------------------------- speecht5-relpos

ST5_MAX = 4  # speecht5: relative distances clipped to [-max, max - 1]


class SpeechT5Attention(Attn):
    """SpeechT5's self-attention on [B·H, S, D] by bmm: Q scaled after its projection;
    scores plus q·relᵀ, with the queries [S, B·H, D] multiplied by the [S, S, D]
    relative embeddings transposed, then back to [B·H, S, S]; the padding mask added."""

    def __init__(self):
        super().__init__(H)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x, rel, mask):
        B, S, _ = x.shape
        shape = lambda t: t.view(B, S, H, D).transpose(1, 2).reshape(B * H, S, D)
        q, k, v = shape(self.q_proj(x) * D ** -0.5), shape(self.k_proj(x)), shape(self.v_proj(x))
        w = torch.bmm(q, k.transpose(1, 2))
        rq = q.view(B * H, -1, D).transpose(0, 1)
        w = w + torch.matmul(rq, rel.transpose(-2, -1)).transpose(0, 1).view(B * H, S, S)
        w = (w.view(B, H, S, S) + mask).view(B * H, S, S)
        o = torch.bmm(F.softmax(w, dim=-1), v)
        return self.out_proj(o.view(B, H, S, D).transpose(1, 2).reshape(B, S, E))


class SpeechT5(Model):
    """SpeechT5's encoder: token embeddings, a LayerNorm, post-LN layers of relative-position
    self-attention and a GELU FFN. The relative embedding pe_k(clamp(i - j, -max, max - 1)
    + max) [S, S, D] is computed once, shared by the layers."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.layer_norm = nn.LayerNorm(E)
        self.pe_k = nn.Embedding(2 * ST5_MAX, D)
        self.attn = nn.ModuleList(SpeechT5Attention() for _ in range(L))
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(F.gelu) for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))

    def forward(self, input_ids, attention_mask):
        x = self.layer_norm(self.embed(input_ids))
        S = x.shape[1]
        i = torch.arange(0, S)
        rel = self.pe_k(torch.clamp(i[:, None] - i[None, :], -ST5_MAX, ST5_MAX - 1) + ST5_MAX)
        mask = padding_bias(attention_mask)
        for l in range(L):
            x = self.ln1[l](x + self.attn[l](x, rel, mask))
            x = self.ln2[l](x + self.mlp[l](x))
        return x


# ---------------------------------------------------------------- detr-decoder

DD_N = 5  # detr-decoder: object queries


class DetrAttention(Attn):
    """HF DETR's attention on [B, N, E]: position embeddings added to the queries' input
    (Q) and to the keys' input (K) but not to V's; Q scaled after its projection; bmm
    on [B·H, N, D]; an additive mask on a [B, H, N, T] view."""

    def __init__(self, kind):
        super().__init__(H)
        self.kind = kind
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x, qpos, kv, kpos, mask=None):
        B, N, _ = x.shape
        T = kv.shape[1]
        shape = lambda t, n: t.view(B, n, H, D).transpose(1, 2).reshape(B * H, n, D)
        q = shape(self.q_proj(x + qpos) * D ** -0.5, N)
        k, v = shape(self.k_proj(kv + kpos), T), shape(self.v_proj(kv), T)
        w = torch.bmm(q, k.transpose(1, 2))
        if mask is not None:
            w = (w.view(B, H, N, T) + mask).view(B * H, N, T)
        o = torch.bmm(F.softmax(w, dim=-1), v)
        return self.out_proj(o.view(B, H, N, D).transpose(1, 2).reshape(B, N, E))


class DetrDecoder(Model):
    """DETR's decoder over a 4x4 feature map (strided Conv, sine 2-D positions), as HF
    writes it: the queries start at zeros (zeros_like of the learned query positions
    expanded to the batch); post-LN layers of self-attention (Q and K read the queries
    plus their positions, V the queries), cross-attention (Q the queries plus positions, K
    the features plus theirs, V the features, the pixels' padding masked) and a ReLU FFN;
    a final LayerNorm."""

    inputs = ("pixel_values", "pixel_mask")

    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, E, kernel_size=4, stride=4)
        self.query_position_embeddings = nn.Embedding(DD_N, E)
        self.self_attn = nn.ModuleList(DetrAttention("self") for _ in range(L))
        self.cross_attn = nn.ModuleList(DetrAttention("cross") for _ in range(L))
        self.mlp = nn.ModuleList(MLP(F.relu) for _ in range(L))
        self.ln1, self.ln2, self.ln3 = (nn.ModuleList(nn.LayerNorm(E) for _ in range(L)) for _ in range(3))
        self.layernorm = nn.LayerNorm(E)
        pe = sine_positions_2d()
        self.register_buffer("pos", pe[None], persistent=False)  # [1, HW, E]

    def forward(self, pixel_values, pixel_mask):
        mem = self.backbone(pixel_values).flatten(2).transpose(1, 2)  # [B, HW, E]
        keep = F.max_pool2d(pixel_mask[:, None].float(), 4).flatten(1)  # [B, HW]
        B = pixel_values.shape[0]
        qpos = self.query_position_embeddings.weight.unsqueeze(0).repeat(B, 1, 1)
        h = torch.zeros_like(qpos)
        for i in range(L):
            h = self.ln1[i](h + self.self_attn[i](h, qpos, h, qpos))
            h = self.ln2[i](h + self.cross_attn[i](h, qpos, mem, self.pos, padding_bias(keep)))
            h = self.ln3[i](h + self.mlp[i](h))
        return self.layernorm(h)


# ---------------------------------------------------------------- qformer

QF_N = 6  # qformer: query tokens


class QFormerAttention(Attn):
    """BERT's attention as BLIP-2's Q-Former has it: Q from the queries, K and V from the
    queries (self) or the image features of their own width (cross); scores / √d plus
    the extended mask of an all-ones attention mask; dense, then LN(x + h)."""

    def __init__(self, kind, kv_dim):
        super().__init__(H)
        self.kind = kind
        self.query, self.key, self.value = nn.Linear(E, E), nn.Linear(kv_dim, E), nn.Linear(kv_dim, E)
        self.dense, self.ln = nn.Linear(E, E), nn.LayerNorm(E, eps=1e-12)

    def forward(self, x, kv, mask):
        q, k, v = heads(self.query(x), H), heads(self.key(kv), H), heads(self.value(kv), H)
        w = F.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D) + mask, dim=-1)
        return self.ln(x + self.dense(merge(torch.matmul(w, v))))


class QFormer(Model):
    """BLIP-2's Q-Former over image features [B, T, CTX]: learned query tokens [1, N, E]
    expanded to the batch and LayerNormed; BERT post-LN layers: self-attention over the
    queries, cross-attention to the image features in every other layer (the first),
    a GELU FFN with LN(x + h). The masks are HF's extended masks of all-ones masks built
    from the shapes."""

    inputs = ("encoder_hidden_states",)

    def __init__(self):
        super().__init__()
        self.query_tokens = nn.Parameter(torch.zeros(1, QF_N, E))
        self.layernorm = nn.LayerNorm(E, eps=1e-12)
        self.attention = nn.ModuleList(QFormerAttention("self", E) for _ in range(L))
        self.crossattention = nn.ModuleList(QFormerAttention("cross", CTX) for i in range(L) if i % 2 == 0)
        self.mlp = nn.ModuleList(MLP(nn.GELU()) for _ in range(L))
        self.ln_out = nn.ModuleList(nn.LayerNorm(E, eps=1e-12) for _ in range(L))

    def forward(self, encoder_hidden_states):
        B, T = encoder_hidden_states.shape[:2]
        x = self.layernorm(self.query_tokens.expand(B, -1, -1))
        qmask = padding_bias(torch.ones(x.shape[:-1], dtype=torch.long))
        emask = padding_bias(torch.ones(B, T, dtype=torch.long))
        for i in range(L):
            x = self.attention[i](x, x, qmask)
            if i % 2 == 0:
                x = self.crossattention[i // 2](x, encoder_hidden_states, emask)
            x = self.ln_out[i](x + self.mlp[i](x))
        return x


class QFormerText(QFormer):
    """BLIP-2's Q-Former with text: the query tokens and the text's embeddings (words plus
    learned positions) concatenated and LayerNormed; self-attention over both under
    cat(ones for the queries, the text's padding); cross-attention to the image
    features for the queries alone (x[:, :N]); the queries' FFN on x[:, :N], the text's
    own FFN on x[:, N:], concatenated back."""

    inputs = ("encoder_hidden_states", "input_ids", "attention_mask")

    def __init__(self):
        super().__init__()
        self.word_embeddings, self.position_embeddings = nn.Embedding(V, E), nn.Embedding(MAXPOS, E)
        self.mlp_text = nn.ModuleList(MLP(nn.GELU()) for _ in range(L))
        self.ln_text = nn.ModuleList(nn.LayerNorm(E, eps=1e-12) for _ in range(L))

    def forward(self, encoder_hidden_states, input_ids, attention_mask):
        B, T = encoder_hidden_states.shape[:2]
        S = input_ids.shape[1]
        text = self.word_embeddings(input_ids) + self.position_embeddings(torch.arange(S)[None])
        x = self.layernorm(torch.cat([self.query_tokens.expand(B, -1, -1), text], dim=1))
        mask = padding_bias(torch.cat([torch.ones(B, QF_N, dtype=torch.long), attention_mask], dim=1))
        emask = padding_bias(torch.ones(B, T, dtype=torch.long))
        for i in range(L):
            x = self.attention[i](x, x, mask)
            q, t = x[:, :QF_N], x[:, QF_N:]
            if i % 2 == 0:
                q = self.crossattention[i // 2](q, encoder_hidden_states, emask)
            q = self.ln_out[i](q + self.mlp[i](q))
            t = self.ln_text[i](t + self.mlp_text[i](t))
            x = torch.cat([q, t], dim=1)
        return x


# ---------------------------------------------------------------- pix2struct

P2S_P = 12  # pix2struct: values per flattened patch (after the row and column ids)


class Pix2StructAttention(Attn):
    """Pix2Struct's vision attention: Q, K, V and output without biases, no scaling of the
    scores; the position bias zeros [1, H, S, S] plus the extended mask, added, the scores
    clamped below at the most negative float, softmax in float32."""

    def __init__(self):
        super().__init__(H)
        self.query, self.key, self.value, self.output = (nn.Linear(E, E, bias=False) for _ in range(4))

    def forward(self, x, bias):
        q, k, v = heads(self.query(x), H), heads(self.key(x), H), heads(self.value(x), H)
        s = torch.matmul(q, k.transpose(3, 2)) + bias
        s = torch.max(s, torch.tensor(MIN))
        w = F.softmax(s, dim=-1, dtype=torch.float32).type_as(s)
        return self.output(merge(torch.matmul(w, v)))


class Pix2Struct(Model):
    """Pix2Struct's vision encoder over flattened_patches [B, S, 2 + P]: the first two
    columns are 1-based row and column ids (floats cast to long) whose learned embeddings
    are added to the patches' projection; pre-RMSNorm (T5's, no mean) blocks of attention
    without scaling and a gated gelu_new MLP; the position bias built once, zeros plus the
    extended mask; a final RMSNorm."""

    inputs = ("flattened_patches", "attention_mask")

    def __init__(self):
        super().__init__()
        self.patch_projection = nn.Linear(P2S_P, E)
        self.row_embedder, self.column_embedder = nn.Embedding(MAXPOS, E), nn.Embedding(MAXPOS, E)
        self.ln1 = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(Pix2StructAttention() for _ in range(L))
        self.ln2 = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(Gated(gelu_new) for _ in range(L))
        self.layernorm = RMSNorm(E)

    def forward(self, flattened_patches, attention_mask):
        rows, cols = flattened_patches[:, :, 0].long(), flattened_patches[:, :, 1].long()
        x = self.patch_projection(flattened_patches[:, :, 2:])
        x = x + self.row_embedder(rows) + self.column_embedder(cols)
        S = x.shape[1]
        bias = torch.zeros((1, H, S, S), dtype=x.dtype) + padding_bias(attention_mask)
        for i in range(L):
            x = x + self.attn[i](self.ln1[i](x), bias)
            x = x + self.mlp[i](self.ln2[i](x))
        return self.layernorm(x)


# ---------------------------------------------------------------- w2v-bert

W2B_LEFT, W2B_RIGHT = 4, 2  # w2v-bert: relative distances clipped to [-left, right]


class W2VBertAttention(Attn):
    """Wav2Vec2-BERT's relative_key self-attention: scores q·kᵀ/√d plus
    einsum("bhld,lrd->bhlr", q, emb(clamp(j - i, -left, right) + left))/√d, the [S, S, D]
    distance embeddings gathered from a learned table; the padding added."""

    def __init__(self):
        super().__init__(H)
        self.linear_q, self.linear_k, self.linear_v, self.linear_out = (nn.Linear(E, E) for _ in range(4))
        self.distance_embedding = nn.Embedding(W2B_LEFT + W2B_RIGHT + 1, D)

    def forward(self, x, pad):
        q, k, v = heads(self.linear_q(x), H), heads(self.linear_k(x), H), heads(self.linear_v(x), H)
        s = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(D)
        S = x.shape[1]
        pl, pr = torch.arange(S).view(-1, 1), torch.arange(S).view(1, -1)
        dist = torch.clamp(pr - pl, -W2B_LEFT, W2B_RIGHT)
        rel = self.distance_embedding(dist + W2B_LEFT)
        s = s + torch.einsum("bhld,lrd->bhlr", q, rel) / math.sqrt(D)
        w = F.softmax(s + pad, dim=-1)
        return self.linear_out(merge(torch.matmul(w, v)))


class W2VBertConvModule(nn.Module):
    """Wav2Vec2-BERT's convolution module: LayerNorm, padding zeroed, pointwise Conv1d to 2E,
    GLU over the channels, left (causal) padding by F.pad, depthwise Conv1d (kernel 5, no
    padding), a LayerNorm over the channels through transposes, SiLU, pointwise Conv1d."""

    def __init__(self):
        super().__init__()
        self.layer_norm = nn.LayerNorm(E)
        self.pointwise_conv1 = nn.Conv1d(E, 2 * E, 1, bias=False)
        self.depthwise_conv = nn.Conv1d(E, E, 5, groups=E, bias=False)
        self.depthwise_layer_norm = nn.LayerNorm(E)
        self.pointwise_conv2 = nn.Conv1d(E, E, 1, bias=False)

    def forward(self, x, keep):
        x = self.layer_norm(x).masked_fill(~keep[:, :, None], 0.0).transpose(1, 2)
        x = F.glu(self.pointwise_conv1(x), dim=1)
        x = self.depthwise_conv(F.pad(x, (4, 0)))
        x = self.depthwise_layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return self.pointwise_conv2(F.silu(x)).transpose(1, 2)


class W2VBert(ConformerBlock):
    """Wav2Vec2-BERT's Conformer blocks: macaron FFNs, relative_key attention, its
    convolution module, a final LayerNorm per block."""

    def __init__(self):
        super().__init__()
        self.attn = nn.ModuleList(W2VBertAttention() for _ in range(L))
        self.conv = nn.ModuleList(W2VBertConvModule() for _ in range(L))

    def forward(self, input_ids, attention_mask):
        x = self.embed(input_ids)
        pad = padding_bias(attention_mask)
        keep = attention_mask.to(torch.bool)
        for i in range(L):
            x = x + 0.5 * self.ffn1[i](self.ffn1_ln[i](x))
            x = x + self.attn[i](self.attn_ln[i](x), pad)
            x = x + self.conv[i](x, keep)
            x = x + 0.5 * self.ffn2[i](self.ffn2_ln[i](x))
            x = self.final_ln[i](x)
        return x


class NormFormerMLP(FFN):
    """fc2(LayerNorm(gelu(fc1(x)))): NormFormer's and Magneto's Sub-LN FFN, the hidden
    normalised over its F features before the down projection."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.ffn_layernorm = nn.Linear(E, FF), nn.Linear(FF, E), nn.LayerNorm(FF)

    def forward(self, x):
        return self.fc2(self.ffn_layernorm(F.gelu(self.fc1(x))))


class NormFormer(ViT):
    """ViT's pre-LN encoder with NormFormer's FFN (a LayerNorm on the FFN hidden)."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.ModuleList(NormFormerMLP() for _ in range(L))


# ---------------------------------------------------------------- cross-attn


class CrossAttention(Attn):
    kind = "cross"

    def __init__(self):
        super().__init__(H)
        self.q, self.k, self.v, self.o = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x, memory):
        q, k, v = heads(self.q(x), H), heads(self.k(memory), H), heads(self.v(memory), H)
        w = F.softmax(torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(D)), dim=-1)
        return self.o(merge(torch.matmul(w, v)))


class CrossAttn(Model):
    inputs = ("hidden_states", "memory")

    def __init__(self):
        super().__init__()
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(CrossAttention() for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(F.gelu) for _ in range(L))
        self.ln_f = nn.LayerNorm(E)

    def forward(self, hidden_states, memory):
        x = hidden_states
        for i in range(L):
            x = x + self.attn[i](self.ln1[i](x), memory)
            x = x + self.mlp[i](self.ln2[i](x))
        return self.ln_f(x)


# ---------------------------------------------------------------- causal decoders: mqa, causal-range, decoder-sinusoidal


class MQAttention(Attn):
    causal = True

    def __init__(self):
        super().__init__(H, 1)
        self.q_proj, self.kv_proj, self.o_proj = nn.Linear(E, E), nn.Linear(E, 2 * D), nn.Linear(E, E)

    def forward(self, x, pad):
        B, S, _ = x.shape
        q = heads(self.q_proj(x), H)  # [B,H,S,D]
        k, v = self.kv_proj(x).split(D, dim=-1)
        k, v = k.unsqueeze(1), v.unsqueeze(1)  # [B,1,S,D]: broadcast over the heads
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D)
        causal = torch.tril(torch.ones(S, S))
        w = w.masked_fill(causal == 0, float("-inf")) + pad
        w = F.softmax(w, dim=-1)
        return self.o_proj(merge(torch.matmul(w, v)))


class MHACausal(Attn):
    """Multi-head attention taking a full additive [B,1,S,S] mask."""

    causal = True

    def __init__(self, scale_q=False):
        super().__init__(H)
        self.q, self.k, self.v, self.o = (nn.Linear(E, E) for _ in range(4))
        self.scale_q = scale_q

    def forward(self, x, mask):
        q = self.q(x)
        if self.scale_q:
            q = q * D ** -0.5
        q, k, v = heads(q, H), heads(self.k(x), H), heads(self.v(x), H)
        w = torch.matmul(q, k.transpose(-1, -2))
        if not self.scale_q:
            w = w / math.sqrt(D)
        w = F.softmax(w + mask, dim=-1)
        return self.o(merge(torch.matmul(w, v)))


class PreLNDecoder(Model):
    """Learned positions, pre-LayerNorm blocks, final LayerNorm; subclasses make the mask."""

    act = staticmethod(F.gelu)

    def __init__(self, attn):
        super().__init__()
        self.tok, self.pos = nn.Embedding(V, E), nn.Embedding(MAXPOS, E)
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(attn() for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(self.act) for _ in range(L))
        self.ln_f = nn.LayerNorm(E)

    def embed(self, input_ids):
        return self.tok(input_ids) + self.pos(torch.arange(input_ids.shape[1]))

    def forward(self, input_ids, attention_mask):
        x = self.embed(input_ids)
        mask = self.mask(input_ids.shape[1], attention_mask)
        for i in range(L):
            x = x + self.attn[i](self.ln1[i](x), mask)
            x = x + self.mlp[i](self.ln2[i](x))
        return self.ln_f(x)


class MQA(PreLNDecoder):
    def __init__(self):
        super().__init__(MQAttention)

    def mask(self, S, attention_mask):
        return padding_bias(attention_mask)  # the causal part is a Trilu inside each block


class CausalRange(PreLNDecoder):
    def __init__(self):
        super().__init__(MHACausal)

    def mask(self, S, attention_mask):
        r = torch.arange(S)
        causal = torch.where(r[None, :] <= r[:, None], torch.tensor(0.0), torch.tensor(MIN))
        return torch.min(causal[None, None, :, :], padding_bias(attention_mask))


class DecoderSinusoidal(PreLNDecoder):
    """Token embedding * sqrt(d) plus constant sinusoids, no LayerNorm after the sum."""

    act = staticmethod(F.relu)

    def __init__(self):
        super().__init__(lambda: MHACausal(scale_q=True))
        del self.pos
        half = E // 2
        freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
        ang = torch.arange(MAXPOS, dtype=torch.float32)[:, None] * freq[None, :]
        self.register_buffer("sinusoids", torch.cat((torch.sin(ang), torch.cos(ang)), dim=1), persistent=False)

    def embed(self, input_ids):
        S = input_ids.shape[1]
        return self.tok(input_ids) * math.sqrt(E) + self.sinusoids[:S].unsqueeze(0)

    def mask(self, S, attention_mask):
        future = torch.triu(torch.full((S, S), float("-inf")), 1)
        return future[None, None] + padding_bias(attention_mask)


# ---------------------------------------------------------------- sdpa-like


class SDPAAttention(Attn):
    def __init__(self):
        super().__init__(H)
        self.q, self.k, self.o = (nn.Linear(E, E, bias=False) for _ in range(3))
        self.v = nn.Linear(E, E)

    def forward(self, x, bias):
        q, k, v = heads(self.q(x), H), heads(self.k(x), H), heads(self.v(x), H)
        s = math.sqrt(1.0 / math.sqrt(D))
        w = torch.matmul(q * s, k.transpose(-2, -1) * s) + bias
        return self.o(merge(torch.matmul(torch.softmax(w, dim=-1), v)))


class SDPALike(Model):
    def __init__(self):
        super().__init__()
        self.tok, self.pos, self.emb_ln = nn.Embedding(V, E), nn.Embedding(MAXPOS, E), nn.LayerNorm(E)
        self.attn = nn.ModuleList(SDPAAttention() for _ in range(L))
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(lambda x: F.gelu(x, approximate="tanh")) for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))

    def forward(self, input_ids, attention_mask):  # attention_mask: bool, True = attend
        x = self.emb_ln(self.tok(input_ids) + self.pos(torch.arange(input_ids.shape[1])))
        bias = torch.where(attention_mask[:, None, None, :], torch.tensor(0.0), torch.tensor(float("-inf")))
        for i in range(L):
            x = self.ln1[i](x + self.attn[i](x, bias))
            x = self.ln2[i](x + self.mlp[i](x))
        return x


# ---------------------------------------------------------------- distilbert-gemm


class GemmAttention(Attn):
    def __init__(self):
        super().__init__(H)
        self.q_lin, self.k_lin, self.v_lin, self.out_lin = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x2, B, S, mask):
        """x2 is the 2-D [B*S, E] view; nn.Linear on it is a Gemm."""
        q = self.q_lin(x2).view(B, S, H, D).transpose(1, 2)
        k = self.k_lin(x2).view(B, S, H, D).transpose(1, 2)
        v = self.v_lin(x2).view(B, S, H, D).transpose(1, 2)
        q = q / math.sqrt(D)
        w = torch.matmul(q, k.transpose(2, 3))
        w = w.masked_fill(mask.expand_as(w), torch.tensor(MIN))
        w = F.softmax(w, dim=-1)
        ctx = torch.matmul(w, v).transpose(1, 2).reshape(B * S, E)
        return self.out_lin(ctx)


class GemmEncoder(Model):
    def __init__(self):
        super().__init__()
        self.word, self.pos, self.emb_ln = nn.Embedding(V, E), nn.Embedding(MAXPOS, E), nn.LayerNorm(E, eps=1e-12)
        self.attn = nn.ModuleList(GemmAttention() for _ in range(L))
        self.sa_layer_norm = nn.ModuleList(nn.LayerNorm(E, eps=1e-12) for _ in range(L))
        self.ffn = nn.ModuleList(MLP(F.gelu) for _ in range(L))
        self.output_layer_norm = nn.ModuleList(nn.LayerNorm(E, eps=1e-12) for _ in range(L))

    def forward(self, input_ids, attention_mask):
        B, S = input_ids.shape
        x = self.emb_ln(self.word(input_ids) + self.pos(torch.arange(S)))
        x = x.reshape(B * S, E)
        mask = (attention_mask == 0).view(B, 1, 1, S)
        for i in range(L):
            x = self.sa_layer_norm[i](x + self.attn[i](x, B, S, mask))
            x = self.output_layer_norm[i](x + self.ffn[i](x))
        return x.view(B, S, E)


# ---------------------------------------------------------------- nearmiss-softmax-axis


class QueryAxisSoftmax(nn.Module):
    """Attention-shaped, but the softmax runs over the query axis: not attention."""

    is_attention = False
    heads = kv_heads = H

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x, pad):
        q, k, v = heads(self.q(x), H), heads(self.k(x), H), heads(self.v(x), H)
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D) + pad
        return self.o(merge(torch.matmul(F.softmax(w, dim=-2), v)))


class NearMiss(PreLNDecoder):
    def __init__(self):
        super().__init__(QueryAxisSoftmax)

    def mask(self, S, attention_mask):
        return padding_bias(attention_mask)


# ---------------------------------------------------------------- the forms

# form -> (constructor, the opsets it is exported at); a form's seeds are 1000, 2000 and
# 3000 (weights, trace input, reference input) plus its index here, so adding a form at the
# end changes no other file.

# ---------------------------------------------------------------- opt


class OPTAttention(Attn):
    """OPT: Q scaled right after its projection; the masked scores clamped to the most
    negative float (a padding and a causal MIN add up to -inf) before the softmax."""

    causal = True

    def __init__(self):
        super().__init__(H)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x, mask):
        q = heads(self.q_proj(x) * D**-0.5, H)
        k, v = heads(self.k_proj(x), H), heads(self.v_proj(x), H)
        w = torch.matmul(q, k.transpose(2, 3)) + mask
        w = torch.max(w, torch.tensor(MIN))
        w = F.softmax(w, dim=-1)
        return self.out_proj(merge(torch.matmul(w, v)))


class OPT(Model):
    """OPT-125m: learned positions from the cumulative padding mask with an offset of 2, a
    causal mask from Range comparisons added to the padding mask, pre-LayerNorm blocks,
    ReLU FFN, final LayerNorm."""

    def __init__(self):
        super().__init__()
        self.embed_tokens, self.embed_positions = nn.Embedding(V, E), nn.Embedding(MAXPOS + 2, E)
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(OPTAttention() for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(F.relu) for _ in range(L))
        self.final_layer_norm = nn.LayerNorm(E)

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        positions = (torch.cumsum(attention_mask, dim=1) * attention_mask).long() - 1
        x = self.embed_tokens(input_ids) + self.embed_positions(positions + 2)
        cond = torch.arange(S)
        causal = torch.full((S, S), MIN).masked_fill(cond < (cond + 1).view(S, 1), 0.0)
        mask = causal[None, None] + padding_bias(attention_mask)
        for i in range(L):
            x = x + self.attn[i](self.ln1[i](x), mask)
            x = x + self.mlp[i](self.ln2[i](x))
        return self.final_layer_norm(x)


# ---------------------------------------------------------------- qwen2 / gemma


def rotary_from_positions(inv_freq, position_ids):
    """cos, sin [B,1,S,D] computed from the position ids in the graph (no table):
    freqs = inv_freq ⊗ positions by a batched matmul, duplicated to the head size."""
    B = position_ids.shape[0]
    f = inv_freq[None, :, None].expand(B, -1, 1) @ position_ids[:, None, :].float()
    emb = torch.cat((f.transpose(1, 2), f.transpose(1, 2)), dim=-1)
    return emb.cos()[:, None], emb.sin()[:, None]


class GQAttention(Attn):
    """LLaMA-style attention with a head size of its own and kv_heads K/V heads; Q, K, V
    biases optional (Qwen2 has them, Gemma not); the scale on the scores or on Q."""

    causal = True
    rotaries = 2

    def __init__(self, kv_heads, d, qkv_bias, scale_q):
        super().__init__(H, kv_heads)
        self.d, self.scale_q = d, scale_q
        self.q_proj = nn.Linear(E, H * d, bias=qkv_bias)
        self.k_proj = nn.Linear(E, kv_heads * d, bias=qkv_bias)
        self.v_proj = nn.Linear(E, kv_heads * d, bias=qkv_bias)
        self.o_proj = nn.Linear(H * d, E, bias=False)

    def forward(self, x, mask, cos, sin):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), self.kv_heads), heads(self.v_proj(x), self.kv_heads)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // self.kv_heads), repeat_kv(v, H // self.kv_heads)
        if self.scale_q:
            w = torch.matmul(q * self.d**-0.5, k.transpose(2, 3)) + mask
        else:
            w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.d) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(merge(torch.matmul(w, v)))


class Qwen2(Model):
    """Qwen2 / Mistral: GQA (2 K/V heads) with Q/K/V biases, rotary computed from the
    position ids, a sliding-window causal mask (window 4) from Range comparisons with the
    padding written in by Where, RMSNorm, SwiGLU."""

    inputs = ("input_ids", "attention_mask", "position_ids")
    window = 4

    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, E)
        self.input_layernorm = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.self_attn = nn.ModuleList(GQAttention(2, D, True, False) for _ in range(L))
        self.post_attention_layernorm = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(Gated(F.silu) for _ in range(L))
        self.norm = RMSNorm(E)
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D)), persistent=False)

    def forward(self, input_ids, attention_mask, position_ids):
        S = input_ids.shape[1]
        x = self.embed_tokens(input_ids)
        cos, sin = rotary_from_positions(self.inv_freq, position_ids)
        i = torch.arange(S)
        diff = i[:, None] - i[None, :]
        allowed = (diff >= 0) & (diff < self.window)
        mask = torch.full((S, S), MIN).masked_fill(allowed, 0.0)[None, None]
        mask = mask.masked_fill(attention_mask[:, None, None, :] == 0, MIN)
        for l in range(L):
            x = x + self.self_attn[l](self.input_layernorm[l](x), mask, cos, sin)
            x = x + self.mlp[l](self.post_attention_layernorm[l](x))
        return self.norm(x)


class Qwen2VL(Qwen2):
    """Qwen2-VL's text decoder: Qwen2's blocks with multimodal rotary (M-RoPE). The
    position ids are [3, B, S] (time, height, width); cos and sin are computed for each of
    the three, [3, B, S, D], then assembled channel by channel: split into the sections
    (1, 1, 2) repeated for the second half, section i taken from row i mod 3, concatenated."""

    section = [1, 1, 2]  # sums to D/2

    def forward(self, input_ids, attention_mask, position_ids):
        S = input_ids.shape[1]
        x = self.embed_tokens(input_ids)
        f = self.inv_freq[None, None, :, None].expand(3, position_ids.shape[1], -1, 1) @ position_ids[:, :, None, :].float()
        emb = torch.cat((f.transpose(2, 3), f.transpose(2, 3)), dim=-1)  # [3, B, S, D]

        def assemble(t):
            parts = t.split(self.section * 2, dim=-1)
            return torch.cat([m[i % 3] for i, m in enumerate(parts)], dim=-1).unsqueeze(1)

        cos, sin = assemble(emb.cos()), assemble(emb.sin())
        mask = torch.triu(torch.full((S, S), MIN), diagonal=1)[None, None] + padding_bias(attention_mask)
        for l in range(L):
            x = x + self.self_attn[l](self.input_layernorm[l](x), mask, cos, sin)
            x = x + self.mlp[l](self.post_attention_layernorm[l](x))
        return self.norm(x)


class GemmaRMSNorm(RMSNorm):
    """Gemma's norm: the weight is an offset from 1, applied in float32."""

    def forward(self, x):
        x32 = x.float()
        out = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (out * (1.0 + self.weight.float())).type_as(x)


GD = 16  # gemma: a head size of its own (H*GD != E)


class Gemma(Model):
    """Gemma: embeddings scaled by sqrt(hidden), multi-query attention (one K/V head) with
    head size 16 over hidden 32, Q scaled before Q·Kᵀ, rotary from the position ids,
    (1 + w) RMSNorm, GeGLU with the tanh GELU, causal Trilu mask plus padding."""

    inputs = ("input_ids", "attention_mask", "position_ids")

    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, E)
        self.input_layernorm = nn.ModuleList(GemmaRMSNorm(E) for _ in range(L))
        self.self_attn = nn.ModuleList(GQAttention(1, GD, False, True) for _ in range(L))
        self.post_attention_layernorm = nn.ModuleList(GemmaRMSNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(Gated(lambda t: F.gelu(t, approximate="tanh")) for _ in range(L))
        self.norm = GemmaRMSNorm(E)
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, GD, 2).float() / GD)), persistent=False)

    def embed(self, input_ids, attention_mask, position_ids):
        """The scaled embeddings, rotary cos and sin, and the causal mask plus padding."""
        S = input_ids.shape[1]
        x = self.embed_tokens(input_ids) * torch.tensor(E**0.5)
        cos, sin = rotary_from_positions(self.inv_freq, position_ids)
        mask = torch.triu(torch.full((S, S), MIN), diagonal=1)[None, None] + padding_bias(attention_mask)
        return x, cos, sin, mask

    def forward(self, input_ids, attention_mask, position_ids):
        x, cos, sin, mask = self.embed(input_ids, attention_mask, position_ids)
        for l in range(L):
            x = x + self.self_attn[l](self.input_layernorm[l](x), mask, cos, sin)
            x = x + self.mlp[l](self.post_attention_layernorm[l](x))
        return self.norm(x)


# ---------------------------------------------------------------- clip-text


class CLIPAttention(Attn):
    """CLIP: Q scaled after its projection; the causal mask and the padding mask added to
    the scores one after the other."""

    causal = True

    def __init__(self):
        super().__init__(H)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x, causal, padding):
        q = heads(self.q_proj(x) * D**-0.5, H)
        k, v = heads(self.k_proj(x), H), heads(self.v_proj(x), H)
        w = torch.matmul(q, k.transpose(-1, -2))
        w = w + causal
        w = w + padding
        w = F.softmax(w, dim=-1)
        return self.out_proj(merge(torch.matmul(w, v)))


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class CLIPText(Model):
    """CLIP's text tower: token and learned positions (ids sliced from a buffer), an -inf
    causal mask from Trilu, pre-LayerNorm blocks with quick-GELU, final LayerNorm."""

    def __init__(self):
        super().__init__()
        self.token_embedding, self.position_embedding = nn.Embedding(V, E), nn.Embedding(MAXPOS, E)
        self.register_buffer("position_ids", torch.arange(MAXPOS)[None], persistent=False)
        self.layer_norm1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(CLIPAttention() for _ in range(L))
        self.layer_norm2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(quick_gelu) for _ in range(L))
        self.final_layer_norm = nn.LayerNorm(E)

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.position_embedding(self.position_ids[:, :S])
        causal = torch.full((S, S), float("-inf")).triu(1)[None, None]
        padding = padding_bias(attention_mask)
        for i in range(L):
            x = x + self.attn[i](self.layer_norm1[i](x), causal, padding)
            x = x + self.mlp[i](self.layer_norm2[i](x))
        return self.final_layer_norm(x)


# ---------------------------------------------------------------- whisper-encoder


MEL = 8


class WhisperAttention(Attn):
    """Whisper: Q scaled after its projection, K without a bias, no mask."""

    def __init__(self):
        super().__init__(H)
        self.q_proj, self.v_proj, self.out_proj = nn.Linear(E, E), nn.Linear(E, E), nn.Linear(E, E)
        self.k_proj = nn.Linear(E, E, bias=False)

    def forward(self, x):
        q = heads(self.q_proj(x) * D**-0.5, H)
        k, v = heads(self.k_proj(x), H), heads(self.v_proj(x), H)
        w = F.softmax(torch.matmul(q, k.transpose(2, 3)), dim=-1)
        return self.out_proj(merge(torch.matmul(w, v)))


class WhisperEncoder(Model):
    """Whisper's audio encoder: two Conv1d with GELU (the second halves the frames),
    channel-last, constant sinusoidal positions sliced to the length, pre-LayerNorm
    blocks, final LayerNorm."""

    inputs = ("input_features",)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(MEL, E, 3, padding=1)
        self.conv2 = nn.Conv1d(E, E, 3, stride=2, padding=1)
        pos = torch.arange(MAXPOS).float()[:, None] * torch.exp(-math.log(10000) * torch.arange(E // 2).float() / (E // 2 - 1))[None]
        self.register_buffer("embed_positions", torch.cat((pos.sin(), pos.cos()), dim=1), persistent=False)
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(WhisperAttention() for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(F.gelu) for _ in range(L))
        self.layer_norm = nn.LayerNorm(E)

    def forward(self, input_features):
        x = F.gelu(self.conv2(F.gelu(self.conv1(input_features)))).permute(0, 2, 1)
        x = x + self.embed_positions[: x.shape[1]]
        for i in range(L):
            x = x + self.attn[i](self.ln1[i](x))
            x = x + self.mlp[i](self.ln2[i](x))
        return self.layer_norm(x)


# ---------------------------------------------------------------- beit


BW = 4  # beit: a 4x4 grid of patches and a class token


def beit_relative_index(ws):
    """[N+1, N+1] index into the (2ws-1)^2 + 3 table: patch pairs by relative offset, then
    class-to-patch, patch-to-class and class-to-class."""
    n = (2 * ws - 1) ** 2
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    idx = torch.zeros(ws * ws + 1, ws * ws + 1, dtype=torch.long)
    idx[1:, 1:] = rel[..., 0] * (2 * ws - 1) + rel[..., 1]
    idx[0, 0:] = n
    idx[0:, 0] = n + 1
    idx[0, 0] = n + 2
    return idx


class BeitAttention(Attn):
    """BEiT: packed QKV without a K bias (the bias is q_bias, zeros, v_bias), Q scaled, a
    relative position bias shared by the layers added to the scores."""

    def __init__(self):
        super().__init__(H)
        self.qkv = nn.Linear(E, 3 * E, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(E)), nn.Parameter(torch.zeros(E))
        self.proj = nn.Linear(E, E)

    def forward(self, x, rel_bias):
        B, N, C = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(B, N, 3, H, C // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * D**-0.5, qkv[1], qkv[2]
        w = (q @ k.transpose(-2, -1) + rel_bias).softmax(dim=-1)
        return self.proj((w @ v).transpose(1, 2).reshape(B, N, C))


class Beit(Model):
    """BEiT: patch Conv, class token, no absolute positions; a relative position bias from
    one table gathered by constant indices, computed once; layer scale on both residual
    branches; final LayerNorm."""

    inputs = ("pixel_values",)

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, E, kernel_size=4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E))
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * BW - 1) ** 2 + 3, H))
        self.register_buffer("relative_position_index", beit_relative_index(BW), persistent=False)
        self.norm1 = nn.ModuleList(nn.LayerNorm(E, eps=1e-6) for _ in range(L))
        self.attn = nn.ModuleList(BeitAttention() for _ in range(L))
        self.gamma1 = nn.ParameterList(nn.Parameter(torch.ones(E)) for _ in range(L))
        self.norm2 = nn.ModuleList(nn.LayerNorm(E, eps=1e-6) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(nn.GELU()) for _ in range(L))
        self.gamma2 = nn.ParameterList(nn.Parameter(torch.ones(E)) for _ in range(L))
        self.norm = nn.LayerNorm(E, eps=1e-6)

    def forward(self, pixel_values):
        B = pixel_values.shape[0]
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        n = BW * BW + 1
        rel = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        rel = rel.permute(2, 0, 1).contiguous().unsqueeze(0)  # [1,H,N,N]
        for i in range(L):
            x = x + self.gamma1[i] * self.attn[i](self.norm1[i](x), rel)
            x = x + self.gamma2[i] * self.mlp[i](self.norm2[i](x))
        return self.norm(x)


# ---------------------------------------------------------------- gpt-bigcode


class BigCodeAttention(Attn):
    """GPT-BigCode (StarCoder) multi-query attention: one projection split by sizes into Q
    [E] and one K and V head [D each]; the heads folded into the query rows ([B, S·H, D]),
    so one bmm against Kᵀ [B, D, S] scores every head; the scores viewed [B, S, H, S] for a
    [B, S, 1, S] boolean causal-and-padding mask applied by Where."""

    causal = True

    def __init__(self):
        super().__init__(H, 1)
        self.c_attn, self.c_proj = nn.Linear(E, E + 2 * D), nn.Linear(E, E)

    def forward(self, x, mask):
        B, S, _ = x.shape
        q, kv = self.c_attn(x).split((E, 2 * D), dim=2)
        k, v = kv.split((D, D), dim=-1)
        w = torch.bmm(q.reshape(B, S * H, D), k.transpose(1, 2)) * D**-0.5
        w = torch.where(mask, w.view(B, S, H, S), torch.tensor(MIN))
        w = F.softmax(w, dim=-1).view(B, S * H, S)
        return self.c_proj(torch.bmm(w, v).view(B, S, E))


class BigCode(Model):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, E), nn.Embedding(MAXPOS, E)
        self.register_buffer("bias", torch.tril(torch.ones(MAXPOS, MAXPOS, dtype=torch.bool)), persistent=False)
        self.ln_1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(BigCodeAttention() for _ in range(L))
        self.ln_2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(lambda t: F.gelu(t, approximate="tanh")) for _ in range(L))
        self.ln_f = nn.LayerNorm(E)

    def forward(self, input_ids, attention_mask):
        B, S = input_ids.shape
        x = self.wte(input_ids) + self.wpe(torch.arange(S)[None])
        mask = self.bias[None, :S, :S] * attention_mask.view(B, 1, -1).to(torch.bool)
        mask = mask.unsqueeze(2)  # [B, S, 1, S]
        for i in range(L):
            x = x + self.attn[i](self.ln_1[i](x), mask)
            x = x + self.mlp[i](self.ln_2[i](x))
        return self.ln_f(x)


# ---------------------------------------------------------------- gpt-neo


class GPTNeoAttention(Attn):
    """GPT-Neo: no scale on the scores, computed in float32; a boolean causal buffer (local
    layers: only the last `window` keys) sliced to S and applied by Where, then the padding
    added."""

    causal = True

    def __init__(self, window):
        super().__init__(H)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(E, E, bias=False) for _ in range(3))
        self.out_proj = nn.Linear(E, E)
        bias = torch.tril(torch.ones(MAXPOS, MAXPOS, dtype=torch.bool))
        if window:
            bias = torch.bitwise_xor(bias, torch.tril(bias, -window))
        self.register_buffer("bias", bias.view(1, 1, MAXPOS, MAXPOS), persistent=False)

    def forward(self, x, pad):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), H), heads(self.v_proj(x), H)
        w = torch.matmul(q.to(torch.float32), k.to(torch.float32).transpose(-1, -2))
        S = q.size(-2)
        w = torch.where(self.bias[:, :, S - S : S, :S], w, torch.tensor(MIN))
        w = F.softmax(w + pad, dim=-1).to(v.dtype)
        return self.out_proj(merge(torch.matmul(w, v)))


class GPTNeo(Model):
    """GPT-Neo: global and local (window 4) attention layers alternating; learned
    positions; pre-LN; gelu_new MLP; final LN."""

    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, E), nn.Embedding(MAXPOS, E)
        self.ln_1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(GPTNeoAttention(4 if i % 2 else 0) for i in range(L))
        self.ln_2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(gelu_new) for _ in range(L))
        self.ln_f = nn.LayerNorm(E)

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        x = self.wte(input_ids) + self.wpe(torch.arange(S)[None])
        pad = padding_bias(attention_mask)
        for i in range(L):
            x = x + self.attn[i](self.ln_1[i](x), pad)
            x = x + self.mlp[i](self.ln_2[i](x))
        return self.ln_f(x)


# ---------------------------------------------------------------- segformer


class SegformerAttention(Attn):
    """Efficient self-attention: K and V from the tokens reduced by a strided Conv (the
    sequence viewed as its [C, h, w] grid) and a LayerNorm; Q from all tokens."""

    def __init__(self, sr):
        super().__init__(H)
        self.query, self.key, self.value, self.dense = (nn.Linear(E, E) for _ in range(4))
        self.sr, self.norm = nn.Conv2d(E, E, sr, stride=sr), nn.LayerNorm(E)

    def forward(self, x, h, w):
        B, N, C = x.shape
        r = self.sr(x.permute(0, 2, 1).reshape(B, C, h, w)).reshape(B, C, -1).permute(0, 2, 1)
        r = self.norm(r)
        q, k, v = heads(self.query(x), H), heads(self.key(r), H), heads(self.value(r), H)
        a = F.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D), dim=-1)
        return self.dense(merge(torch.matmul(a, v)))


class MixFFN(nn.Module):
    """fc1, a depthwise 3×3 Conv over the token grid, GELU, fc2 (not a plain FFN: the
    activation does not read a projection)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(E, FF), nn.Linear(FF, E)
        self.dw = nn.Conv2d(FF, FF, 3, padding=1, groups=FF)

    def forward(self, x, h, w):
        B, N, _ = x.shape
        y = self.fc1(x).transpose(1, 2).reshape(B, FF, h, w)
        y = self.dw(y).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(y))


class Segformer(Model):
    """Segformer (MiT) stage: an overlapping patch Conv (7×7, stride 4) and LayerNorm; blocks
    of efficient self-attention (reduction 2) and Mix-FFN, pre-LN; final LN."""

    inputs = ("pixel_values",)

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, E, 7, stride=4, padding=3)
        self.patch_norm = nn.LayerNorm(E)
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(SegformerAttention(2) for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.ffn = nn.ModuleList(MixFFN() for _ in range(L))
        self.norm = nn.LayerNorm(E)

    def forward(self, pixel_values):
        x = self.patch(pixel_values)
        h, w = x.shape[2], x.shape[3]
        x = self.patch_norm(x.flatten(2).transpose(1, 2))
        for i in range(L):
            x = x + self.attn[i](self.ln1[i](x), h, w)
            x = x + self.ffn[i](self.ln2[i](x), h, w)
        return self.norm(x)


# ---------------------------------------------------------------- wav2vec2


class Wav2Vec2(Model):
    """wav2vec2-base: a Conv1d feature extractor (GroupNorm per channel after the first,
    GELU), a feature LayerNorm and projection, a grouped positional Conv1d whose last frame
    is dropped, GELU, added; the encoder LayerNorm; post-LN blocks (LayerNorm after each
    residual); no mask."""

    inputs = ("input_values",)

    def __init__(self):
        super().__init__()
        self.conv0, self.gn = nn.Conv1d(1, E, 10, stride=5, bias=False), nn.GroupNorm(E, E)
        self.conv1 = nn.Conv1d(E, E, 3, stride=2, bias=False)
        self.feature_ln, self.projection = nn.LayerNorm(E), nn.Linear(E, E)
        self.pos_conv = nn.Conv1d(E, E, 4, padding=2, groups=4)
        self.encoder_ln = nn.LayerNorm(E)
        self.attn = nn.ModuleList(ViTAttention() for _ in range(L))
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(F.gelu) for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))

    def forward(self, input_values):
        x = F.gelu(self.gn(self.conv0(input_values[:, None])))
        x = F.gelu(self.conv1(x)).transpose(1, 2)
        x = self.projection(self.feature_ln(x))
        p = F.gelu(self.pos_conv(x.transpose(1, 2))[:, :, :-1]).transpose(1, 2)
        x = self.encoder_ln(x + p)
        for i in range(L):
            x = self.ln1[i](x + self.attn[i](x))
            x = self.ln2[i](x + self.mlp[i](x))
        return x


# ---------------------------------------------------------------- torch-encoder


class TorchEncoderLayer(Attn):
    """Marks nn.TransformerEncoderLayer's attention (nn.MultiheadAttention inside)."""


class TorchEncoder(Model):
    """nn.TransformerEncoder of nn.TransformerEncoderLayer as users write it: sequence-first
    [S, B, E] (batch_first=False), nn.MultiheadAttention with its packed in_proj, a key
    padding mask, post-LN, ReLU FFN; the input transposed from [B, S] embeddings."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        layer = nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=False)
        self.encoder = nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
        # The manifest counts attention and FFN modules by marker classes.
        self.marks = nn.ModuleList(TorchEncoderLayer(H) for _ in range(L))
        self.ffn_marks = nn.ModuleList(FFN() for _ in range(L))

    def forward(self, input_ids, attention_mask):
        x = self.embed(input_ids).transpose(0, 1)  # [S, B, E]
        y = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        return y.transpose(0, 1)


def sine_positions_2d():
    """DETR's fixed 2-D sine position embedding of a 4x4 grid: [HW, E], sin and cos of the
    row, then of the column, over E/4 frequencies each."""
    y, x = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    f = 10000 ** (torch.arange(E // 4) / (E // 4))
    return torch.cat([torch.sin(y.flatten()[:, None] / f), torch.cos(y.flatten()[:, None] / f),
                      torch.sin(x.flatten()[:, None] / f), torch.cos(x.flatten()[:, None] / f)], dim=1)


class DetrLayer(Attn):
    """DETR's encoder layer: Q and K read the features plus the position embedding, V the
    features alone; nn.MultiheadAttention (sequence-first), post-LN, ReLU FFN."""

    def __init__(self):
        super().__init__(H)
        self.self_attn = nn.MultiheadAttention(E, H, dropout=0.0)
        self.linear1, self.linear2 = nn.Linear(E, FF), nn.Linear(FF, E)
        self.norm1, self.norm2 = nn.LayerNorm(E), nn.LayerNorm(E)
        self.ffn_mark = FFN()

    def forward(self, src, pos, pad):
        q = k = src + pos
        src = self.norm1(src + self.self_attn(q, k, value=src, key_padding_mask=pad, need_weights=False)[0])
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class Detr(Model):
    """DETR's transformer encoder over a 4x4 feature map from a strided Conv: tokens
    sequence-first [HW, B, E], a fixed 2-D sine position embedding added to Q and K in
    every layer, a padding mask over the pixels."""

    inputs = ("pixel_values", "pixel_mask")

    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, E, kernel_size=4, stride=4)
        self.layers = nn.ModuleList(DetrLayer() for _ in range(L))
        pe = sine_positions_2d()
        self.register_buffer("pos", pe[:, None, :], persistent=False)  # [HW, 1, E]

    def forward(self, pixel_values, pixel_mask):
        x = self.backbone(pixel_values).flatten(2).permute(2, 0, 1)  # [HW, B, E]
        pad = F.max_pool2d(pixel_mask[:, None].float(), 4).flatten(1) == 0  # [B, HW]
        for layer in self.layers:
            x = layer(x, self.pos, pad)
        return x.transpose(0, 1)


# ---------------------------------------------------------------- phi3


class Phi3Attention(Attn):
    """Phi-3: Q, K and V from one projection sliced by sizes (H·D, KV·D, KV·D), GQA,
    rotate-half rotary."""

    causal = True
    rotaries = 2

    def __init__(self):
        super().__init__(H, 2)
        self.qkv_proj = nn.Linear(E, (H + 2 * 2) * D, bias=False)
        self.o_proj = nn.Linear(H * D, E, bias=False)

    def forward(self, x, mask, cos, sin):
        qkv = self.qkv_proj(x)
        q = qkv[..., : H * D]
        k = qkv[..., H * D : (H + 2) * D]
        v = qkv[..., (H + 2) * D :]
        q, k, v = heads(q, H), heads(k, 2), heads(v, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // 2), repeat_kv(v, H // 2)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(v.dtype)
        return self.o_proj(merge(torch.matmul(w, v)))


class PackedGated(Gated):
    """Phi-3's MLP: gate and up from one projection, chunked in two; down(up · silu(gate))."""

    def __init__(self):
        super().__init__(F.silu)
        del self.gate, self.up
        self.gate_up_proj = nn.Linear(E, 2 * FF, bias=False)

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down(up * self.act(gate))


class Phi3(Model):
    """Phi-3: packed QKV sliced by sizes with GQA, packed gate/up SwiGLU, RMSNorm, rotary
    from a cos/sin table gathered at the position ids, causal Trilu + padding mask."""

    inputs = ("input_ids", "attention_mask", "position_ids")

    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, E)
        self.input_layernorm = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.self_attn = nn.ModuleList(Phi3Attention() for _ in range(L))
        self.post_attention_layernorm = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(PackedGated() for _ in range(L))
        self.norm = RMSNorm(E)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
        emb = torch.outer(torch.arange(MAXPOS).float(), inv_freq).repeat(1, 2)
        self.register_buffer("cos_cached", emb.cos(), persistent=False)
        self.register_buffer("sin_cached", emb.sin(), persistent=False)

    def forward(self, input_ids, attention_mask, position_ids):
        S = input_ids.shape[1]
        x = self.embed_tokens(input_ids)
        cos, sin = self.cos_cached[position_ids].unsqueeze(1), self.sin_cached[position_ids].unsqueeze(1)
        mask = torch.triu(torch.full((S, S), MIN), diagonal=1)[None, None] + padding_bias(attention_mask)
        for i in range(L):
            x = x + self.self_attn[i](self.input_layernorm[i](x), mask, cos, sin)
            x = x + self.mlp[i](self.post_attention_layernorm[i](x))
        return self.norm(x)


# ---------------------------------------------------------------- gpt2-merged


class GPT2Merged(GPT2):
    """GPT-2 as a merged decoder (Optimum's decoder_model_merged): the whole model in both
    branches of an If on a use_cache_branch input, the weights shared in the main graph."""

    inputs = ("input_ids", "attention_mask", "use_cache_branch")


def wrap_in_if(path):
    """Moves the exported graph into both branches of an If on a boolean scalar input
    (names prefixed per branch), keeping the initializers in the main graph."""
    m = onnx.load(path)
    g = m.graph
    outer = {i.name for i in g.input} | {t.name for t in g.initializer}

    def branch(prefix):
        b = onnx.helper.make_graph([], prefix, [], [])
        rename = {}
        for n in g.node:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.name = prefix + "/" + n.name
            del c.input[:]
            c.input.extend(rename.get(x, x) if x not in outer else x for x in n.input)
            del c.output[:]
            for o in n.output:
                rename[o] = prefix + "/" + o if o else o
                c.output.append(rename[o])
            b.node.append(c)
        for o in g.output:
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(o)
            vi.name = rename[o.name]
            b.output.append(vi)
        return b

    cond = onnx.helper.make_tensor_value_info("use_cache_branch", onnx.TensorProto.BOOL, [])
    node = onnx.helper.make_node("If", ["use_cache_branch"], [o.name for o in g.output], name="optimum::if",
                                 then_branch=branch("then"), else_branch=branch("else"))
    main = onnx.helper.make_graph([node], g.name, list(g.input) + [cond], list(g.output), list(g.initializer))
    m.graph.CopyFrom(main)
    onnx.save(m, path)


# ---------------------------------------------------------------- torchvision-vit


class TVAttention(Attn):
    """nn.MultiheadAttention (batch_first=True) as torchvision's ViT calls it: packed
    in_proj, the batch-first input transposed to sequence-first inside, no weights."""

    def __init__(self):
        super().__init__(H)
        self.mha = nn.MultiheadAttention(E, H, dropout=0.0, batch_first=True)

    def forward(self, x):
        # nn.MultiheadAttention's general path (torch 1.13's fused fast path for
        # batch_first inference does not export): sequence-first inside.
        q = x.transpose(0, 1)
        m = self.mha
        y, _ = F.multi_head_attention_forward(q, q, q, E, H, m.in_proj_weight, m.in_proj_bias, None, None, False, 0.0,
                                              m.out_proj.weight, m.out_proj.bias, training=False, need_weights=False)
        return y.transpose(0, 1)


class TorchvisionViT(Model):
    """torchvision's vit_b_16 at small size: conv_proj patches, a class token concatenated,
    learned positions added, pre-LN blocks with nn.MultiheadAttention and a GELU MLP,
    final LN."""

    inputs = ("pixel_values",)

    def __init__(self):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, E, kernel_size=4, stride=4)
        self.class_token = nn.Parameter(torch.zeros(1, 1, E))
        self.pos_embedding = nn.Parameter(torch.zeros(1, 17, E))
        self.ln_1 = nn.ModuleList(nn.LayerNorm(E, eps=1e-6) for _ in range(L))
        self.attn = nn.ModuleList(TVAttention() for _ in range(L))
        self.ln_2 = nn.ModuleList(nn.LayerNorm(E, eps=1e-6) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(nn.GELU()) for _ in range(L))
        self.ln = nn.LayerNorm(E, eps=1e-6)

    def forward(self, pixel_values):
        B = pixel_values.shape[0]
        x = self.conv_proj(pixel_values).reshape(B, E, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(B, -1, -1), x], dim=1) + self.pos_embedding
        for i in range(L):
            x = x + self.attn[i](self.ln_1[i](x))
            x = x + self.mlp[i](self.ln_2[i](x))
        return self.ln(x)


# ---------------------------------------------------------------- llama-hf


class HFLlamaAttention(LlamaAttention):
    """LLaMA attention as transformers 4.4x writes it: the 4-D mask sliced to the keys'
    length before it is added."""

    def forward(self, x, mask, cos, sin):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), self.kv_heads), heads(self.v_proj(x), self.kv_heads)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // self.kv_heads), repeat_kv(v, H // self.kv_heads)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D)
        w = w + mask[:, :, :, : k.shape[-2]]
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(merge(torch.matmul(w, v)))


class LlamaHF(Model):
    """LLaMA as transformers 4.4x builds its inputs: cache_position = arange(S), the causal
    mask from full(min) · triu(1) · (arange > cache_position), expanded to the batch, the
    padding merged by masked_fill where causal + padding == 0; rotary from
    inv_freq ⊗ position ids by a batched matmul; GQA; RMSNorm; SwiGLU."""

    inputs = ("input_ids", "attention_mask", "position_ids")

    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, E)
        self.input_layernorm = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.self_attn = nn.ModuleList(HFLlamaAttention() for _ in range(L))
        self.post_attention_layernorm = nn.ModuleList(RMSNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(Gated(F.silu) for _ in range(L))
        self.norm = RMSNorm(E)
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D)), persistent=False)

    def forward(self, input_ids, attention_mask, position_ids):
        B, S = input_ids.shape
        x = self.embed_tokens(input_ids)
        cache_position = torch.arange(0, S)
        cos, sin = rotary_from_positions(self.inv_freq, position_ids)
        T = attention_mask.shape[-1]
        causal = torch.full((S, T), MIN)
        causal = torch.triu(causal, diagonal=1)
        causal = causal * (torch.arange(T) > cache_position.reshape(-1, 1))
        causal = causal[None, None, :, :].expand(B, 1, -1, -1).clone()
        padding = causal[:, :, :, :T] + attention_mask[:, None, None, :]
        causal[:, :, :, :T] = causal[:, :, :, :T].masked_fill(padding == 0, MIN)
        for i in range(L):
            x = x + self.self_attn[i](self.input_layernorm[i](x), causal, cos, sin)
            x = x + self.mlp[i](self.post_attention_layernorm[i](x))
        return self.norm(x)

# Opsets 9 and 10 are the legacy exports (the ONNX model zoo's RoBERTa at 9, GPT-2 at 10): no
# Range (arange is NonZero of ConstantOfShape), Slice with attributes before 10, Clip and Pad
# with attributes; forms whose modules need CumSum, Trilu, Min on integers or (at 9) a Slice of
# dynamic bounds are exported at 13 and 17 only.
def static(ctor):
    """The form exported with every dim fixed at the traced shape."""
    def make():
        m = ctor()
        m.static = True
        return m
    return make


def any_image(ctor):
    """The form exported as vision exporters do by default: pixel_values with a dynamic
    height and width (the reference run keeps the traced 16x16, which the fixed position
    embeddings need)."""
    def make():
        m = ctor()
        m.any_image = True
        return m
    return make


def name_outputs(path, names):
    """The function export ignores output_names: name the graph outputs as the manifest does."""
    m = onnx.load(path)
    for out, new in zip(m.graph.output, names):
        old = out.name
        for n in m.graph.node:
            n.output[:] = [new if o == old else o for o in n.output]
            n.input[:] = [new if i == old else i for i in n.input]
        out.name = new
    onnx.save(m, path)


def as_functions(ctor):
    """The form exported with every module a local function (export_modules_as_functions):
    the graph is one call, the blocks inside function bodies."""
    def make():
        m = ctor()
        m.as_functions = True
        return m
    return make



# ---------------------------------------------------------------- more zoo forms


class Mistral(Llama):
    """Mistral: LLaMA's blocks with a sliding-window causal mask (a query sees the WINDOW
    latest keys: banned where j > i or j <= i - WINDOW, from Range comparisons), combined with
    the padding mask."""

    WINDOW = 4

    def forward(self, input_ids, attention_mask, position_ids):
        B, S = input_ids.shape
        x = self.embed_tokens(input_ids)
        cos = self.cos_cached[:S][position_ids].unsqueeze(1)
        sin = self.sin_cached[:S][position_ids].unsqueeze(1)
        i = torch.arange(S)[:, None]
        j = torch.arange(S)[None, :]
        banned = (j > i) | (j <= i - self.WINDOW)
        window = torch.zeros(S, S).masked_fill(banned, MIN)
        mask = window[None, None, :, :] + padding_bias(attention_mask)
        for i in range(L):
            x = x + self.self_attn[i](self.input_layernorm[i](x), mask, cos, sin)
            x = x + self.mlp[i](self.post_attention_layernorm[i](x))
        return self.norm(x)


class Qwen3Attention(GQAttention):
    """Qwen3 / OLMo2 / Gemma3: an RMSNorm over the head size applied to every Q and K head
    (weights of size D) between the projection and the rotary; GQA, no Q/K/V biases."""

    def __init__(self):
        super().__init__(2, D, False, False)
        self.q_norm, self.k_norm = RMSNorm(D), RMSNorm(D)

    def forward(self, x, mask, cos, sin):
        B, S, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, S, H, D)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(B, S, self.kv_heads, D)).transpose(1, 2)
        v = heads(self.v_proj(x), self.kv_heads)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // self.kv_heads), repeat_kv(v, H // self.kv_heads)
        w = torch.matmul(q, k.transpose(2, 3)) * D**-0.5 + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(merge(torch.matmul(w, v)))


class Qwen3(Llama):
    """Qwen3: LLaMA's blocks with QK-norm (Qwen3Attention), a Trilu causal mask plus padding."""

    def __init__(self):
        super().__init__()
        self.self_attn = nn.ModuleList(Qwen3Attention() for _ in range(L))


class Gemma2Attention(GQAttention):
    """Gemma 2: the scores scaled, then soft-capped (cap * tanh(scores / cap)) before the
    mask; two K/V heads."""

    CAP = 5.0

    def __init__(self):
        super().__init__(2, GD, False, False)

    def forward(self, x, mask, cos, sin):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), self.kv_heads), heads(self.v_proj(x), self.kv_heads)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // self.kv_heads), repeat_kv(v, H // self.kv_heads)
        w = torch.matmul(q, k.transpose(2, 3)) * self.d**-0.5
        w = torch.tanh(w / self.CAP) * self.CAP + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(merge(torch.matmul(w, v)))


class Gemma2(Gemma):
    """Gemma 2: (1 + w) RMSNorms before and after both the attention and the FFN (sandwich
    norms), soft-capped scores, GeGLU."""

    def __init__(self):
        super().__init__()
        self.self_attn = nn.ModuleList(Gemma2Attention() for _ in range(L))
        self.pre_ffn_norm = nn.ModuleList(GemmaRMSNorm(E) for _ in range(L))
        self.post_ffn_norm = nn.ModuleList(GemmaRMSNorm(E) for _ in range(L))

    def forward(self, input_ids, attention_mask, position_ids):
        x, cos, sin, mask = self.embed(input_ids, attention_mask, position_ids)
        for l in range(L):
            x = x + self.post_attention_layernorm[l](self.self_attn[l](self.input_layernorm[l](x), mask, cos, sin))
            x = x + self.post_ffn_norm[l](self.mlp[l](self.pre_ffn_norm[l](x)))
        return self.norm(x)


def pre_norm_blocks(m, attn, act):
    """Gives m L pre-LayerNorm encoder blocks: ln1, attn (attn()), ln2, mlp (an MLP with
    act); run them with run_pre_norm_blocks."""
    m.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
    m.attn = nn.ModuleList(attn() for _ in range(L))
    m.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
    m.mlp = nn.ModuleList(MLP(act) for _ in range(L))


def run_pre_norm_blocks(m, x, *args):
    """x + attn(ln1(x), *args), then x + mlp(ln2(x)), for each of m's blocks."""
    for i in range(L):
        x = x + m.attn[i](m.ln1[i](x), *args)
        x = x + m.mlp[i](m.ln2[i](x))
    return x


class ESMAttention(Attn):
    """ESM-2: Q scaled by 1/sqrt(D) right after the head split, then the rotate-half rotary
    on Q and K (the scale moves through it: the rotary is linear)."""

    rotaries = 2

    def __init__(self):
        super().__init__(H)
        self.query, self.key, self.value, self.dense = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x, mask, cos, sin):
        q = heads(self.query(x), H) * D**-0.5
        k, v = heads(self.key(x), H), heads(self.value(x), H)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        w = torch.matmul(q, k.transpose(-1, -2)) + mask
        return self.dense(merge(torch.matmul(F.softmax(w, dim=-1), v)))


class ESM(Model):
    """ESM-2: token embeddings (no positions: rotary), pre-LayerNorm blocks, GELU (erf) MLP,
    a final LayerNorm; padding mask."""

    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(V, E)
        pre_norm_blocks(self, ESMAttention, nn.GELU())
        self.emb_layer_norm_after = nn.LayerNorm(E)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        x = self.word_embeddings(input_ids)
        t = torch.arange(S).float()
        freqs = torch.outer(t, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        x = run_pre_norm_blocks(self, x, padding_bias(attention_mask), cos, sin)
        return self.emb_layer_norm_after(x)


class MAPHead(Attn):
    """SigLIP's attention pooling: a learned probe token, repeated over the batch, attends
    to the patches through torch's nn.MultiheadAttention (packed in_proj, batch_first)."""

    kind = "cross"

    def __init__(self):
        super().__init__(H)
        self.probe = nn.Parameter(torch.zeros(1, 1, E))
        self.attention = nn.MultiheadAttention(E, H, batch_first=True)

    def forward(self, x):
        probe = self.probe.repeat(x.shape[0], 1, 1)
        return self.attention(probe, x, x, need_weights=False)[0]


class SigLIPAttention(ViTAttention):
    """ViT's attention with the scale multiplied and the softmax taken in float32."""

    def forward(self, x):
        q, k, v = heads(self.query(x), H), heads(self.key(x), H), heads(self.value(x), H)
        w = F.softmax(torch.matmul(q, k.transpose(2, 3)) * D**-0.5, dim=-1, dtype=torch.float32)
        return self.dense(merge(torch.matmul(w, v)))


class SigLIP(Model):
    """SigLIP's vision tower: patches without a class token plus learned positions,
    pre-LayerNorm blocks with the tanh GELU, a final LayerNorm, then the MAP head
    (probe attention, LayerNorm, MLP residual) pooling to one vector."""

    inputs = ("pixel_values",)
    outputs = ("pooler_output",)

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, E, kernel_size=4, stride=4)
        self.position_embedding = nn.Parameter(torch.zeros(1, 16, E))
        pre_norm_blocks(self, SigLIPAttention, nn.GELU(approximate="tanh"))
        self.post_layernorm = nn.LayerNorm(E)
        self.head = MAPHead()
        self.head_ln = nn.LayerNorm(E)
        self.head_mlp = MLP(nn.GELU(approximate="tanh"))

    def forward(self, pixel_values):
        x = self.patch(pixel_values).flatten(2).transpose(1, 2) + self.position_embedding
        x = self.post_layernorm(run_pre_norm_blocks(self, x))
        h = self.head(x)
        h = h + self.head_mlp(self.head_ln(h))
        return h[:, 0]


def layoutlm_bucket(rel, num_buckets=32, max_distance=128):
    """LayoutLMv3's relative position bucket (bidirectional, log-spaced beyond num_buckets/4)."""
    return t5_bucket(rel, num_buckets, max_distance)


class LayoutLMv3Attention(Attn):
    """LayoutLMv3: Q scaled before Q·Kᵀ, a relative-position bias divided by sqrt(D), the
    padding filled with the lowest float, and the PB-Relax softmax: scores/α minus their
    row maximum, times α (softmax is unchanged by a per-row constant)."""

    ALPHA = 32.0

    def __init__(self):
        super().__init__(H)
        self.query, self.key, self.value, self.dense = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x, rel_pos, banned):
        q, k, v = heads(self.query(x), H), heads(self.key(x), H), heads(self.value(x), H)
        scores = torch.matmul(q / math.sqrt(D), k.transpose(-1, -2))
        scores = scores + rel_pos / math.sqrt(D)
        scores = scores.float().masked_fill(banned, MIN)
        scaled = scores / self.ALPHA
        scores = (scaled - scaled.amax(dim=-1).unsqueeze(-1)) * self.ALPHA
        w = F.softmax(scores, dim=-1)
        return self.dense(merge(torch.matmul(w, v)))


class LayoutLMv3(Model):
    """LayoutLMv3's text side: word + position embeddings, LayerNorm, post-LayerNorm BERT
    blocks with a shared relative-position bias (bucketed, a learned [buckets, H] table
    gathered by constant indices) and the PB-Relax softmax."""

    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(V, E)
        self.position_embeddings = nn.Embedding(MAXPOS, E)
        self.emb_ln = nn.LayerNorm(E)
        self.rel_pos_bias = nn.Linear(32, H, bias=False)
        self.attn = nn.ModuleList(LayoutLMv3Attention() for _ in range(L))
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(nn.GELU()) for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        pos = torch.arange(S)
        x = self.emb_ln(self.word_embeddings(input_ids) + self.position_embeddings(pos)[None])
        rel = pos[None, :] - pos[:, None]
        onehot = F.one_hot(layoutlm_bucket(rel), num_classes=32).float()
        rel_pos = self.rel_pos_bias(onehot).permute(2, 0, 1)[None]  # [1, H, S, S]
        banned = (attention_mask == 0)[:, None, None, :]
        for i in range(L):
            x = self.ln1[i](x + self.attn[i](x, rel_pos, banned))
            x = self.ln2[i](x + self.mlp[i](x))
        return x


class DINOv2(Model):
    """DINOv2 as exported for any image size: class and register tokens, position
    embeddings bicubically resized to the patch grid the input has (sizes read off its
    shape), pre-LayerNorm blocks with layer scale (x + γ·f(x)), GELU MLP, final LayerNorm."""

    inputs = ("pixel_values",)
    GRID, REGS = 4, 2  # trained on a 4x4 patch grid; 2 register tokens

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, E, kernel_size=4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E))
        self.register_tokens = nn.Parameter(torch.zeros(1, self.REGS, E))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 1 + self.GRID * self.GRID, E))
        self.norm1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(SigLIPAttention() for _ in range(L))
        self.ls1 = nn.ParameterList(nn.Parameter(torch.ones(E)) for _ in range(L))
        self.norm2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(nn.GELU()) for _ in range(L))
        self.ls2 = nn.ParameterList(nn.Parameter(torch.ones(E)) for _ in range(L))
        self.layernorm = nn.LayerNorm(E)

    def forward(self, pixel_values):
        B, _, Hh, Ww = pixel_values.shape
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        cls_pos, patch_pos = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
        grid = patch_pos.reshape(1, self.GRID, self.GRID, E).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(Hh // 4, Ww // 4), mode="bicubic", align_corners=False)
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, -1, E)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1) + torch.cat((cls_pos, patch_pos), dim=1)
        x = torch.cat((x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]), dim=1)
        for i in range(L):
            x = x + self.ls1[i] * self.attn[i](self.norm1[i](x))
            x = x + self.ls2[i] * self.mlp[i](self.norm2[i](x))
        return self.layernorm(x)


class OLMoAttention(GQAttention):
    """OLMo: Q, K and V from one packed projection split in three, clipped to ±CLIP
    (clip_qkv), no biases; rotary; causal."""

    CLIP = 2.0

    def __init__(self):
        super().__init__(H, D, False, False)
        self.att_proj = nn.Linear(E, 3 * E, bias=False)

    def forward(self, x, mask, cos, sin):
        qkv = self.att_proj(x).clamp(min=-self.CLIP, max=self.CLIP)
        q, k, v = qkv.split(E, dim=-1)
        q, k, v = heads(q, H), heads(k, H), heads(v, H)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + mask
        return self.o_proj(merge(torch.matmul(F.softmax(w, dim=-1), v)))


class NonParametricLN(nn.LayerNorm):
    """OLMo's LayerNorm without weight or bias."""

    def __init__(self, n):
        super().__init__(n, elementwise_affine=False)


class OLMo(Llama):
    """OLMo: LLaMA's layout with non-parametric LayerNorms (no weight, no bias), the
    clipped packed QKV projection (OLMoAttention), SwiGLU, a final non-parametric norm."""

    def __init__(self):
        super().__init__()
        self.input_layernorm = nn.ModuleList(NonParametricLN(E) for _ in range(L))
        self.self_attn = nn.ModuleList(OLMoAttention() for _ in range(L))
        self.post_attention_layernorm = nn.ModuleList(NonParametricLN(E) for _ in range(L))
        self.norm = NonParametricLN(E)


class GraniteAttention(LlamaAttention):
    """LLaMA's attention with Granite's own scale (attention_multiplier) for Q·Kᵀ."""

    ATT = 0.05

    def forward(self, x, mask, cos, sin):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), self.kv_heads), heads(self.v_proj(x), self.kv_heads)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // self.kv_heads), repeat_kv(v, H // self.kv_heads)
        w = torch.matmul(q, k.transpose(2, 3)) * self.ATT + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(merge(torch.matmul(w, v)))


class Granite(Llama):
    """Granite: LLaMA's blocks with the µP multipliers: embeddings times 12, an attention
    scale of its own (not 1/sqrt(D)), each residual branch times 0.22."""

    EMB, RES = 12.0, 0.22

    def __init__(self):
        super().__init__()
        self.self_attn = nn.ModuleList(GraniteAttention() for _ in range(L))

    def forward(self, input_ids, attention_mask, position_ids):
        B, S = input_ids.shape
        x = self.embed_tokens(input_ids) * self.EMB
        cos = self.cos_cached[:S][position_ids].unsqueeze(1)
        sin = self.sin_cached[:S][position_ids].unsqueeze(1)
        causal = torch.triu(torch.full((S, S), MIN), diagonal=1)
        mask = causal[None, None, :, :] + padding_bias(attention_mask)
        for i in range(L):
            x = x + self.self_attn[i](self.input_layernorm[i](x), mask, cos, sin) * self.RES
            x = x + self.mlp[i](self.post_attention_layernorm[i](x)) * self.RES
        return self.norm(x)


class LlamaPastAttention(LlamaAttention):
    """LLaMA attention with a key/value cache: the rotary applied to this step's Q and K at
    their absolute positions, K and V then appended to the cache, the mask given whole."""

    def __init__(self):
        super().__init__(kv_heads=H)

    def forward(self, x, mask, cos, sin, pk, pv):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), H), heads(self.v_proj(x), H)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = torch.cat((pk, k), dim=-2), torch.cat((pv, v), dim=-2)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(merge(torch.matmul(w, v)))


class LlamaPast(Llama):
    """LLaMA decoding with a cache, as exported for generation: past keys and values per
    layer, positions P..P+S-1 from the cache length, a causal mask of S rows over the P+S
    keys (triu from diagonal P+1) plus the padding of the whole mask."""

    inputs = ("input_ids", "attention_mask", "past_key", "past_value")

    def __init__(self):
        super().__init__()
        self.self_attn = nn.ModuleList(LlamaPastAttention() for _ in range(L))

    def forward(self, input_ids, attention_mask, past_key, past_value):
        S, P = input_ids.shape[1], past_key.shape[-2]
        pos = torch.arange(P, P + S)
        cos, sin = self.cos_cached[pos][None, None], self.sin_cached[pos][None, None]
        causal = torch.triu(torch.full((S, P + S), MIN), diagonal=P + 1)
        mask = causal[None, None] + padding_bias(attention_mask)
        x = self.embed_tokens(input_ids)
        for i in range(L):
            x = x + self.self_attn[i](self.input_layernorm[i](x), mask, cos, sin, past_key[i], past_value[i])
            x = x + self.mlp[i](self.post_attention_layernorm[i](x))
        return self.norm(x)


class MobileViT(Model):
    """MobileViT's transformer block: a conv stem, the feature map unfolded into 2x2
    patches so that attention runs over [B·4, patches, C] (every pixel of a patch attends
    to the same pixel of the other patches), pre-LayerNorm blocks (q/k/v Linear, SiLU MLP),
    folded back to [B, C, H, W] and flattened to [B, H·W, C]."""

    inputs = ("pixel_values",)
    PH = PW = 2

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, E, kernel_size=3, stride=2, padding=1)
        pre_norm_blocks(self, SigLIPAttention, nn.SiLU())
        self.norm = nn.LayerNorm(E)

    def forward(self, pixel_values):
        f = self.stem(pixel_values)  # [B, C, 8, 8]
        B, C, Hh, Ww = f.shape
        nh, nw = Hh // self.PH, Ww // self.PW
        p = f.reshape(B * C * nh, self.PH, nw, self.PW).transpose(1, 2)
        p = p.reshape(B, C, nh * nw, self.PH * self.PW).transpose(1, 3)
        x = self.norm(run_pre_norm_blocks(self, p.reshape(B * self.PH * self.PW, nh * nw, C)))
        p = x.contiguous().view(B, self.PH * self.PW, nh * nw, C).transpose(1, 3)
        p = p.reshape(B * C * nh, nw, self.PH, self.PW).transpose(1, 2)
        f = p.reshape(B, C, Hh, Ww)
        return f.flatten(2).transpose(1, 2)


class ModernBertAttention(Attn):
    """ModernBERT: one packed Wqkv without bias viewed as [B, S, 3, H, D], rotary on Q and
    K in an encoder, the scale on the scores, a mask given whole (global or local)."""

    rotaries = 2

    def __init__(self):
        super().__init__(H)
        self.Wqkv, self.Wo = nn.Linear(E, 3 * E, bias=False), nn.Linear(E, E, bias=False)

    def forward(self, x, mask, cos, sin):
        B, S, _ = x.shape
        qkv = self.Wqkv(x).view(B, S, 3, H, D)
        q, k, v = qkv.transpose(3, 1).unbind(dim=2)  # [B, H, S, D] each
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        w = torch.matmul(q, k.transpose(-1, -2)) * D**-0.5 + mask
        return self.Wo(merge(torch.matmul(F.softmax(w, dim=-1), v)))


class ModernBert(Model):
    """ModernBERT: token embeddings and a LayerNorm (no bias anywhere), pre-norm blocks
    whose attention alternates global (padding mask) and local (a bidirectional sliding
    window |i - j| <= 2 from Range comparisons, plus the padding), rotary positions, a
    GeGLU MLP with one packed Wi split in two, a final norm."""

    WINDOW = 4

    def __init__(self):
        super().__init__()
        self.tok_embeddings = nn.Embedding(V, E)
        self.emb_norm = BiaslessLayerNorm(E)
        self.attn_norm = nn.ModuleList([nn.Identity()] + [BiaslessLayerNorm(E) for _ in range(L - 1)])
        self.attn = nn.ModuleList(ModernBertAttention() for _ in range(L))
        self.mlp_norm = nn.ModuleList(BiaslessLayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(ModernBertMLP() for _ in range(L))
        self.final_norm = BiaslessLayerNorm(E)
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D)), persistent=False)

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        freqs = torch.outer(torch.arange(S).float(), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        glob = padding_bias(attention_mask)
        i = torch.arange(S)
        near = (i[:, None] - i[None, :]).abs() <= self.WINDOW // 2
        local = glob.masked_fill(~near[None, None], MIN)
        x = self.emb_norm(self.tok_embeddings(input_ids))
        for l in range(L):
            mask = glob if l % 2 == 0 else local
            x = x + self.attn[l](self.attn_norm[l](x), mask, cos, sin)
            x = x + self.mlp[l](self.mlp_norm[l](x))
        return self.final_norm(x)


class ModernBertMLP(FFN):
    """GeGLU with one packed input projection chunked into the input and the gate."""

    def __init__(self):
        super().__init__()
        self.Wi, self.Wo = nn.Linear(E, 2 * FF, bias=False), nn.Linear(FF, E, bias=False)

    def forward(self, x):
        inp, gate = self.Wi(x).chunk(2, dim=-1)
        return self.Wo(F.gelu(inp) * gate)


class MLAAttention(Attn):
    """DeepSeek-V2's multi-head latent attention: Q from a low-rank projection with an
    RMSNorm, each head's Q and K split into a part without position (NOPE) and a rotary
    part (ROPE); K's rotary part is one per token, shared by the heads (expanded); K's and
    V's other parts come from a compressed latent (RMSNorm, up-projection); V's head size
    (VD) is not Q's and K's (NOPE + ROPE)."""

    causal = True
    rotaries = 2
    NOPE, ROPE, VD, QR, KVR = 8, 4, 6, 16, 16

    def __init__(self):
        super().__init__(H)
        self.q_a, self.q_norm = nn.Linear(E, self.QR, bias=False), RMSNorm(self.QR)
        self.q_b = nn.Linear(self.QR, H * (self.NOPE + self.ROPE), bias=False)
        self.kv_a = nn.Linear(E, self.KVR + self.ROPE, bias=False)
        self.kv_norm = RMSNorm(self.KVR)
        self.kv_b = nn.Linear(self.KVR, H * (self.NOPE + self.VD), bias=False)
        self.o_proj = nn.Linear(H * self.VD, E, bias=False)

    def forward(self, x, mask, cos, sin):
        B, S, _ = x.shape
        q = self.q_b(self.q_norm(self.q_a(x))).view(B, S, H, self.NOPE + self.ROPE).transpose(1, 2)
        q_nope, q_pe = q.split([self.NOPE, self.ROPE], dim=-1)
        ckv = self.kv_a(x)
        latent, k_pe = ckv.split([self.KVR, self.ROPE], dim=-1)
        k_pe = k_pe.view(B, S, 1, self.ROPE).transpose(1, 2)
        kv = self.kv_b(self.kv_norm(latent)).view(B, S, H, self.NOPE + self.VD).transpose(1, 2)
        k_nope, v = kv.split([self.NOPE, self.VD], dim=-1)
        q_pe = q_pe * cos + rotate_half(q_pe) * sin
        k_pe = k_pe * cos + rotate_half(k_pe) * sin
        q = torch.cat((q_nope, q_pe), dim=-1)
        k = torch.cat((k_nope, k_pe.expand(B, H, S, self.ROPE)), dim=-1)
        w = torch.matmul(q, k.transpose(2, 3)) * (self.NOPE + self.ROPE) ** -0.5 + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(torch.matmul(w, v).transpose(1, 2).reshape(B, S, H * self.VD))


class DeepSeekV2(Llama):
    """DeepSeek-V2's attention (MLA) in LLaMA's blocks (RMSNorm pre-norm, causal Trilu mask
    plus padding, SwiGLU), the rotary tables of the rotary part's size gathered by
    position ids."""

    def __init__(self):
        super().__init__()
        self.self_attn = nn.ModuleList(MLAAttention() for _ in range(L))
        r = MLAAttention.ROPE
        inv_freq = 1.0 / (10000 ** (torch.arange(0, r, 2).float() / r))
        freqs = torch.outer(torch.arange(MAXPOS).float(), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", emb.cos(), persistent=False)
        self.register_buffer("sin_cached", emb.sin(), persistent=False)

class AlibiBertAttention(Attn):
    """MosaicBERT / Jina BERT: BERT's attention with a symmetric ALiBi bias, -slope·|i - j|
    per head, computed from the sequence length, added with the padding mask."""

    def __init__(self):
        super().__init__(H)
        self.Wqkv, self.dense = nn.Linear(E, 3 * E), nn.Linear(E, E)

    def forward(self, x, bias):
        q, k, v = self.Wqkv(x).split(E, dim=-1)
        q, k, v = heads(q, H), heads(k, H), heads(v, H)
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D) + bias
        return self.dense(merge(torch.matmul(F.softmax(w, dim=-1), v)))


class AlibiBert(Model):
    """A post-LayerNorm BERT without position embeddings whose attention carries a
    symmetric ALiBi bias, GeGLU FFN (as MosaicBERT)."""

    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(V, E)
        self.emb_ln = nn.LayerNorm(E)
        self.attn = nn.ModuleList(AlibiBertAttention() for _ in range(L))
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(Gated(F.gelu) for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.register_buffer("slopes", alibi_slopes(H), persistent=False)

    def forward(self, input_ids, attention_mask):
        S = input_ids.shape[1]
        i = torch.arange(S)
        dist = (i[None, :] - i[:, None]).abs().float()
        bias = -self.slopes[None, :, None, None] * dist[None, None] + padding_bias(attention_mask)
        x = self.emb_ln(self.word_embeddings(input_ids))
        for l in range(L):
            x = self.ln1[l](x + self.attn[l](x, bias))
            x = self.ln2[l](x + self.mlp[l](x))
        return x


def sdpa_as_exported(q, k, v, mask=None, causal=False):
    """F.scaled_dot_product_attention as torch 2's ONNX exporter writes it out: the scale
    computed in the graph from Q's last dim (1/sqrt(E), its square root applied to Q and
    to Kᵀ), a causal mask built from a Trilu of ones turned into 0/-inf, a boolean mask
    turned into 0/-inf by Where, then Add, Softmax, MatMul."""
    e = torch.tensor(q.shape[-1], dtype=torch.float32)
    s = torch.sqrt(1.0 / torch.sqrt(e))
    w = torch.matmul(q * s, k.transpose(-2, -1) * s)
    if causal:
        L_, S_ = q.shape[-2], k.shape[-2]
        keep = torch.ones(L_, S_, dtype=torch.float32).tril()
        w = w + torch.where(keep == 0, torch.tensor(float("-inf")), torch.tensor(0.0))
    if mask is not None:
        w = w + torch.where(mask, torch.tensor(0.0), torch.tensor(float("-inf")))
    return torch.matmul(torch.softmax(w, dim=-1), v)


class Torch2SDPAAttention(Attn):
    causal = True

    def __init__(self):
        super().__init__(H)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x, keep):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), H), heads(self.v_proj(x), H)
        return self.o_proj(merge(sdpa_as_exported(q, k, v, keep, causal=True)))


class Torch2SDPA(Model):
    """A pre-LayerNorm causal decoder whose attention is F.scaled_dot_product_attention(
    is_causal=True plus a boolean padding mask) as torch 2 exports it (sdpa_as_exported)."""

    def __init__(self):
        super().__init__()
        self.tok, self.pos = nn.Embedding(V, E), nn.Embedding(MAXPOS, E)
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(Torch2SDPAAttention() for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(nn.GELU()) for _ in range(L))
        self.ln_f = nn.LayerNorm(E)

    def forward(self, input_ids, attention_mask):
        x = self.tok(input_ids) + self.pos(torch.arange(input_ids.shape[1]))[None]
        keep = (attention_mask != 0)[:, None, None, :]
        for i in range(L):
            x = x + self.attn[i](self.ln1[i](x), keep)
            x = x + self.mlp[i](self.ln2[i](x))
        return self.ln_f(x)


class Gemma2Sliding(Gemma2):
    """Gemma 2 with its local layers: every other layer's mask is the causal mask with the
    keys more than WINDOW behind also filled with the lowest float, written as HF does
    (Where over a tril of ones shaped like the 4-D mask)."""

    WINDOW = 3

    def forward(self, input_ids, attention_mask, position_ids):
        x, cos, sin, mask = self.embed(input_ids, attention_mask, position_ids)
        far = torch.tril(torch.ones_like(mask, dtype=torch.bool), diagonal=-self.WINDOW)
        local = torch.where(far, torch.tensor(MIN), mask)
        for l in range(L):
            m = local if l % 2 == 0 else mask
            x = x + self.post_attention_layernorm[l](self.self_attn[l](self.input_layernorm[l](x), m, cos, sin))
            x = x + self.post_ffn_norm[l](self.mlp[l](self.pre_ffn_norm[l](x)))
        return self.norm(x)


class XLMAttention(Attn):
    """XLM/Flaubert: Q scaled by 1/sqrt(D) before Q·Kᵀ, padded keys filled with -inf by
    masked_fill, the softmax taken in float and cast back (type_as)."""

    def __init__(self):
        super().__init__(H)
        self.q_lin, self.k_lin, self.v_lin, self.out_lin = (nn.Linear(E, E) for _ in range(4))

    def forward(self, x, mask):
        B, S, _ = x.shape
        q = heads(self.q_lin(x), H) / math.sqrt(D)
        k, v = heads(self.k_lin(x), H), heads(self.v_lin(x), H)
        scores = torch.matmul(q, k.transpose(2, 3))
        banned = (mask == 0).view(B, 1, 1, S).expand_as(scores)
        scores = scores.masked_fill(banned, float("-inf"))
        w = F.softmax(scores.float(), dim=-1).type_as(scores)
        return self.out_lin(merge(torch.matmul(w, v)))


class XLM(Model):
    """XLM: sinusoidal positions added to the token embeddings, LayerNorm, post-LN blocks
    with a GELU MLP, the padded positions zeroed after each block (tensor *= mask)."""

    def __init__(self):
        super().__init__()
        self.embeddings = nn.Embedding(V, E)
        pos = torch.arange(MAXPOS).float()[:, None] / torch.pow(10000.0, torch.arange(0, E, 2).float() / E)
        table = torch.zeros(MAXPOS, E)
        table[:, 0::2], table[:, 1::2] = torch.sin(pos), torch.cos(pos)
        self.register_buffer("position_table", table, persistent=False)
        self.layer_norm_emb = nn.LayerNorm(E, eps=1e-12)
        self.attn = nn.ModuleList(XLMAttention() for _ in range(L))
        self.ln1 = nn.ModuleList(nn.LayerNorm(E, eps=1e-12) for _ in range(L))
        self.ffn = nn.ModuleList(MLP(F.gelu) for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E, eps=1e-12) for _ in range(L))

    def forward(self, input_ids, attention_mask):
        B, S = input_ids.shape
        keep = attention_mask.unsqueeze(-1).to(torch.float32)
        x = self.embeddings(input_ids) + self.position_table[:S][None]
        x = self.layer_norm_emb(x) * keep
        for i in range(L):
            x = self.ln1[i](x + self.attn[i](x, attention_mask))
            x = self.ln2[i](x + self.ffn[i](x))
            x = x * keep
        return x


class NoNorm(nn.Module):
    """MobileBERT's NoNorm: x * weight + bias, no statistics."""

    def __init__(self, n):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return x * self.weight + self.bias


MI = 16  # mobilebert: the bottleneck width (E is the inter-block width)


class MobileBertAttention(Attn):
    """Q and K from the bottlenecked hidden state, V from the block's input (MobileBERT's
    key_query_shared_bottleneck with use_bottleneck_attention off), 4 heads of MI/4."""

    def __init__(self):
        super().__init__(H)
        self.query, self.key, self.value = nn.Linear(MI, MI), nn.Linear(MI, MI), nn.Linear(E, MI)

    def forward(self, qk, x, mask):
        q, k, v = heads(self.query(qk), H), heads(self.key(qk), H), heads(self.value(x), H)
        w = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(MI // H) + mask, dim=-1)
        return merge(torch.matmul(w, v))


class MobileBertFFN(FFN):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(MI, 2 * MI), nn.Linear(2 * MI, MI)
        self.norm = NoNorm(MI)

    def forward(self, x):
        return self.norm(x + self.fc2(F.relu(self.fc1(x))))


class MobileBert(Model):
    """MobileBERT: a bottleneck Linear (E -> MI) in front of each block, attention over the
    bottleneck with V from the block input, NoNorm (element-wise affine) instead of
    LayerNorm, stacked ReLU FFNs, an output Linear back to E with a residual and NoNorm."""

    num_ffn = 2

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.pos = nn.Embedding(MAXPOS, E)
        self.emb_norm = NoNorm(E)
        self.bottleneck = nn.ModuleList(nn.Linear(E, MI) for _ in range(L))
        self.bn_norm = nn.ModuleList(NoNorm(MI) for _ in range(L))
        self.attn = nn.ModuleList(MobileBertAttention() for _ in range(L))
        self.attn_out = nn.ModuleList(nn.Linear(MI, MI) for _ in range(L))
        self.attn_norm = nn.ModuleList(NoNorm(MI) for _ in range(L))
        self.ffns = nn.ModuleList(nn.ModuleList(MobileBertFFN() for _ in range(self.num_ffn)) for _ in range(L))
        self.out = nn.ModuleList(nn.Linear(MI, E) for _ in range(L))
        self.out_norm = nn.ModuleList(NoNorm(E) for _ in range(L))

    def forward(self, input_ids, attention_mask):
        B, S = input_ids.shape
        mask = padding_bias(attention_mask)
        x = self.emb_norm(self.embed(input_ids) + self.pos(torch.arange(S))[None])
        for i in range(L):
            b = self.bn_norm[i](self.bottleneck[i](x))
            a = self.attn_norm[i](b + self.attn_out[i](self.attn[i](b, x, mask)))
            for f in self.ffns[i]:
                a = f(a)
            x = self.out_norm[i](x + self.out[i](a))
        return x


class CodeGenAttention(Attn):
    """CodeGen: one qkv Linear without bias whose output is viewed as MP=4 groups of
    [q, v, k] (in that order), partial rotate-every-two rotary on the first ROT channels of
    each head (sin/cos from a position table gathered by position ids), causal mask from a
    constant lower-triangular buffer sliced to S with torch.where, scores in float."""

    causal = True
    rotaries = 2
    MP, ROT = 4, 4

    def __init__(self):
        super().__init__(H)
        self.qkv_proj = nn.Linear(E, 3 * E, bias=False)
        self.out_proj = nn.Linear(E, E, bias=False)
        self.register_buffer("bias", torch.tril(torch.ones(MAXPOS, MAXPOS, dtype=torch.bool))[None, None], persistent=False)

    def forward(self, x, mask, sin, cos):
        B, S, _ = x.shape
        qkv = self.qkv_proj(x).reshape(B, S, self.MP, -1)
        local = E // self.MP
        q, v, k = torch.split(qkv, local, dim=-1)

        def split_heads(t):
            t = t.reshape(B, S, self.MP, H // self.MP, D)
            return t.reshape(B, S, H, D)

        q, k, v = split_heads(q), split_heads(k), split_heads(v).permute(0, 2, 1, 3)

        def rot(t):
            r, p = t[..., : self.ROT], t[..., self.ROT :]
            x1, x2 = r[..., ::2], r[..., 1::2]
            rr = torch.stack((-x2, x1), dim=-1).flatten(-2)
            return torch.cat([r * cos + rr * sin, p], dim=-1)

        q, k = rot(q).permute(0, 2, 1, 3), rot(k).permute(0, 2, 1, 3)
        w = torch.matmul(q.float(), k.float().transpose(-1, -2))
        causal = self.bias[:, :, :S, :S]
        w = torch.where(causal, w, torch.tensor(MIN))
        w = w / math.sqrt(D) + mask
        w = F.softmax(w, dim=-1).to(v.dtype)
        return self.out_proj(merge(torch.matmul(w, v)))


class CodeGen(Model):
    """CodeGen: parallel residual (attention and MLP read the same LayerNorm), gelu_new MLP,
    sinusoidal rotary table gathered by position ids and repeated per pair."""

    inputs = ("input_ids", "attention_mask", "position_ids")

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(V, E)
        self.ln = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(CodeGenAttention() for _ in range(L))
        self.mlp = nn.ModuleList(MLP(gelu_new) for _ in range(L))
        self.ln_f = nn.LayerNorm(E)
        rot = CodeGenAttention.ROT
        inv_freq = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
        ang = torch.arange(MAXPOS).float()[:, None] * inv_freq[None]
        self.register_buffer("embed_positions", torch.cat((torch.sin(ang), torch.cos(ang)), dim=1), persistent=False)

    def forward(self, input_ids, attention_mask, position_ids):
        sincos = self.embed_positions[position_ids]  # [B,S,ROT]
        sin, cos = torch.split(sincos, sincos.shape[-1] // 2, dim=-1)
        sin = torch.repeat_interleave(sin[:, :, None, :], 2, dim=3)
        cos = torch.repeat_interleave(cos[:, :, None, :], 2, dim=3)
        mask = padding_bias(attention_mask)
        x = self.wte(input_ids)
        for i in range(L):
            h = self.ln[i](x)
            x = x + self.attn[i](h, mask, sin, cos) + self.mlp[i](h)
        return self.ln_f(x)


class SwinV2Attention(Attn):
    """Swin V2's scaled cosine attention: Q and K L2-normalised per head, Q·Kᵀ times a learned
    per-head logit scale exp(clamp(τ, max=log 100)), plus a relative-position bias from a
    small MLP over a constant table of log-spaced offsets (16·sigmoid), gathered by constant
    indices; QKV in one Linear with a bias on Q and V only."""

    def __init__(self, n=17):
        super().__init__(VH)
        self.qkv = nn.Linear(VE, 3 * VE, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(VE)), nn.Parameter(torch.zeros(VE))
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(VH, 1, 1)))
        self.cpb = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, VH, bias=False))
        coords = torch.arange(-(n - 1), n).float()
        table = torch.stack(torch.meshgrid(coords, coords, indexing="ij"), dim=-1) / (n - 1) * 8
        table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
        self.register_buffer("table", table.reshape(-1, 2), persistent=False)
        i = torch.arange(n)
        rel = (i[:, None] - i[None, :] + n - 1) * (2 * n - 1) + (i[:, None] - i[None, :] + n - 1)
        self.register_buffer("index", rel.reshape(-1), persistent=False)
        self.n, self.proj = n, nn.Linear(VE, VE)

    def forward(self, x):
        B, N, C = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(B, N, 3, VH, C // VH).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        rpb = self.cpb(self.table)[self.index].view(self.n, self.n, -1).permute(2, 0, 1)
        attn = attn + (16 * torch.sigmoid(rpb))[None]
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class SwinV2(ViT):
    """A ViT with Swin V2's scaled cosine attention and post-norm residuals
    (x + norm(attn(x)), res-post-norm)."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, VE, kernel_size=4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, VE))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 17, VE))
        self.ln_before = nn.ModuleList(nn.LayerNorm(VE) for _ in range(L))
        self.attn = nn.ModuleList(SwinV2Attention() for _ in range(L))
        self.ln_after = nn.ModuleList(nn.LayerNorm(VE) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(nn.GELU(), e=VE) for _ in range(L))
        self.layernorm = nn.LayerNorm(VE)

    def forward(self, pixel_values):
        B = pixel_values.shape[0]
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1) + self.position_embeddings
        for i in range(L):
            x = x + self.ln_before[i](self.attn[i](x))
            x = x + self.ln_after[i](self.mlp[i](x))
        return self.layernorm(x)


# ---------------------------------------------------------------- llama4, gemma3, bitnet


def llama3_inv_freq(d, base, factor=8.0, low=1.0, high=4.0, ctx=64):
    """Llama 3.1's rope scaling: wavelengths shorter than ctx/high kept, longer than
    ctx/low divided by factor, those between smoothed from one to the other."""
    inv = 1.0 / (base ** (torch.arange(0, d, 2).float() / d))
    wl = 2 * math.pi / inv
    scaled = torch.where(wl > ctx / low, inv / factor, inv)
    smooth = (ctx / wl - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wl >= ctx / high) & (wl <= ctx / low)
    return torch.where(medium, smoothed, scaled)


class L2Norm(RMSNorm):
    """Llama 4's QK norm: x / sqrt(mean(x^2) + eps) in float32, without a weight."""

    def __init__(self, eps=1e-6):
        super().__init__(1, eps)
        del self.weight

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


class Llama4Attention(Attn):
    """Llama 4: rotary layers rotate Q and K interleaved in the [B, S, H, D] layout, then
    L2-normalise them (no weight); NoPE layers have no rotary and scale Q by the
    temperature of its position instead."""

    causal = True

    def __init__(self, rope):
        super().__init__(H, 2)
        self.rope, self.rotaries = rope, 2 if rope else 0
        self.q_proj = nn.Linear(E, H * D, bias=False)
        self.k_proj = nn.Linear(E, 2 * D, bias=False)
        self.v_proj = nn.Linear(E, 2 * D, bias=False)
        self.o_proj = nn.Linear(H * D, E, bias=False)
        if rope:
            self.q_norm, self.k_norm = L2Norm(), L2Norm()

    def forward(self, x, mask, cos, sin, temp):
        B, S, _ = x.shape
        q, k = self.q_proj(x).view(B, S, H, D), self.k_proj(x).view(B, S, 2, D)
        if self.rope:
            q, k = rotate_interleaved(q, cos, sin), rotate_interleaved(k, cos, sin)
            q, k = self.q_norm(q), self.k_norm(k)
        else:
            q = q * temp
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), heads(self.v_proj(x), 2)
        k, v = repeat_kv(k, H // 2), repeat_kv(v, H // 2)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(merge(torch.matmul(w, v)))


class Llama4(Model):
    """Llama 4 text: every fourth layer NoPE with a causal mask and temperature-tuned Q,
    log(floor((p + 1) / FLOOR) + 1) * TEMP + 1; the others rotary (Llama 3.1 scaled
    frequencies) with QK L2-norm and a chunked causal mask (a query sees the keys of its
    own CHUNK positions only); RMSNorm, SwiGLU."""

    inputs = ("input_ids", "attention_mask", "position_ids")
    num_layers = 4
    CHUNK, FLOOR, TEMP = 4, 4.0, 0.1

    def __init__(self):
        super().__init__()
        n = self.num_layers
        self.embed_tokens = nn.Embedding(V, E)
        self.input_layernorm = nn.ModuleList(RMSNorm(E) for _ in range(n))
        self.self_attn = nn.ModuleList(Llama4Attention((l + 1) % 4 != 0) for l in range(n))
        self.post_attention_layernorm = nn.ModuleList(RMSNorm(E) for _ in range(n))
        self.mlp = nn.ModuleList(Gated(F.silu) for _ in range(n))
        self.norm = RMSNorm(E)
        self.register_buffer("inv_freq", llama3_inv_freq(D, 10000.0), persistent=False)

    def forward(self, input_ids, attention_mask, position_ids):
        S = input_ids.shape[1]
        x = self.embed_tokens(input_ids)
        f = position_ids[:, :, None, None].float() * self.inv_freq  # [B, S, 1, D/2]
        cos, sin = f.cos(), f.sin()
        p = torch.arange(S).float()
        temp = (torch.log(torch.floor((p + 1.0) / self.FLOOR) + 1.0) * self.TEMP + 1.0).view(1, S, 1, 1)
        i, j = torch.arange(S)[:, None], torch.arange(S)[None, :]
        pad = padding_bias(attention_mask)
        other = torch.div(i, self.CHUNK, rounding_mode="floor") != torch.div(j, self.CHUNK, rounding_mode="floor")
        chunked = torch.zeros(S, S).masked_fill((j > i) | other, MIN)[None, None] + pad
        causal = torch.triu(torch.full((S, S), MIN), diagonal=1)[None, None] + pad
        for l in range(self.num_layers):
            a = self.self_attn[l]
            x = x + a(self.input_layernorm[l](x), chunked if a.rope else causal, cos, sin, temp)
            x = x + self.mlp[l](self.post_attention_layernorm[l](x))
        return self.norm(x)


class Gemma3Attention(GQAttention):
    """Gemma 3: (1 + w) RMSNorm over the head size on Q and K after the heads transpose,
    then the rotary; the scores scaled by query_pre_attn_scalar^-1/2 (not the head size)."""

    SCALAR = 24

    def __init__(self):
        super().__init__(2, GD, False, False)
        self.q_norm, self.k_norm = GemmaRMSNorm(GD), GemmaRMSNorm(GD)

    def forward(self, x, mask, cos, sin):
        q = self.q_norm(heads(self.q_proj(x), H))
        k = self.k_norm(heads(self.k_proj(x), self.kv_heads))
        v = heads(self.v_proj(x), self.kv_heads)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // self.kv_heads), repeat_kv(v, H // self.kv_heads)
        w = torch.matmul(q, k.transpose(2, 3)) * self.SCALAR**-0.5 + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(merge(torch.matmul(w, v)))


class Gemma3(Gemma2):
    """Gemma 3: Gemma 2's sandwich norms without the soft cap, QK-norm, local layers
    (sliding window, rotary base 10^4) alternating with global ones (causal, base 10^6)."""

    WINDOW = 3

    def __init__(self):
        super().__init__()
        self.self_attn = nn.ModuleList(Gemma3Attention() for _ in range(L))
        self.register_buffer("global_inv_freq", 1.0 / (1e6 ** (torch.arange(0, GD, 2).float() / GD)), persistent=False)

    def forward(self, input_ids, attention_mask, position_ids):
        x, cos, sin, mask = self.embed(input_ids, attention_mask, position_ids)
        gcos, gsin = rotary_from_positions(self.global_inv_freq, position_ids)
        far = torch.tril(torch.ones_like(mask, dtype=torch.bool), diagonal=-self.WINDOW)
        local = torch.where(far, torch.tensor(MIN), mask)
        for l in range(L):
            r = (local, cos, sin) if l % 2 == 0 else (mask, gcos, gsin)
            x = x + self.post_attention_layernorm[l](self.self_attn[l](self.input_layernorm[l](x), *r))
            x = x + self.post_ffn_norm[l](self.mlp[l](self.pre_ffn_norm[l](x)))
        return self.norm(x)


def act_quant(x):
    """BitNet b1.58's activations: absmax-quantised per token to 8 bits and back."""
    s = 127.0 / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
    return (x * s).round().clamp(-128, 127) / s


class BitLinear(nn.Linear):
    """A bias-free Linear on quantised activations, its weight ternary: round(W / mean|W|)
    clamped to [-1, 1], times mean|W| (a constant once folded)."""

    def __init__(self, nin, nout):
        super().__init__(nin, nout, bias=False)

    def forward(self, x):
        ws = 1.0 / self.weight.abs().mean().clamp(min=1e-5)
        w = (self.weight * ws).round().clamp(-1, 1) / ws
        return F.linear(act_quant(x), w)


class BitNetAttention(Attn):
    """BitNet: LLaMA's attention on BitLinear projections, with an RMSNorm (the sub-norm) on
    the merged heads before the output projection."""

    causal = True
    rotaries = 2

    def __init__(self):
        super().__init__(H, 2)
        self.q_proj, self.k_proj, self.v_proj = BitLinear(E, H * D), BitLinear(E, 2 * D), BitLinear(E, 2 * D)
        self.o_proj, self.attn_sub_norm = BitLinear(H * D, E), RMSNorm(E)

    def forward(self, x, mask, cos, sin):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), 2), heads(self.v_proj(x), 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // 2), repeat_kv(v, H // 2)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(self.attn_sub_norm(merge(torch.matmul(w, v))))


class BitNetMLP(FFN):
    """down(subnorm(relu(gate(x))^2 * up(x))) on BitLinear projections."""

    gated = True

    def __init__(self):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = BitLinear(E, FF), BitLinear(E, FF), BitLinear(FF, E)
        self.ffn_sub_norm = RMSNorm(FF)

    def forward(self, x):
        return self.down_proj(self.ffn_sub_norm(relu_squared(self.gate_proj(x)) * self.up_proj(x)))


class BitNet(Llama):
    """BitNet b1.58: LLaMA's decoder (rotary table gathered by position ids, Trilu causal
    mask plus padding) with BitLinear projections and sub-norms in attention and MLP."""

    def __init__(self):
        super().__init__()
        self.self_attn = nn.ModuleList(BitNetAttention() for _ in range(L))
        self.mlp = nn.ModuleList(BitNetMLP() for _ in range(L))


class MoEFFN(nn.Module):
    """Qwen2-MoE's sparse FFN: router softmax, the top-K experts weighted by their
    probabilities (not renormalised) as a dense [B, S, N] weight scattered from TopK,
    each expert a SwiGLU MLP, plus a shared SwiGLU expert gated by sigmoid(x·w)."""

    N, K = 4, 2

    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(E, self.N, bias=False)
        self.experts = nn.ModuleList(Gated(F.silu, ff=16) for _ in range(self.N))
        self.shared_expert = Gated(F.silu)
        self.shared_expert_gate = nn.Linear(E, 1, bias=False)

    def forward(self, x):
        p = F.softmax(self.gate(x), dim=-1, dtype=torch.float32)
        topw, topi = torch.topk(p, self.K, dim=-1)
        route = torch.zeros_like(p).scatter(-1, topi, topw)
        out = torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
        for e, ex in enumerate(self.experts):
            out = out + ex(x) * route[..., e : e + 1]
        return out


class QwenMoE(Llama):
    """A Qwen2-MoE / Mixtral decoder: LLaMA's attention and RMSNorms, MoEFFN in place of
    the MLP."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.ModuleList(MoEFFN() for _ in range(L))


class LayerNorm1P(nn.LayerNorm):
    """Nemotron's LayerNorm1P: the weight an offset from 1, weight + 1 in the graph."""

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight + 1, self.bias, self.eps)


class NemotronAttention(LlamaAttention):
    """Nemotron: GQA without biases, rotate-half rotary on the first half of each head."""

    def forward(self, x, mask, cos, sin):
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), self.kv_heads), heads(self.v_proj(x), self.kv_heads)
        q, k = partial_rotate_half(q, D // 2, cos, sin), partial_rotate_half(k, D // 2, cos, sin)
        k, v = repeat_kv(k, H // self.kv_heads), repeat_kv(v, H // self.kv_heads)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(merge(torch.matmul(w, v)))


class Nemotron(Persimmon):
    """Nemotron-4 / Minitron: Persimmon's layout with LayerNorm1P norms, NemotronAttention
    (no QK LayerNorm, GQA) and a squared-ReLU MLP (up, torch.square(relu), down)."""

    def __init__(self):
        super().__init__()
        self.input_layernorm = nn.ModuleList(LayerNorm1P(E) for _ in range(L))
        self.self_attn = nn.ModuleList(NemotronAttention() for _ in range(L))
        self.post_attention_layernorm = nn.ModuleList(LayerNorm1P(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(relu_squared) for _ in range(L))
        self.final_layernorm = LayerNorm1P(E)


class LongRoPE(Llama):
    """Phi-3.5 / Phi-4-mini's LongRoPE (and YaRN's attention factor): LLaMA's blocks with
    inv_freq divided per frequency by rescale factors, cos and sin computed from the
    position ids and both multiplied by √(1 + ln(scale) / ln(original context))."""

    FACTORS, SCALE, ORIGINAL = (1.0, 1.5, 3.0, 6.0), 4.0, 8

    def __init__(self):
        super().__init__()
        ext = torch.tensor(self.FACTORS)
        self.register_buffer("inv_freq", 1.0 / (ext * 10000 ** (torch.arange(0, D, 2).float() / D)), persistent=False)
        self.mscale = math.sqrt(1 + math.log(self.SCALE) / math.log(self.ORIGINAL))

    def forward(self, input_ids, attention_mask, position_ids):
        S = input_ids.shape[1]
        x = self.embed_tokens(input_ids)
        cos, sin = rotary_from_positions(self.inv_freq, position_ids)
        cos, sin = cos * self.mscale, sin * self.mscale
        mask = torch.triu(torch.full((S, S), MIN), diagonal=1)[None, None] + padding_bias(attention_mask)
        for i in range(L):
            x = x + self.self_attn[i](self.input_layernorm[i](x), mask, cos, sin)
            x = x + self.mlp[i](self.post_attention_layernorm[i](x))
        return self.norm(x)


# ---------------------------------------------------------------- torch-seq-first


class TorchSeqFirst(Model):
    """nn.Transformer (batch_first=False) called on its own sequence-first float inputs:
    src [S, B, E] and tgt [T, B, E] are the graph inputs, so no input has the batch first
    and only the attention's math tells the batch from the sequence. Causal decoder
    self-attention (the square subsequent mask built from T in the graph), cross-attention
    on the encoder output, post-LN layers, ReLU FFN, the final encoder and decoder norms."""

    num_layers = 2 * L  # L encoder and L decoder layers
    inputs = ("src", "tgt")
    mha_fan_in = True

    def __init__(self):
        super().__init__()
        self.tx = nn.Transformer(E, H, L, L, FF, dropout=0.0)
        marks = [TorchEncoderLayer(H) for _ in range(2 * L)] + [TorchEncoderLayer(H) for _ in range(L)]
        for m in marks[L : 2 * L]:
            m.causal = True
        for m in marks[2 * L :]:
            m.kind = "cross"
        self.marks = nn.ModuleList(marks)
        self.ffn_marks = nn.ModuleList(FFN() for _ in range(2 * L))

    def forward(self, src, tgt):
        T = tgt.shape[0]
        causal = torch.triu(torch.full((T, T), float("-inf")), diagonal=1)
        return self.tx(src, tgt, tgt_mask=causal)


# ---------------------------------------------------------------- maxvit

MV_P = 4  # window and grid size; the 8x8 feature map holds 4 of each


class MaxViTAttention(Attn):
    """MaxViT's relative multi-head attention on partitioned tokens [B, G, P², C]: the
    heads split inside each group, [B, G, N, P², D], so the scores are 5-D with the groups
    and heads on separate axes; the scale on K; a relative position bias [N, P², P²]
    gathered from a learned [(2P-1)², N] table by constant indices and added to every
    group (broadcast over G and the batch)."""

    def __init__(self):
        super().__init__(H)
        self.to_qkv, self.merge = nn.Linear(E, 3 * E), nn.Linear(E, E)
        self.table = nn.Parameter(torch.zeros((2 * MV_P - 1) ** 2, H))
        c = torch.stack(torch.meshgrid(torch.arange(MV_P), torch.arange(MV_P), indexing="ij")).flatten(1)
        rel = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0) + (MV_P - 1)
        self.register_buffer("index", rel[..., 0] * (2 * MV_P - 1) + rel[..., 1], persistent=False)

    def forward(self, x):
        B, G, P, _ = x.shape
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, G, P, H, D).permute(0, 1, 3, 2, 4) for t in (q, k, v))
        k = k * D ** -0.5
        bias = self.table[self.index.reshape(-1)].reshape(P, P, H).permute(2, 0, 1).unsqueeze(0)
        w = F.softmax(torch.matmul(q, k.transpose(-2, -1)) + bias, dim=-1)
        return self.merge(torch.matmul(w, v).permute(0, 1, 3, 2, 4).reshape(B, G, P, E))


class MaxViT(Model):
    """A MaxViT block's two attention layers on an 8x8 feature map (a stride-2 patch Conv
    of a 16x16 image): block attention in 4x4 windows, then grid attention over a 4x4
    dilated grid; each pre-LN with the partition's own residual and a GELU FFN, the
    feature map partitioned into [B, G, P², C] and back by view and permute."""

    inputs = ("pixel_values",)

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, E, 2, stride=2)
        self.ln1 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.attn = nn.ModuleList(MaxViTAttention() for _ in range(L))
        self.ln2 = nn.ModuleList(nn.LayerNorm(E) for _ in range(L))
        self.mlp = nn.ModuleList(MLP(F.gelu) for _ in range(L))

    @staticmethod
    def window(x):
        B, Hh, W, C = x.shape
        x = x.view(B, Hh // MV_P, MV_P, W // MV_P, MV_P, C).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(B, -1, MV_P * MV_P, C)

    @staticmethod
    def unwindow(x, Hh, W):
        B, _, _, C = x.shape
        x = x.view(B, Hh // MV_P, W // MV_P, MV_P, MV_P, C).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(B, Hh, W, C)

    @staticmethod
    def grid(x):
        B, Hh, W, C = x.shape
        x = x.view(B, MV_P, Hh // MV_P, MV_P, W // MV_P, C).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(B, -1, MV_P * MV_P, C)

    @staticmethod
    def ungrid(x, Hh, W):
        B, _, _, C = x.shape
        x = x.view(B, Hh // MV_P, W // MV_P, MV_P, MV_P, C).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(B, Hh, W, C)

    def forward(self, pixel_values):
        x = self.stem(pixel_values).permute(0, 2, 3, 1)  # [B, 8, 8, E]
        Hh, W = x.shape[1], x.shape[2]
        parts = ((self.window, self.unwindow), (self.grid, self.ungrid))
        for i in range(L):
            split, join = parts[i % 2]
            t = split(x)
            t = t + self.attn[i](self.ln1[i](t))
            t = t + self.mlp[i](self.ln2[i](t))
            x = join(t, Hh, W)
        return x.reshape(x.shape[0], -1, E)


FORMS = {
    "gpt2-causal": (GPT2, (10, 13, 17)),
    "llama": (Llama, (14, 17)),  # torch.triu needs Trilu (opset 14)
    "rotary-interleaved": (RotaryInterleaved, (14, 17)),
    "t5": (lambda: T5(False), (13, 17)),
    "t5-geglu": (lambda: T5(True), (13, 17)),
    "bart": (Bart, (10, 13, 17)),
    "vit": (ViT, (9, 13, 17)),
    "vit-fusedqkv": (DeiT, (13, 17)),
    "conv1x1": (Conv1x1, (13, 17)),
    "cross-attn": (CrossAttn, (10, 13, 17)),
    "mqa": (MQA, (14, 17)),
    "causal-range": (CausalRange, (13, 17)),
    "sdpa-like": (SDPALike, (13, 17)),
    "distilbert-gemm": (GemmEncoder, (9, 13, 17)),
    "decoder-sinusoidal": (DecoderSinusoidal, (14, 17)),
    "nearmiss-softmax-axis": (NearMiss, (13, 17)),
    "gpt2-past": (GPT2Past, (10, 13, 17)),
    "gptj-rotary": (GPTJ, (10, 13, 17)),
    "neox": (NeoX, (10, 13, 17)),
    "bloom": (Bloom, (14, 17)),
    "swin": (Swin, (9, 13, 17)),
    "falcon": (Falcon, (14, 17)),
    "opt": (OPT, (13, 17)),
    "qwen2": (Qwen2, (10, 13, 17)),
    "gemma": (Gemma, (14, 17)),  # torch.triu needs Trilu (opset 14)
    "clip-text": (CLIPText, (14, 17)),
    "whisper-encoder": (WhisperEncoder, (10, 13, 17)),
    "beit": (Beit, (13, 17)),
    "gpt-bigcode": (BigCode, (13, 17)),
    "gpt-neo": (GPTNeo, (10, 13, 17)),
    "segformer": (Segformer, (13, 17)),
    "wav2vec2": (Wav2Vec2, (13, 17)),
    "torch-encoder": (TorchEncoder, (9, 13, 17)),
    "phi3": (Phi3, (14, 17)),  # torch.triu needs Trilu (opset 14)
    "gpt2-merged": (GPT2Merged, (10, 13, 17)),
    "torchvision-vit": (TorchvisionViT, (13, 17)),
    "llama-hf": (LlamaHF, (14, 17)),  # torch.triu needs Trilu (opset 14)
    # Exported without dynamic axes, as zoo models often are: every dim a number, so no
    # symbol says which axis is the batch; the reference run uses the traced shapes.
    "torchvision-vit-static": (static(TorchvisionViT), (13, 17)),
    "torch-encoder-static": (static(TorchEncoder), (13, 17)),
    "gpt2-causal-static": (static(GPT2), (13, 17)),
    "t5-encdec": (T5EncDec, (13, 17)),
    "mpt": (MPT, (14, 17)),  # tril needs Trilu (opset 14)
    "detr": (Detr, (13, 17)),
    "bart-decoder-past": (BartDecoderPast, (13, 17)),
    # export_modules_as_functions needs opset 15.
    "vit-functions": (as_functions(ViT), (15, 17)),
    "llama-hf-functions": (as_functions(LlamaHF), (15, 17)),
    "gqa-broadcast": (BroadcastGQA, (13, 17)),
    "mistral": (Mistral, (14, 17)),
    "xlm": (XLM, (13, 17)),
    "mobilebert": (MobileBert, (13, 17)),
    "codegen": (CodeGen, (13, 17)),
    "swinv2": (SwinV2, (13, 17)),
    "qwen3": (Qwen3, (14, 17)),  # torch.triu needs Trilu (opset 14)
    "gemma2": (Gemma2, (14, 17)),
    "esm": (ESM, (13, 17)),
    "siglip": (SigLIP, (14, 17)),  # nn.MultiheadAttention's export needs opset 14
    "layoutlmv3": (LayoutLMv3, (13, 17)),
    "dinov2": (DINOv2, (13, 17)),
    "olmo": (OLMo, (14, 16)),  # Trilu needs 14; at 17 torch 1.13 exports a weightless LayerNorm with an empty scale input
    "granite": (Granite, (14, 17)),
    "vit-any-image": (any_image(ViT), (13, 17)),
    "beit-any-image": (any_image(Beit), (13, 17)),
    "torchvision-vit-any-image": (any_image(TorchvisionViT), (13, 17)),
    "segformer-any-image": (any_image(Segformer), (13, 17)),
    "swin-any-image": (any_image(Swin), (13, 17)),
    "llama-past": (LlamaPast, (14, 17)),  # torch.triu needs Trilu (opset 14)
    "mobilevit": (MobileViT, (13, 17)),
    "modernbert": (ModernBert, (13, 17)),
    "deepseek-mla": (DeepSeekV2, (14, 17)),  # torch.triu needs Trilu (opset 14)
    "alibi-bert": (AlibiBert, (13, 17)),
    "sdpa-torch2": (Torch2SDPA, (14, 17)),  # tril needs Trilu (opset 14)
    "gemma2-sliding": (Gemma2Sliding, (14, 17)),
    "conv1x1-glu": (Conv1x1GLU, (13, 17)),
    "sd-spatial": (SDSpatial, (13, 17)),
    "sam": (SAMEncoder, (13, 17)),
    "conformer-relpos": (ConformerRelPos, (13, 17)),
    "einsum": (EinsumEncoder, (13, 17)),
    "chatglm": (ChatGLM, (14, 17)),
    "falcon40b": (Falcon40B, (14, 17)),
    "qwen2-vl": (Qwen2VL, (14, 17)),
    "levit": (Levit, (13, 17)),
    "internlm2": (InternLM2, (14, 17)),  # torch.triu needs Trilu (opset 14)
    "stablelm2": (StableLM2, (14, 17)),
    "cohere": (Cohere, (14, 17)),
    "gpt-oss-sinks": (GPTOSSSinks, (14, 17)),
    "baichuan": (Baichuan, (13, 17)),
    "openelm": (OpenELM, (14, 17)),  # torch.triu needs Trilu (opset 14)
    "phi2": (Phi2, (14, 17)),
    "persimmon": (Persimmon, (14, 17)),
    "cohere-qknorm": (CohereQKNorm, (14, 17)),
    "qwen1": (QWen, (14, 17)),  # torch.tril needs Trilu (opset 14)
    "cait": (CaiT, (13, 17)),
    "perceiver": (Perceiver, (13, 17)),
    "funnel": (Funnel, (13, 17)),
    "xcit": (XCiT, (13, 17)),
    "timesformer": (TimeSformer, (13, 17)),
    "patchtst": (PatchTST, (13, 17)),
    "funnel-separate-cls": (FunnelSeparateCls, (13, 17)),
    "llama4": (Llama4, (14, 17)),  # torch.triu needs Trilu (opset 14)
    "gemma3": (Gemma3, (14, 17)),
    "bitnet": (BitNet, (14, 17)),  # torch.triu needs Trilu (opset 14)
    "qwen-moe": (QwenMoE, (14, 17)),  # torch.triu needs Trilu (opset 14)
    "nemotron": (Nemotron, (14, 17)),  # torch.triu needs Trilu (opset 14)
    "longrope": (LongRoPE, (14, 17)),  # torch.triu needs Trilu (opset 14)
    "conformer-block": (ConformerBlock, (13, 17)),
    "mask2former-masked": (Mask2Former, (14, 17)),  # nn.MultiheadAttention's boolean mask
    "speecht5-relpos": (SpeechT5, (13, 17)),
    "detr-decoder": (DetrDecoder, (13, 17)),
    "qformer": (QFormer, (13, 17)),
    "pix2struct": (Pix2Struct, (13, 17)),
    "w2v-bert": (W2VBert, (13, 17)),
    "mask2former-hf": (Mask2FormerHF, (14, 17)),
    "qformer-text": (QFormerText, (13, 17)),
    "normformer": (NormFormer, (13, 17)),
    "torch-seq-first": (TorchSeqFirst, (14, 17)),
    "maxvit": (MaxViT, (13, 17)),
    "gpt-oss-sliding": (GPTOSSSliding, (14, 17)),  # torch.triu needs Trilu (opset 14)
}


def init_weights(model, seed):
    """Deterministic weights large enough that every term matters at 1e-4: projections with
    std 1/sqrt(fan_in), embeddings and tokens std 0.5, norm and layer-scale weights near 1,
    biases near 0."""
    g = torch.Generator().manual_seed(seed)

    def normal(p, std, mean=0.0):
        p.copy_(mean + std * torch.randn(p.shape, generator=g))

    with torch.no_grad():
        for _, mod in model.named_modules():
            for pname, p in mod.named_parameters(recurse=False):
                if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d)) and pname == "weight":
                    normal(p, 1.0 / math.sqrt(p[0].numel()))
                elif isinstance(mod, Conv1D) and pname == "weight":
                    normal(p, 1.0 / math.sqrt(p.shape[0]))
                elif isinstance(mod, nn.MultiheadAttention) and pname == "in_proj_weight" and getattr(model, "mha_fan_in", False):
                    # A projection like any other (std 0.5 saturates the softmax, and a
                    # deep stack of such layers amplifies any rounding); the forms made
                    # before this keep their weights.
                    normal(p, 1.0 / math.sqrt(p.shape[1]))
                elif isinstance(mod, nn.Embedding) or p.dim() >= 2:
                    normal(p, 0.5)
                elif pname == "weight" or isinstance(mod, nn.ParameterList):
                    normal(p, 0.1, 1.0)
                else:
                    normal(p, 0.1)


def make_inputs(model, B, S, T, seed):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in model.inputs:
        if name in ("input_ids", "decoder_input_ids"):
            out[name] = torch.randint(0, V, (B, T if name.startswith("decoder") else S), generator=g)
        elif name == "attention_mask" and isinstance(model, (GPT2Past, LlamaPast)):
            m = torch.ones(B, PAST + S, dtype=torch.long)
            m[-1, :2] = 0  # the last row's oldest cached positions are padding (left padding)
            out[name] = m
        elif name in ("past_key", "past_value"):
            out[name] = torch.randn(L, B, H, PAST, D, generator=g)
        elif name in ("cross_key", "cross_value"):
            out[name] = torch.randn(L, B, H, S, D, generator=g)
        elif name == "attention_mask":
            m = torch.ones(B, S, dtype=torch.long)
            if isinstance(model, LlamaHF):
                m[-1, :3] = 0  # left padding, as batched generation pads: rows with no key
            else:
                m[-1, S - 3 :] = 0  # the last row is padded
            out[name] = m.to(torch.bool) if isinstance(model, SDPALike) else m
        elif name == "position_ids" and isinstance(model, Qwen2VL):
            # Text positions then a 2-D grid's: time, height and width differ.
            i = torch.arange(S)
            out[name] = torch.stack([i, i // 3, i % 3 + i // 3]).unsqueeze(1).expand(3, B, S).contiguous()
        elif name == "position_ids":
            out[name] = torch.arange(S).unsqueeze(0).expand(B, S).contiguous()
        elif name == "use_cache_branch":
            out[name] = torch.tensor(True)
        elif name == "input_values":
            out[name] = torch.randn(B, 10 * S + 10, generator=g)
        elif name == "input_features":
            out[name] = torch.randn(B, MEL, 2 * S, generator=g)
        elif name == "pixel_values":
            # DINOv2 resizes its positions to the input's patch grid: the reference run
            # takes another image size than the trace.
            hw = (24, 20) if isinstance(model, DINOv2) and B == REF_B else (16, 16)
            if isinstance(model, SAMEncoder):
                hw = (4 * SAM_GRID, 4 * SAM_GRID)
            if isinstance(model, TimeSformer):
                out[name] = torch.randn(B, TS_T, 3, 4 * TS_G, 4 * TS_G, generator=g)
                continue
            out[name] = torch.randn(B, 3, *hw, generator=g)
        elif name == "pixel_mask":
            m = torch.ones(B, 16, 16, dtype=torch.long)
            m[-1, :, 12:] = 0  # the last image is padded on the right
            out[name] = m
        elif name == "hidden_states":
            out[name] = torch.randn(B, S, E, generator=g)
        elif name == "memory":
            out[name] = torch.randn(B, T, E, generator=g)
        elif name == "src":
            out[name] = torch.randn(S, B, E, generator=g)
        elif name == "tgt":
            out[name] = torch.randn(T, B, E, generator=g)
        elif name == "inputs":
            out[name] = torch.randn(B, S, PV_C, generator=g)
        elif name == "flattened_patches":
            # 1-based row and column ids of a grid four patches wide; padding is all zeros.
            i = torch.arange(S, dtype=torch.float32)
            ids = torch.stack([i // 4 + 1, i % 4 + 1], dim=-1).expand(B, S, 2)
            x = torch.cat([ids, torch.randn(B, S, P2S_P, generator=g)], dim=-1)
            x[-1, S - 3 :] = 0
            out[name] = x
        elif name == "patches":
            out[name] = torch.randn(B, S, PT_P, generator=g)
        elif name == "encoder_hidden_states":
            out[name] = torch.randn(B, T, CTX, generator=g)
        else:
            raise ValueError(name)
    return out


def dim_names(name, model=None):
    if (isinstance(model, DINOv2) or getattr(model, "any_image", False)) and name == "pixel_values":
        return ["batch", 3, "height", "width"]
    if isinstance(model, TimeSformer) and name == "pixel_values":
        return ["batch", TS_T, 3, 4 * TS_G, 4 * TS_G]
    if isinstance(model, Qwen2VL) and name == "position_ids":
        return [3, "batch", "sequence"]
    if isinstance(model, LlamaPast) and name == "attention_mask":
        return ["batch", "past_sequence + sequence"]  # optimum's naming: a sum
    if isinstance(model, (GPT2Past, LlamaPast)):
        if name == "attention_mask":
            return ["batch", "total_sequence"]
        if name in ("past_key", "past_value"):
            return [L, "batch", H, "past_sequence", D]
    return {
        "input_ids": ["batch", "sequence"],
        "attention_mask": ["batch", "sequence"],
        "position_ids": ["batch", "sequence"],
        "decoder_input_ids": ["batch", "decoder_sequence"],
        "pixel_values": ["batch", 3, 4 * SAM_GRID, 4 * SAM_GRID] if isinstance(model, SAMEncoder) else ["batch", 3, 16, 16],
        "pixel_mask": ["batch", 16, 16],
        "past_key": [L, "batch", H, "past_sequence", D],
        "past_value": [L, "batch", H, "past_sequence", D],
        "cross_key": [L, "batch", H, "sequence", D],
        "cross_value": [L, "batch", H, "sequence", D],
        "input_features": ["batch", MEL, "frames"],
        "input_values": ["batch", "samples"],
        "use_cache_branch": [],
        "hidden_states": ["batch", "sequence", E],
        "memory": ["batch", "memory_sequence", E],
        "src": ["sequence", "batch", E],
        "tgt": ["decoder_sequence", "batch", E],
        "inputs": ["batch", "sequence", PV_C],
        "patches": ["batch", "sequence", PT_P],
        "flattened_patches": ["batch", "sequence", 2 + P2S_P],
        "encoder_hidden_states": ["batch", "text_sequence", CTX],
    }[name]


def output_dims(model, name):
    if name in ("present_key", "present_value"):
        return [L, "batch", H, "total_sequence", D]
    if isinstance(model, Swin):
        return ["batch", SW_P * SW_P, E]
    if isinstance(model, Beit):
        return ["batch", BW * BW + 1, E]
    if isinstance(model, (Segformer, Detr)):
        return ["batch", 16, E]
    if isinstance(model, SDSpatial):
        return ["batch", E, 8, 8]
    if isinstance(model, SAMEncoder):
        return ["batch", E, SAM_GRID, SAM_GRID]
    if isinstance(model, (WhisperEncoder, Wav2Vec2)):
        return ["batch", "positions", E]
    if isinstance(model, TorchvisionViT):
        return ["batch", 17, E]
    if isinstance(model, SigLIP):
        return ["batch", E]
    if isinstance(model, DINOv2):
        return ["batch", "tokens", E]
    if isinstance(model, MobileViT):
        return ["batch", 64, E]
    if isinstance(model, Levit):
        return ["batch", LV_RES * LV_RES, E]
    if isinstance(model, CaiT):
        return ["batch", CA_N + 1, E]
    if isinstance(model, XCiT):
        return ["batch", CA_N, E]
    if isinstance(model, TimeSformer):
        return ["batch", 1 + TS_G * TS_G * TS_T, VE]
    if isinstance(model, Perceiver):
        return ["batch", PV_N, E]
    if isinstance(model, Mask2Former):
        return ["batch", M2F_N, E]
    if isinstance(model, DetrDecoder):
        return ["batch", DD_N, E]
    if isinstance(model, QFormerText):
        return ["batch", "queries_and_sequence", E]
    if isinstance(model, QFormer):
        return ["batch", QF_N, E]
    if isinstance(model, Funnel):
        return ["batch", "pooled_sequence", E]  # FunnelSeparateCls too
    if isinstance(model, TorchSeqFirst):
        return ["decoder_sequence", "batch", E]
    if isinstance(model, MaxViT):
        return ["batch", 64, E]
    if isinstance(model, (ViT, DeiT)):
        return ["batch", 17 if isinstance(model, ViT) else 18, E if isinstance(model, ViT) else VE]
    if name == "last_hidden_state" and isinstance(model, (Bart, T5EncDec, BartDecoderPast)):
        return ["batch", "decoder_sequence", E]
    return ["batch", "sequence", E]


def facts(model):
    """The architecture, read off the module tree."""
    att = [m for m in model.modules() if getattr(m, "is_attention", None) is True]
    near = [m for m in model.modules() if getattr(m, "is_attention", None) is False]
    norms = [m for m in model.modules() if isinstance(m, (nn.LayerNorm, RMSNorm, BiaslessLayerNorm))]
    ffn = [m for m in model.modules() if getattr(m, "is_ffn", False)]
    k = 2 if isinstance(model, GPT2Merged) else 1  # the model once in each branch of the If
    return {
        "layers": model.num_layers,
        "attention_blocks": k * len(att),
        "self_attention": k * sum(1 for m in att if m.kind == "self"),
        "cross_attention": k * sum(1 for m in att if m.kind == "cross"),
        "not_attention": len(near),
        "heads": (att or near)[0].heads,
        "kv_heads": min(m.kv_heads for m in (att or near)),
        "causal": any(m.causal for m in att),
        "norms": k * len(norms),
        "norm_kind": "rms" if all(isinstance(m, RMSNorm) for m in norms) else "layernorm",
        "ffn_activations": k * len(ffn),
        "gated_ffn": all(isinstance(m, Gated) or getattr(m, "gated", False) for m in ffn),
        "rotaries": k * sum(getattr(m, "rotaries", 0) for m in att + near),
    } | sink_facts(att)


def sink_facts(att):
    """Attention blocks with sinks (a logit per head joined to the scores), only where
    there are any: Attention-23 has no sink, so target=onnx leaves them decomposed."""
    n = sum(1 for m in att if getattr(m, "has_sinks", False))
    return {"sink_attention": n} if n else {}


def write_npz(path, arrays):
    """np.savez with a fixed member timestamp, so the bytes do not depend on the clock."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(arrays):
            buf = io.BytesIO()
            a = np.asarray(arrays[name])  # ascontiguousarray would make a scalar 1-D
            np.lib.format.write_array(buf, np.ascontiguousarray(a) if a.ndim else a, allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, buf.getvalue())


def manifest_json(entries):
    """One field a line, lists inline: short and easy to diff."""
    probes = []
    for e in entries:
        fields = ",\n".join(f"   {json.dumps(k)}: {json.dumps(v)}" for k, v in e.items())
        probes.append("  {\n" + fields + "\n  }")
    return '{\n "probes": [\n' + ",\n".join(probes) + "\n ]\n}\n"


def main():
    torch.use_deterministic_algorithms(True)
    manifest = []
    only = set(sys.argv[1:])
    for seed, (form, (ctor, opsets)) in enumerate(FORMS.items()):
        if only and form not in only:
            continue
        torch.manual_seed(1000 + seed)
        model = ctor()
        init_weights(model, 1000 + seed)
        model.eval()
        trace = make_inputs(model, TRACE_B, TRACE_S, TRACE_S - 3, 2000 + seed)
        fixed = getattr(model, "static", False)
        ref = trace if fixed else make_inputs(model, REF_B, REF_S, REF_T, 3000 + seed)
        fwd = [n for n in model.inputs if n != "use_cache_branch"]
        with torch.no_grad():
            out = model(**{n: ref[n] for n in fwd})
        if not isinstance(out, tuple):
            out = (out,)
        ref_out = {n: o.numpy() for n, o in zip(model.outputs, out)}
        for o in ref_out.values():
            assert np.isfinite(o).all(), form
        for opset in opsets:
            if getattr(model, "as_functions", False) and opset != opsets[0]:
                # The function extraction keeps state in the module: export a fresh copy.
                torch.manual_seed(1000 + seed)
                model = ctor()
                init_weights(model, 1000 + seed)
                model.eval()
            name = f"{form}.opset{opset}"
            path = os.path.join(HERE, name + ".onnx")
            dyn = {}
            for n in tuple(fwd) + model.outputs:
                dims = dim_names(n, model) if n in model.inputs else output_dims(model, n)
                if not fixed:
                    dyn[n] = {i: d for i, d in enumerate(dims) if isinstance(d, str)}
            with torch.no_grad():
                torch.onnx.export(model, tuple(trace[n] for n in fwd), path, opset_version=opset,
                                  input_names=list(fwd), output_names=list(model.outputs),
                                  dynamic_axes=dyn, do_constant_folding=True,
                                  export_modules_as_functions=getattr(model, "as_functions", False))
            if len(fwd) < len(model.inputs):
                wrap_in_if(path)
            if getattr(model, "as_functions", False):
                name_outputs(path, model.outputs)
            m = onnx.load(path)
            onnx.checker.check_model(m, full_check=True)
            write_npz(os.path.join(HERE, name + ".inputs.npz"), {n: t.numpy() for n, t in ref.items()})
            write_npz(os.path.join(HERE, name + ".outputs.npz"), ref_out)
            ins = []
            for n in model.inputs:
                dt = {torch.int64: "int64", torch.float32: "float32", torch.bool: "bool"}[ref[n].dtype]
                ins.append({"name": n, "dtype": dt, "shape": list(ref[n].shape) if fixed else dim_names(n, model)})
            outs = [{"name": n, "dtype": "float32", "shape": list(ref_out[n].shape) if fixed else output_dims(model, n)}
                    for n in model.outputs]
            entry = {"file": name + ".onnx", "form": form, "opset": opset, "inputs": ins, "outputs": outs}
            entry.update(facts(model))
            manifest.append(entry)
            print(f"{name}: {os.path.getsize(path)} bytes, {len(m.graph.node)} nodes", flush=True)
    if only:
        # Regenerating some forms keeps the other entries as they are.
        with open(os.path.join(HERE, "manifest.json")) as f:
            old = json.load(f)["probes"]
        manifest = [e for e in old if e["form"] not in only] + manifest
        order = list(FORMS)
        manifest.sort(key=lambda e: (order.index(e["form"]), e["opset"]))
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        f.write(manifest_json(manifest))


if __name__ == "__main__":
    main()
