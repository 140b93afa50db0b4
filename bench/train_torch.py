"""The bench-small stage-2 training step in PyTorch, fp32: the peer of bench/train-worker.ts.

  python3 bench/train_torch.py <threads> <warmup> <steps>   ->  one line of JSON: { "stepMs": [...], "maxRssKiB" }

The same shapes and the same work as ours (bench/train.ts): a frozen CLIP ViT-S/16-224 run to its second-to-last
block (LLaVA's mm_vision_select_layer -2) under no_grad, the mlp2x_gelu projector and a LLaMA-style LLM (RMSNorm,
RoPE, causal attention, SwiGLU) trained with AdamW on 2 sequences of 196 image rows + 188 tokens, HF's loss
(shifted cross-entropy, -100 ignored). Written in plain PyTorch the way HF's eager modules compute it (PyTorch 1.13
has no fused attention); random weights: only the time is compared.
"""
import json
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

threads, warmup, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)

V_HIDDEN, V_LAYERS, V_HEADS, V_FFN, PATCH, IMG = 384, 12, 6, 1536, 16, 224
L_HIDDEN, L_LAYERS, L_HEADS, L_FFN, VOCAB = 512, 8, 8, 1376, 32000
BATCH, TEXT = 2, 188
NP = (IMG // PATCH) ** 2


class VitBlock(nn.Module):
    def __init__(s):
        super().__init__()
        s.ln1, s.ln2 = nn.LayerNorm(V_HIDDEN), nn.LayerNorm(V_HIDDEN)
        s.q, s.k, s.v, s.o = (nn.Linear(V_HIDDEN, V_HIDDEN) for _ in range(4))
        s.fc1, s.fc2 = nn.Linear(V_HIDDEN, V_FFN), nn.Linear(V_FFN, V_HIDDEN)

    def forward(s, x):
        B, T, D = x.shape
        h = s.ln1(x)
        sh = lambda t: t.view(B, T, V_HEADS, D // V_HEADS).transpose(1, 2)
        q, k, v = sh(s.q(h)), sh(s.k(h)), sh(s.v(h))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // V_HEADS), -1) @ v
        x = x + s.o(a.transpose(1, 2).reshape(B, T, D))
        f = s.fc1(s.ln2(x))
        return x + s.fc2(f * torch.sigmoid(1.702 * f))


class Tower(nn.Module):
    def __init__(s):
        super().__init__()
        s.patch = nn.Conv2d(3, V_HIDDEN, PATCH, PATCH, bias=False)
        s.cls = nn.Parameter(torch.randn(V_HIDDEN))
        s.pos = nn.Parameter(torch.randn(NP + 1, V_HIDDEN))
        s.pre = nn.LayerNorm(V_HIDDEN)
        s.blocks = nn.ModuleList(VitBlock() for _ in range(V_LAYERS - 1))  # select_layer -2

    def forward(s, px):
        x = s.patch(px).flatten(2).transpose(1, 2)
        x = torch.cat([s.cls.expand(x.shape[0], 1, -1), x], 1) + s.pos
        x = s.pre(x)
        for b in s.blocks:
            x = b(x)
        return x[:, 1:]


class RMSNorm(nn.Module):
    def __init__(s, d):
        super().__init__()
        s.w = nn.Parameter(torch.ones(d))

    def forward(s, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * s.w


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], -1) * sin


class Layer(nn.Module):
    def __init__(s):
        super().__init__()
        s.n1, s.n2 = RMSNorm(L_HIDDEN), RMSNorm(L_HIDDEN)
        s.q, s.k, s.v, s.o = (nn.Linear(L_HIDDEN, L_HIDDEN, bias=False) for _ in range(4))
        s.gate, s.up = nn.Linear(L_HIDDEN, L_FFN, bias=False), nn.Linear(L_HIDDEN, L_FFN, bias=False)
        s.down = nn.Linear(L_FFN, L_HIDDEN, bias=False)

    def forward(s, x, cos, sin, mask):
        B, T, D = x.shape
        hd = D // L_HEADS
        h = s.n1(x)
        sh = lambda t: t.view(B, T, L_HEADS, hd).transpose(1, 2)
        q, k, v = rope(sh(s.q(h)), cos, sin), rope(sh(s.k(h)), cos, sin), sh(s.v(h))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1) @ v
        x = x + s.o(a.transpose(1, 2).reshape(B, T, D))
        h = s.n2(x)
        return x + s.down(F.silu(s.gate(h)) * s.up(h))


class Llm(nn.Module):
    def __init__(s):
        super().__init__()
        s.embed = nn.Embedding(VOCAB, L_HIDDEN)
        s.layers = nn.ModuleList(Layer() for _ in range(L_LAYERS))
        s.norm = RMSNorm(L_HIDDEN)
        s.head = nn.Linear(L_HIDDEN, VOCAB, bias=False)


tower = Tower().eval()
for p in tower.parameters():
    p.requires_grad_(False)
proj = nn.Sequential(nn.Linear(V_HIDDEN, L_HIDDEN), nn.GELU(), nn.Linear(L_HIDDEN, L_HIDDEN))
llm = Llm()
params = list(proj.parameters()) + list(llm.parameters())
decay = [p for n, p in list(proj.named_parameters()) + list(llm.named_parameters()) if p.dim() >= 2]
no_decay = [p for n, p in list(proj.named_parameters()) + list(llm.named_parameters()) if p.dim() < 2]
opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.0}, {'params': no_decay, 'weight_decay': 0.0}], lr=2e-5, foreach=False)

T = NP + TEXT
pos = torch.arange(T, dtype=torch.float32)
inv = 10000.0 ** (-torch.arange(0, L_HIDDEN // L_HEADS, 2, dtype=torch.float32) / (L_HIDDEN // L_HEADS))
ang = torch.outer(pos, inv)
cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
mask = torch.full((T, T), float('-inf')).triu(1)
g = torch.Generator().manual_seed(1)
pixels = torch.randn(BATCH, 3, IMG, IMG, generator=g)
text = torch.randint(3, VOCAB, (BATCH, TEXT), generator=g)
labels = torch.cat([torch.full((BATCH, NP + 1), -100), text[:, 1:]], 1)  # the prompt's first token and the image masked


def step():
    with torch.no_grad():
        feats = tower(pixels)
    x = torch.cat([llm.embed(text[:, :1]), proj(feats), llm.embed(text[:, 1:])], 1)
    for layer in llm.layers:
        x = layer(x, cos, sin, mask)
    logits = llm.head(llm.norm(x))
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss.item()


def blas():
    # the BLAS this process actually mapped (Debian's python3-torch links libblas.so.3, an alternative)
    with open('/proc/self/maps') as f:
        maps = f.read()
    return 'OpenBLAS' if 'openblas' in maps else 'reference BLAS (install libopenblas0-pthread)' if 'libblas' in maps else 'unknown BLAS'


for _ in range(warmup):
    step()
times = []
for _ in range(steps):
    t0 = time.perf_counter()
    step()
    times.append((time.perf_counter() - t0) * 1000)
print(json.dumps({'stepMs': times, 'maxRssKiB': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  'trainable': sum(p.numel() for p in params), 'torch': torch.__version__,
                  'blas': blas()}))
