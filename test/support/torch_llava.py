#!/usr/bin/env python3
"""
An independent float64 PyTorch reference of medllava's LLaVA training step: the loss (HF
LlamaForCausalLM's shifted cross-entropy, mean over every non-ignored target of the batch), its
gradients, and optionally n torch.optim.AdamW steps (with clip_grad_norm_). Written from the
definitions (HF CLIPVisionModel / timm ViT, LLaVA's projector and image splicing, HF LLaMA /
Mistral), not from our engine's code: tests compare the native trainer against it.

Usage:   /usr/bin/python3 test/support/torch_llava.py < input.json > output.json
Errors:  exit status 1 and one line "torch_llava: <why>" on stderr.

Input: one JSON object on stdin
{
  "llm": {"hidden", "layers", "heads", "kvHeads", "ffn", "vocab", "ropeTheta", "rmsEps", "ropeMode"?: "half" | "adjacent"},
  "vision": null | {
     "kind": "clip" | "timm-vit", "imageSize", "patchSize", "hidden", "layers", "heads", "ffn",
     "selectLayer",                       # LLaVA's mm_vision_select_layer (−2: the first layers−1 blocks run)
     "selectFeature": "patch" | "cls_patch",
     "layerNormEps", "activation": "quick_gelu" | "gelu",
     "timm": {"prefix", "layerScale", "preNorm"}        # optional; informative (the names decide)
  },
  "projector": {"type": "linear" | "mlp2x_gelu"},
  "lora": null | {"scale": alpha / r},  # every LoRA pair listed in names: W x + scale · B (A x)
  "imStartEnd": null | [idStart, idEnd],# each image's rows become [idStart] + rows + [idEnd]
  "paramsBin": "/path/params.bin",      # every parameter, float32 little-endian, concatenated
  "params": [{"name", "shape": [...], "offset": <index in floats into paramsBin>}],
  "names": {                            # role → param name (names of "params")
    "llm": {
      "embed", "norm", "lmHead",        # a tied lm_head: lmHead = embed (its gradient sums both uses)
      "lmHeadLora": {"a", "b"},         # optional
      "layers": [{                      # one per LLM layer, in order
        "attnNorm", "wq", "wk", "wv", "wo", "ffnNorm", "wGate", "wUp", "wDown",
        "lora": {"wq": {"a", "b"}, "wk": …, "wv": …, "wo": …, "wGate": …, "wUp": …, "wDown": …}  # optional, any subset
      }]
    },
    "vision": {                         # absent / null when "vision" is null
      "patch",                          # the conv weight (hidden, 3, p, p): a linear over (c, y, x) patches
      "patchBias"?,                     # timm's conv bias (CLIP has none)
      "cls",                            # (hidden) or (1, 1, hidden)
      "pos",                            # (tokens, hidden) or (1, tokens, hidden)
      "preW"?, "preB"?,                 # CLIP's pre_layrnorm / timm's norm_pre: present ⇔ the tower has one
      "layers": [{                      # ONLY the blocks LLaVA runs (select_layer −2 of L → the first L−1)
        "ln1W", "ln1B",
        "qW", "qB", "kW", "kB", "vW", "vB"   # separate q/k/v (CLIP) …
          | "qkvW", "qkvB",                  # … or fused, rows q | k | v (timm)
        "oW", "oB", "ln2W", "ln2B", "fc1W", "fc1B", "fc2W", "fc2B",
        "ls1"?, "ls2"?                  # LayerScale gammas (hidden)
      }],                               # every bias is optional (absent: no bias)
      "proj0W", "proj0B",               # linear projector, or mlp2x_gelu's first Linear
      "proj2W"?, "proj2B"?              # mlp2x_gelu's second Linear
    }
  },
  "examples": [{"inputIds": [...],      # −200 marks an image: the k-th −200 takes pixels[k]
                "labels": [...],        # same length as inputIds; −100 = ignored
                "pixels": [[3·S·S floats, normalised, (c, y, x) order], ...]}],
  "trainable": ["param name", ...],     # gradients (and AdamW updates) for these
  "sampleWeights": null | [w per example],
  "adamw": null | {"steps": n, "lr", "betas": [b1, b2], "eps", "weightDecay",
                   "noDecay": ["param name", ...], "maxGradNorm": number | null,
                   "lrs": {"param name": lr}}   # lrs optional: per-param learning rates
}

Output: one JSON object on stdout
{
  "loss": float,                        # of the initial weights
  "tokens": int,                        # non-ignored targets (after the shift) in the batch
  "grads": {name: [flat row-major floats]},   # d loss / d param for every trainable param, initial weights
  # only with "adamw":
  "losses": [loss of step 1 .. n, each before its update],
  "gradNorms": [global L2 norm of the trainable grads of step 1 .. n, before clipping],
  "finalLoss": float,                   # the loss after the n-th update
  "finalParams": {name: [flat floats]}  # the trainable params after the n-th update
}

Semantics:
- Vision (per image, on its own): the image's p×p patches in (c, y, x) order, row-major over the grid
  → patch linear (+ patchBias) → [cls; patches] + pos → pre-LayerNorm when preW is named → the listed
  pre-LN blocks: x += (ls1 ⊙) o(attn(LN1 x)); x += (ls2 ⊙) fc2(act(fc1(LN2 x))); full (non-causal)
  multi-head attention softmax(q·kᵀ/√hd) v → drop the class row unless selectFeature is cls_patch →
  projector: Linear, or Linear → exact GELU (erf) → Linear. act: quick_gelu x·σ(1.702x) or exact GELU.
- LLM input: each −200 of inputIds becomes that image's projector rows ([idStart] + rows + [idEnd]
  with imStartEnd: the frame tokens are ordinary embedding rows); labels take −100 at every inserted
  position. Each example runs alone (no padding), positions 0 … T−1.
- LLM: embed → layers (RMSNorm x·w/√(mean x² + eps); q, k, v (+ LoRA); RoPE with HF's rotate_half
  pairing (i, i + hd/2), angle pos·θ^(−2i/hd); causal GQA attention, head h reads kv head
  h // (heads / kvHeads); o; residual; RMSNorm; down(silu(gate) · up); residual) → RMSNorm → lm_head.
- Loss: logits[t] predicts labels[t+1]; Σ over examples and non-ignored targets of
  weight(example) · (−log p(target)), divided by the count of non-ignored targets (weight 1 without
  sampleWeights). A batch with no target is an error (HF's mean would be NaN).
- AdamW: torch.optim.AdamW, one param group per trainable param: lr = lrs[name] or lr,
  weight_decay = 0 for names in noDecay, else weightDecay. Each step: zero grads, forward, record the
  loss, backward, record the global grad norm, clip_grad_norm_(trainable, maxGradNorm) when it is a
  number, step. A trainable param the loss does not reach gets a zero gradient (not None), so AdamW
  still decays it.
- All float64: the float32 params are widened on load.
"""
import json
import math
import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
F = torch.nn.functional

IMAGE = -200
IGNORE = -100
LORA_ROLES = ('wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown')


class InputError(Exception):
    pass


def need(obj, key, where):
    if not isinstance(obj, dict) or key not in obj or obj[key] is None:
        raise InputError('%s: missing "%s"' % (where, key))
    return obj[key]


def load_params(spec):
    """name → float64 tensor (no grad), from the float32 paramsBin."""
    path = need(spec, 'paramsBin', 'input')
    raw = np.fromfile(path, dtype='<f4')
    P = {}
    for p in need(spec, 'params', 'input'):
        name, shape, off = p['name'], [int(d) for d in p['shape']], int(p['offset'])
        n = int(np.prod(shape)) if shape else 1
        if off < 0 or off + n > raw.size:
            raise InputError('param %s: floats [%d, %d) lie outside %s (%d floats)' % (name, off, off + n, path, raw.size))
        if name in P:
            raise InputError('param %s listed twice' % name)
        P[name] = torch.from_numpy(raw[off:off + n].astype(np.float64)).reshape(shape)
    return P


class Model:
    """The LLaVA forward over a dict of float64 params (name → tensor), from the input's config and names."""

    def __init__(self, spec):
        self.c = need(spec, 'llm', 'input')
        self.v = spec.get('vision')
        self.proj_type = need(need(spec, 'projector', 'input'), 'type', 'projector')
        self.lora_scale = float(spec['lora']['scale']) if spec.get('lora') else None
        # LoRA dropout with medllava's mask (native/ops/dropout.h), so that both sides drop the same elements:
        # {"p", "T": the batch's padded length, "seeds": {lora_A name: the linear's seed, decimal}}
        self.dropout = spec.get('loraDropout')
        self.example = 0
        self.frame = spec.get('imStartEnd')
        names = need(spec, 'names', 'input')
        self.nl = need(names, 'llm', 'names')
        self.nv = names.get('vision')
        if self.proj_type not in ('linear', 'mlp2x_gelu'):
            raise InputError('projector.type must be linear or mlp2x_gelu, got %r' % self.proj_type)
        if len(self.nl['layers']) != int(self.c['layers']):
            raise InputError('names.llm.layers has %d layers, llm.layers is %d' % (len(self.nl['layers']), self.c['layers']))
        has_lora = any(L.get('lora') for L in self.nl['layers']) or bool(self.nl.get('lmHeadLora'))
        if has_lora and self.lora_scale is None:
            raise InputError('names list LoRA pairs but "lora" is null')
        if self.v is not None:
            if not self.nv:
                raise InputError('"vision" is given but names.vision is not')
            v = self.v
            sel = int(v['selectLayer'])
            runs = sel if sel >= 0 else int(v['layers']) + 1 + sel
            if len(self.nv['layers']) != runs:
                raise InputError('names.vision.layers lists %d blocks; select_layer %d of %d layers runs %d'
                                 % (len(self.nv['layers']), sel, v['layers'], runs))
            if v['selectFeature'] not in ('patch', 'cls_patch'):
                raise InputError('vision.selectFeature must be patch or cls_patch')
            if v['activation'] not in ('quick_gelu', 'gelu'):
                raise InputError('vision.activation must be quick_gelu or gelu')
            if v['kind'] == 'clip' and not self.nv.get('preW'):
                raise InputError('a CLIP tower has a pre-LayerNorm: names.vision.preW is missing')
            timm = v.get('timm')
            if v['kind'] == 'timm-vit' and timm is not None and bool(timm.get('preNorm')) != bool(self.nv.get('preW')):
                raise InputError('vision.timm.preNorm disagrees with names.vision.preW')
            if (self.proj_type == 'mlp2x_gelu') != bool(self.nv.get('proj2W')):
                raise InputError('names.vision.proj2W must be given exactly for an mlp2x_gelu projector')

    # ---- shape checks (clear messages for a test's setup mistakes) --------------------------------
    def check(self, P):
        c = self.c
        D, H, KV, FF, V = (int(c[k]) for k in ('hidden', 'heads', 'kvHeads', 'ffn', 'vocab'))
        if D % H or H % KV or (D // H) % 2:
            raise InputError('llm: hidden %d, heads %d, kvHeads %d do not split' % (D, H, KV))
        kvd = KV * (D // H)

        def expect(name, shape, role):
            if name not in P:
                raise InputError('%s: no param named %r' % (role, name))
            if list(P[name].shape) != list(shape):
                raise InputError('%s (%s): shape %s, expected %s' % (role, name, list(P[name].shape), list(shape)))

        expect(self.nl['embed'], [V, D], 'llm.embed')
        expect(self.nl['norm'], [D], 'llm.norm')
        expect(self.nl['lmHead'], [V, D], 'llm.lmHead')
        dims = {'wq': (D, D), 'wk': (kvd, D), 'wv': (kvd, D), 'wo': (D, D), 'wGate': (FF, D), 'wUp': (FF, D), 'wDown': (D, FF)}
        for l, L in enumerate(self.nl['layers']):
            expect(L['attnNorm'], [D], 'llm.layers[%d].attnNorm' % l)
            expect(L['ffnNorm'], [D], 'llm.layers[%d].ffnNorm' % l)
            for role, (o, i) in dims.items():
                expect(L[role], [o, i], 'llm.layers[%d].%s' % (l, role))
            for role, pair in (L.get('lora') or {}).items():
                if role not in dims:
                    raise InputError('llm.layers[%d].lora: unknown role %r' % (l, role))
                o, i = dims[role]
                if pair['a'] not in P or pair['b'] not in P:
                    raise InputError('llm.layers[%d].lora.%s: unknown param' % (l, role))
                r = P[pair['a']].shape[0]
                expect(pair['a'], [r, i], 'llm.layers[%d].lora.%s.a' % (l, role))
                expect(pair['b'], [o, r], 'llm.layers[%d].lora.%s.b' % (l, role))
        if self.v is None:
            return
        v, nv = self.v, self.nv
        Dv, p, S, FFv, Hv = (int(v[k]) for k in ('hidden', 'patchSize', 'imageSize', 'ffn', 'heads'))
        if S % p or Dv % Hv:
            raise InputError('vision: imageSize %d / patchSize %d or hidden %d / heads %d do not divide' % (S, p, Dv, Hv))
        T = (S // p) ** 2 + 1
        expect(nv['patch'], [Dv, 3, p, p], 'vision.patch')
        if nv.get('patchBias'):
            expect(nv['patchBias'], [Dv], 'vision.patchBias')
        for role, n in (('cls', Dv), ('pos', T * Dv)):
            if nv[role] not in P or P[nv[role]].numel() != n:
                raise InputError('vision.%s (%s): expected %d values' % (role, nv[role], n))
        if nv.get('preW'):
            expect(nv['preW'], [Dv], 'vision.preW')
            expect(nv['preB'], [Dv], 'vision.preB')
        for l, L in enumerate(nv['layers']):
            w = 'vision.layers[%d].' % l
            opt = lambda role, shape: expect(L[role], shape, w + role) if L.get(role) else None
            if L.get('qkvW'):
                expect(L['qkvW'], [3 * Dv, Dv], w + 'qkvW')
                opt('qkvB', [3 * Dv])
            else:
                for x in 'qkv':
                    expect(L[x + 'W'], [Dv, Dv], w + x + 'W')
                    opt(x + 'B', [Dv])
            expect(L['oW'], [Dv, Dv], w + 'oW')
            expect(L['fc1W'], [FFv, Dv], w + 'fc1W')
            expect(L['fc2W'], [Dv, FFv], w + 'fc2W')
            for role, shape in (('oB', [Dv]), ('fc1B', [FFv]), ('fc2B', [Dv]), ('ln1B', [Dv]), ('ln2B', [Dv]), ('ls1', [Dv]), ('ls2', [Dv])):
                opt(role, shape)
            expect(L['ln1W'], [Dv], w + 'ln1W')
            expect(L['ln2W'], [Dv], w + 'ln2W')
        expect(nv['proj0W'], [D, Dv], 'vision.proj0W')
        if nv.get('proj0B'):
            expect(nv['proj0B'], [D], 'vision.proj0B')
        if self.proj_type == 'mlp2x_gelu':
            expect(nv['proj2W'], [D, D], 'vision.proj2W')
            if nv.get('proj2B'):
                expect(nv['proj2B'], [D], 'vision.proj2B')

    # ---- vision tower + projector -----------------------------------------------------------------
    def image_rows(self, P, pixels):
        v, nv = self.v, self.nv
        S, p, D, H = int(v['imageSize']), int(v['patchSize']), int(v['hidden']), int(v['heads'])
        eps, hd, g = float(v['layerNormEps']), D // H, S // p
        get = lambda name: P[name] if name else None
        if len(pixels) != 3 * S * S:
            raise InputError('an image has %d values, expected 3·%d·%d' % (len(pixels), S, S))
        x = torch.tensor(pixels, dtype=torch.float64).reshape(3, g, p, g, p)
        cols = x.permute(1, 3, 0, 2, 4).reshape(g * g, 3 * p * p)  # patch (gy, gx), values (c, y, x)
        h = F.linear(cols, P[nv['patch']].reshape(D, 3 * p * p), get(nv.get('patchBias')))
        h = torch.cat([P[nv['cls']].reshape(1, D), h]) + P[nv['pos']].reshape(g * g + 1, D)
        ln = lambda t, w, b: F.layer_norm(t, (D,), P[w], get(b), eps)
        if nv.get('preW'):
            h = ln(h, nv['preW'], nv.get('preB'))
        act = (lambda t: t * torch.sigmoid(1.702 * t)) if v['activation'] == 'quick_gelu' else (lambda t: F.gelu(t))
        T = h.shape[0]
        for L in nv['layers']:
            a = ln(h, L['ln1W'], L.get('ln1B'))
            if L.get('qkvW'):
                qkv = F.linear(a, P[L['qkvW']], get(L.get('qkvB')))
                q, k, vv = qkv[:, :D], qkv[:, D:2 * D], qkv[:, 2 * D:]
            else:
                q, k, vv = (F.linear(a, P[L[x + 'W']], get(L.get(x + 'B'))) for x in 'qkv')
            q, k, vv = (t.reshape(T, H, hd).transpose(0, 1) for t in (q, k, vv))
            att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), dim=-1) @ vv
            o = F.linear(att.transpose(0, 1).reshape(T, D), P[L['oW']], get(L.get('oB')))
            h = h + (P[L['ls1']] * o if L.get('ls1') else o)
            m = F.linear(act(F.linear(ln(h, L['ln2W'], L.get('ln2B')), P[L['fc1W']], get(L.get('fc1B')))),
                         P[L['fc2W']], get(L.get('fc2B')))
            h = h + (P[L['ls2']] * m if L.get('ls2') else m)
        if v['selectFeature'] == 'patch':
            h = h[1:]
        y = F.linear(h, P[nv['proj0W']], get(nv.get('proj0B')))
        if self.proj_type == 'mlp2x_gelu':
            y = F.linear(F.gelu(y), P[nv['proj2W']], get(nv.get('proj2B')))
        return y

    # ---- the language model -----------------------------------------------------------------------
    def linear(self, P, x, w, pair):
        y = x @ P[w].T
        if pair:
            xa = x
            if self.dropout and self.dropout['p'] > 0:
                T, n = x.shape
                rows = self.example * int(self.dropout['T']) + np.arange(T, dtype=np.uint64)
                idx = (rows[:, None] * np.uint64(n) + np.arange(n, dtype=np.uint64)[None, :]).reshape(-1)
                keep = dropout_keep(int(self.dropout['seeds'][pair['a']]), idx, float(self.dropout['p'])).reshape(T, n)
                xa = x * torch.tensor(keep, dtype=x.dtype) / (1.0 - float(np.float32(self.dropout['p'])))
            y = y + self.lora_scale * ((xa @ P[pair['a']].T) @ P[pair['b']].T)
        return y

    def logits(self, P, x):
        c = self.c
        D, H, KV, eps = int(c['hidden']), int(c['heads']), int(c['kvHeads']), float(c['rmsEps'])
        hd, T = D // H, x.shape[0]
        rms = lambda t, w: t * torch.rsqrt((t * t).mean(-1, keepdim=True) + eps) * P[w]
        i = torch.arange(hd // 2, dtype=torch.float64)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * float(c['ropeTheta']) ** (-2 * i / hd)[None, :]
        cos, sin = torch.cos(ang).repeat(1, 2), torch.sin(ang).repeat(1, 2)  # (T, hd): index i and i + hd/2 share an angle

        def rope(t):  # (heads, T, hd): HF rotate_half, or llama.cpp's adjacent pairs (2i, 2i+1) on GGUF's permuted rows
            if c.get('ropeMode', 'half') == 'adjacent':
                a = ang[None]  # (1, T, hd/2)
                x0, x1 = t[..., 0::2], t[..., 1::2]
                return torch.stack([x0 * torch.cos(a) - x1 * torch.sin(a), x1 * torch.cos(a) + x0 * torch.sin(a)], dim=-1).reshape(t.shape)
            rot = torch.cat([-t[..., hd // 2:], t[..., :hd // 2]], dim=-1)
            return t * cos + rot * sin

        future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        for L in self.nl['layers']:
            lo = L.get('lora') or {}
            lin = lambda t, role: self.linear(P, t, L[role], lo.get(role))
            h = rms(x, L['attnNorm'])
            q = rope(lin(h, 'wq').reshape(T, H, hd).transpose(0, 1))
            k = rope(lin(h, 'wk').reshape(T, KV, hd).transpose(0, 1)).repeat_interleave(H // KV, dim=0)
            vv = lin(h, 'wv').reshape(T, KV, hd).transpose(0, 1).repeat_interleave(H // KV, dim=0)
            s = (q @ k.transpose(1, 2) / math.sqrt(hd)).masked_fill(future, float('-inf'))
            att = (torch.softmax(s, dim=-1) @ vv).transpose(0, 1).reshape(T, D)
            x = x + lin(att, 'wo')
            h2 = rms(x, L['ffnNorm'])
            x = x + lin(F.silu(lin(h2, 'wGate')) * lin(h2, 'wUp'), 'wDown')
        return self.linear(P, rms(x, self.nl['norm']), self.nl['lmHead'], self.nl.get('lmHeadLora'))

    def expand(self, P, ex):
        """The example's (T, hidden) input rows and its labels after splicing the images in."""
        ids, labels, pixels = ex['inputIds'], ex['labels'], ex.get('pixels') or []
        if len(ids) != len(labels):
            raise InputError('an example has %d inputIds and %d labels' % (len(ids), len(labels)))
        n_img = sum(1 for t in ids if t == IMAGE)
        if n_img != len(pixels):
            raise InputError('an example has %d image tokens and %d images' % (n_img, len(pixels)))
        if n_img and self.v is None:
            raise InputError('an example has an image but "vision" is null')
        V = int(self.c['vocab'])
        embed = P[self.nl['embed']]
        parts, lab, run, k = [], [], [], 0

        def flush():
            if run:
                parts.append(embed[torch.tensor(run, dtype=torch.long)])
                run.clear()

        for t, y in zip(ids, labels):
            if y != IGNORE and not 0 <= y < V:
                raise InputError('label %d outside [0, %d)' % (y, V))
            if t == IMAGE:
                rows = self.image_rows(P, pixels[k])
                k += 1
                if self.frame:
                    run.append(int(self.frame[0]))
                flush()
                parts.append(rows)
                lab += [IGNORE] * (rows.shape[0] + (2 if self.frame else 0))
                if self.frame:
                    run.append(int(self.frame[1]))
            else:
                if not 0 <= t < V:
                    raise InputError('token %d outside [0, %d)' % (t, V))
                run.append(int(t))
                lab.append(int(y))
        flush()
        return torch.cat(parts), lab

    def loss(self, P, examples, weights=None):
        """(mean loss over the batch's non-ignored targets, their count)"""
        total, count = 0.0, 0
        for e, ex in enumerate(examples):
            self.example = e
            x, lab = self.expand(P, ex)
            tgt = torch.tensor(lab[1:], dtype=torch.long)
            keep = tgt != IGNORE
            n = int(keep.sum())
            if n == 0:
                continue
            logp = torch.log_softmax(self.logits(P, x)[:-1], dim=-1)
            nll = -logp[keep].gather(1, tgt[keep][:, None]).sum()
            total = total + (float(weights[e]) if weights is not None else 1.0) * nll
            count += n
        if count == 0:
            raise InputError('the batch has no target that is not -100')
        return total / count, count


M32 = np.uint64(0xFFFFFFFF)


def mix32(x):
    """lowbias32 on uint64 arrays holding 32-bit values (native/ops/dropout.h: dropout_mix32)"""
    x = x & M32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7feb352d)) & M32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846ca68b)) & M32
    x ^= x >> np.uint64(16)
    return x


def dropout_keep(seed, idx, p):
    """dropout_keep(seed, i, p) for an array of element indices i (uint64)"""
    seed = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    s = mix32(np.uint64(int(seed) & 0xFFFFFFFF) ^ mix32(np.uint64(int(seed) >> 32)))
    h = mix32((idx & M32) ^ mix32((idx >> np.uint64(32)) ^ s))
    u = (h >> np.uint64(8)).astype(np.float32) * np.float32(1.0 / 16777216.0)
    return u >= np.float32(p)


def flat(t):
    return t.detach().reshape(-1).tolist()


def run(spec):
    P = load_params(spec)
    model = Model(spec)
    model.check(P)
    examples = need(spec, 'examples', 'input')
    weights = spec.get('sampleWeights')
    if weights is not None and len(weights) != len(examples):
        raise InputError('sampleWeights has %d weights for %d examples' % (len(weights), len(examples)))
    trainable = list(dict.fromkeys(need(spec, 'trainable', 'input')))
    for n in trainable:
        if n not in P:
            raise InputError('trainable: no param named %r' % n)
        P[n].requires_grad_(True)
    params = [P[n] for n in trainable]

    def forward_backward():
        for p in params:
            p.grad = None
        loss, count = model.loss(P, examples, weights)
        if params:
            loss.backward()
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return loss, count

    ad = spec.get('adamw')
    if not ad:
        loss, count = forward_backward()
        return {'loss': loss.item(), 'tokens': count, 'grads': {n: flat(P[n].grad) for n in trainable}}

    lr = float(ad['lr'])
    lrs = ad.get('lrs') or {}
    no_decay = set(ad.get('noDecay') or [])
    for n in list(lrs) + list(no_decay):
        if n not in P:
            raise InputError('adamw: no param named %r' % n)
    groups = [{'params': [P[n]], 'lr': float(lrs.get(n, lr)),
               'weight_decay': 0.0 if n in no_decay else float(ad['weightDecay'])} for n in trainable]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(float(ad['betas'][0]), float(ad['betas'][1])), eps=float(ad['eps']),
                            weight_decay=float(ad['weightDecay']), foreach=False)
    max_norm = ad.get('maxGradNorm')
    out = {'losses': [], 'gradNorms': []}
    for step in range(int(ad['steps'])):
        opt.zero_grad()
        loss, count = forward_backward()
        if step == 0:
            out.update(loss=loss.item(), tokens=count, grads={n: flat(P[n].grad) for n in trainable})
        out['losses'].append(loss.item())
        if max_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, float(max_norm))
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])) if params else torch.zeros(())
        out['gradNorms'].append(float(norm))
        opt.step()
    with torch.no_grad():
        final, count = model.loss(P, examples, weights)
    if 'loss' not in out:  # steps = 0
        loss, count = forward_backward()
        out.update(loss=loss.item(), tokens=count, grads={n: flat(P[n].grad) for n in trainable})
    out['finalLoss'] = final.item()
    out['finalParams'] = {n: flat(P[n]) for n in trainable}
    return out


def main():
    try:
        spec = json.load(sys.stdin)
        out = run(spec)
        text = json.dumps(out, allow_nan=False)
    except (InputError, KeyError, ValueError, TypeError) as e:
        kind = 'missing key ' if isinstance(e, KeyError) else ''
        sys.stderr.write('torch_llava: %s%s\n' % (kind, e))
        sys.exit(1)
    sys.stdout.write(text + '\n')


if __name__ == '__main__':
    main()
