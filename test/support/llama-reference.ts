/**
 * A float64 LLaMA / Mistral forward pass written from the HF modeling code's definitions
 * (RMSNorm, rotate-half RoPE, grouped-query causal attention, SwiGLU), over HF-named weights.
 * Slow and simple: the reference that GGUF layouts and our engine are checked against.
 */
export interface LlamaWeights {
  get(name: string): Float64Array;
}
export interface LlamaDims {
  hidden: number; layers: number; heads: number; kvHeads: number; ffn: number; vocab: number; ropeTheta: number; rmsEps: number;
}

function matvec(w: Float64Array, x: Float64Array, rows: number, cols: number): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += w[r * cols + c]! * x[c]!;
    y[r] = s;
  }
  return y;
}

function rmsnorm(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const k = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * k * w[i]!);
}

/** Log-probabilities of the next token after `tokens`. `rope: 'interleaved'` is the wrong (GPT-J)
 * convention, for tests that must tell the two apart. */
export function llamaNextLogProbs(W: LlamaWeights, d: LlamaDims, tokens: number[],
  rope: 'half' | 'interleaved' = 'half', embeddings?: Map<number, Float64Array>): Float64Array {
  const hd = d.hidden / d.heads;
  const group = d.heads / d.kvHeads;
  const embed = W.get('model.embed_tokens.weight');
  // positions listed in `embeddings` take those rows (LLaVA's spliced image features)
  let xs = tokens.map((t, i) => embeddings?.get(i) ?? embed.slice(t * d.hidden, (t + 1) * d.hidden));
  const rotate = (v: Float64Array, pos: number) => {
    const out = new Float64Array(v.length);
    for (let h = 0; h < v.length / hd; h++) {
      for (let i = 0; i < hd / 2; i++) {
        const f = pos * d.ropeTheta ** (-2 * i / hd);
        const [a, b] = rope === 'half' ? [h * hd + i, h * hd + i + hd / 2] : [h * hd + 2 * i, h * hd + 2 * i + 1];
        out[a] = v[a]! * Math.cos(f) - v[b]! * Math.sin(f);
        out[b] = v[b]! * Math.cos(f) + v[a]! * Math.sin(f);
      }
    }
    return out;
  };
  for (let l = 0; l < d.layers; l++) {
    const p = `model.layers.${l}`;
    const wq = W.get(`${p}.self_attn.q_proj.weight`);
    const wk = W.get(`${p}.self_attn.k_proj.weight`);
    const wv = W.get(`${p}.self_attn.v_proj.weight`);
    const wo = W.get(`${p}.self_attn.o_proj.weight`);
    const hs = xs.map((x) => rmsnorm(x, W.get(`${p}.input_layernorm.weight`), d.rmsEps));
    const q = hs.map((h, pos) => rotate(matvec(wq, h, d.heads * hd, d.hidden), pos));
    const k = hs.map((h, pos) => rotate(matvec(wk, h, d.kvHeads * hd, d.hidden), pos));
    const v = hs.map((h) => matvec(wv, h, d.kvHeads * hd, d.hidden));
    xs = xs.map((x, t) => {
      const attn = new Float64Array(d.heads * hd);
      for (let h = 0; h < d.heads; h++) {
        const kvh = Math.floor(h / group);
        const scores = [];
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let i = 0; i < hd; i++) dot += q[t]![h * hd + i]! * k[s]![kvh * hd + i]!;
          scores.push(dot / Math.sqrt(hd));
        }
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let s = 0; s <= t; s++) for (let i = 0; i < hd; i++) attn[h * hd + i]! += (e[s]! / z) * v[s]![kvh * hd + i]!;
      }
      const o = matvec(wo, attn, d.hidden, d.heads * hd);
      const y = x.map((xv, i) => xv + o[i]!);
      const h2 = rmsnorm(y, W.get(`${p}.post_attention_layernorm.weight`), d.rmsEps);
      const g = matvec(W.get(`${p}.mlp.gate_proj.weight`), h2, d.ffn, d.hidden);
      const u = matvec(W.get(`${p}.mlp.up_proj.weight`), h2, d.ffn, d.hidden);
      const act = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]!);
      const down = matvec(W.get(`${p}.mlp.down_proj.weight`), act, d.hidden, d.ffn);
      return y.map((yv, i) => yv + down[i]!);
    });
  }
  const last = rmsnorm(xs[xs.length - 1]!, W.get('model.norm.weight'), d.rmsEps);
  const logits = matvec(W.get('lm_head.weight'), last, d.vocab, d.hidden);
  const m = Math.max(...logits);
  const lse = m + Math.log(logits.reduce((a, v) => a + Math.exp(v - m), 0));
  return logits.map((v) => v - lse);
}
