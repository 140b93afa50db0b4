/**
 * A LLaVA model → llama.cpp's GGUF pair: the LLM file (llama architecture, tokenizer.ggml.*,
 * attn_q / attn_k rows permuted as llama.cpp's convert does) and the mmproj file (clip.*, v.blk.N.*,
 * mm.0 / mm.2, with llama.cpp's legacy fc1 → ffn_down / fc2 → ffn_up naming). Weights come from a
 * source by HF tensor name, one tensor at a time, so 7B models convert in bounded memory.
 */
import { medllavaError } from '../errors.js';
import { native, type GgufKeyValue } from '../native.js';
import { PieceType, type Piece } from '../tokenizer/sentencepiece.js';

export interface LlavaTensorSource {
  llm: { hidden: number; layers: number; heads: number; kvHeads: number; ffn: number; vocab: number; ropeTheta: number;
    rmsEps: number; contextLength: number };
  vision: { imageSize: number; patchSize: number; hidden: number; layers: number; heads: number; ffn: number;
    layerNormEps: number; activation: 'quick_gelu' | 'gelu'; imageMean: number[]; imageStd: number[] };
  projector: 'linear' | 'mlp2x_gelu';
  tokenizer: { pieces: Piece[]; bosId: number; eosId: number; unkId: number };
  /** a tensor by HF name (model.*, lm_head.weight, model.mm_projector.*, vision_model.*) as f32 */
  tensor(name: string): Promise<{ shape: number[]; data: Float32Array }>;
  name?: string;
}

export const GGUF_LLM_TYPES = ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0'] as const;

/** llama.cpp's convert permutes the rows of attn_q / attn_k: reshape(heads, 2, d/2, in).swapaxes(1, 2). */
export function permuteQK(w: Float32Array, rows: number, cols: number, heads: number): Float32Array {
  const hd = rows / heads;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < 2; i++) {
      for (let j = 0; j < hd / 2; j++) {
        const src = h * hd + i * (hd / 2) + j;
        const dst = h * hd + j * 2 + i;
        out.set(w.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}

type GgufTensor = { name: string; dims: number[]; type: string; data: Float32Array | Uint8Array };

function ggTensor(name: string, x: { shape: number[]; data: Float32Array }, type: string): GgufTensor {
  // 1-D tensors stay F32, as llama.cpp writes norms and biases; GGUF dims are the PyTorch shape reversed
  const t = x.shape.length <= 1 ? 'F32' : type;
  return { name, dims: [...x.shape].reverse(), type: t, data: t === 'F32' ? x.data : native().ggmlQuantize(t, x.data) };
}

export async function writeLlavaGguf(src: LlavaTensorSource, paths: { llm: string; mmproj: string }, llmType: string,
  progress: (m: string) => void = () => {}): Promise<void> {
  if (!(GGUF_LLM_TYPES as readonly string[]).includes(llmType)) {
    throw medllavaError('E_ARGUMENT', `GGUF type must be one of ${GGUF_LLM_TYPES.join(', ')}, got '${llmType}'`);
  }
  const { llm, vision: v } = src;
  const pieces = src.tokenizer.pieces;
  const fileType: Record<string, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7, BF16: 32 };
  const meta: GgufKeyValue[] = [
    { key: 'general.architecture', type: 'string', value: 'llama' },
    { key: 'general.name', type: 'string', value: src.name ?? 'llava' },
    { key: 'general.file_type', type: 'u32', value: fileType[llmType]! },
    { key: 'llama.context_length', type: 'u32', value: llm.contextLength },
    { key: 'llama.embedding_length', type: 'u32', value: llm.hidden },
    { key: 'llama.block_count', type: 'u32', value: llm.layers },
    { key: 'llama.feed_forward_length', type: 'u32', value: llm.ffn },
    { key: 'llama.rope.dimension_count', type: 'u32', value: llm.hidden / llm.heads },
    { key: 'llama.attention.head_count', type: 'u32', value: llm.heads },
    { key: 'llama.attention.head_count_kv', type: 'u32', value: llm.kvHeads },
    { key: 'llama.attention.layer_norm_rms_epsilon', type: 'f32', value: llm.rmsEps },
    { key: 'llama.rope.freq_base', type: 'f32', value: llm.ropeTheta },
    { key: 'llama.vocab_size', type: 'u32', value: llm.vocab },
    { key: 'tokenizer.ggml.model', type: 'string', value: 'llama' },
    { key: 'tokenizer.ggml.tokens', type: 'array', elementType: 'string', value: pieces.map((p) => p.piece) },
    { key: 'tokenizer.ggml.scores', type: 'array', elementType: 'f32', value: Float32Array.from(pieces, (p) => p.score) },
    { key: 'tokenizer.ggml.token_type', type: 'array', elementType: 'i32', value: Int32Array.from(pieces, (p) => p.type) },
    { key: 'tokenizer.ggml.bos_token_id', type: 'u32', value: src.tokenizer.bosId },
    { key: 'tokenizer.ggml.eos_token_id', type: 'u32', value: src.tokenizer.eosId },
    { key: 'tokenizer.ggml.unknown_token_id', type: 'u32', value: src.tokenizer.unkId },
    { key: 'tokenizer.ggml.add_bos_token', type: 'bool', value: true },
    { key: 'tokenizer.ggml.add_eos_token', type: 'bool', value: false },
  ];
  if (pieces.length !== llm.vocab) {
    throw medllavaError('E_SHAPE', `the tokenizer has ${pieces.length} pieces but the LLM's vocabulary is ${llm.vocab}`);
  }
  if (!pieces.some((p) => p.type === PieceType.UNKNOWN)) throw medllavaError('E_FORMAT', 'the tokenizer has no unknown piece');
  // as llama.cpp's Q4_0 files do, the token embedding and the output stay Q8_0
  const edgeType = llmType === 'Q4_0' ? 'Q8_0' : llmType;
  const hd = llm.hidden / llm.heads;
  const tensors: GgufTensor[] = [ggTensor('token_embd.weight', await src.tensor('model.embed_tokens.weight'), edgeType)];
  for (let l = 0; l < llm.layers; l++) {
    progress(`LLM block ${l + 1}/${llm.layers}`);
    const p = `model.layers.${l}`;
    const q = await src.tensor(`${p}.self_attn.q_proj.weight`);
    const k = await src.tensor(`${p}.self_attn.k_proj.weight`);
    tensors.push(
      ggTensor(`blk.${l}.attn_norm.weight`, await src.tensor(`${p}.input_layernorm.weight`), llmType),
      ggTensor(`blk.${l}.attn_q.weight`, { shape: q.shape, data: permuteQK(q.data, llm.heads * hd, llm.hidden, llm.heads) }, llmType),
      ggTensor(`blk.${l}.attn_k.weight`, { shape: k.shape, data: permuteQK(k.data, llm.kvHeads * hd, llm.hidden, llm.kvHeads) }, llmType),
      ggTensor(`blk.${l}.attn_v.weight`, await src.tensor(`${p}.self_attn.v_proj.weight`), llmType),
      ggTensor(`blk.${l}.attn_output.weight`, await src.tensor(`${p}.self_attn.o_proj.weight`), llmType),
      ggTensor(`blk.${l}.ffn_norm.weight`, await src.tensor(`${p}.post_attention_layernorm.weight`), llmType),
      ggTensor(`blk.${l}.ffn_gate.weight`, await src.tensor(`${p}.mlp.gate_proj.weight`), llmType),
      ggTensor(`blk.${l}.ffn_up.weight`, await src.tensor(`${p}.mlp.up_proj.weight`), llmType),
      ggTensor(`blk.${l}.ffn_down.weight`, await src.tensor(`${p}.mlp.down_proj.weight`), llmType),
    );
  }
  tensors.push(ggTensor('output_norm.weight', await src.tensor('model.norm.weight'), llmType),
    ggTensor('output.weight', await src.tensor('lm_head.weight'), edgeType));
  progress(`writing ${paths.llm}`);
  await native().writeGguf(paths.llm, meta, tensors, 32);

  const vm = 'vision_model';
  const vt = async (name: string, srcName: string) => ggTensor(name, await src.tensor(srcName), 'F16');
  const mm: GgufTensor[] = [
    await vt('v.class_embd', `${vm}.embeddings.class_embedding`),
    await vt('v.patch_embd.weight', `${vm}.embeddings.patch_embedding.weight`),
    await vt('v.position_embd.weight', `${vm}.embeddings.position_embedding.weight`),
    await vt('v.pre_ln.weight', `${vm}.pre_layrnorm.weight`), await vt('v.pre_ln.bias', `${vm}.pre_layrnorm.bias`),
  ];
  for (let l = 0; l < v.layers; l++) {
    progress(`vision block ${l + 1}/${v.layers}`);
    const p = `${vm}.encoder.layers.${l}`;
    for (const [ours, theirs] of [['attn_q', 'self_attn.q_proj'], ['attn_k', 'self_attn.k_proj'], ['attn_v', 'self_attn.v_proj'],
      ['attn_out', 'self_attn.out_proj'], ['ln1', 'layer_norm1'], ['ln2', 'layer_norm2'], ['ffn_down', 'mlp.fc1'], ['ffn_up', 'mlp.fc2']]) {
      mm.push(await vt(`v.blk.${l}.${ours}.weight`, `${p}.${theirs}.weight`), await vt(`v.blk.${l}.${ours}.bias`, `${p}.${theirs}.bias`));
    }
  }
  mm.push(await vt('v.post_ln.weight', `${vm}.post_layernorm.weight`), await vt('v.post_ln.bias', `${vm}.post_layernorm.bias`));
  const projNames = src.projector === 'linear' ? [['mm.0', 'model.mm_projector']] : [['mm.0', 'model.mm_projector.0'], ['mm.2', 'model.mm_projector.2']];
  for (const [ours, theirs] of projNames) {
    mm.push(ggTensor(`${ours}.weight`, await src.tensor(`${theirs}.weight`), 'F16'), ggTensor(`${ours}.bias`, await src.tensor(`${theirs}.bias`), 'F16'));
  }
  const mmMeta: GgufKeyValue[] = [
    { key: 'general.architecture', type: 'string', value: 'clip' },
    { key: 'general.name', type: 'string', value: `${src.name ?? 'llava'} mmproj` },
    { key: 'general.file_type', type: 'u32', value: 1 },
    { key: 'clip.has_text_encoder', type: 'bool', value: false },
    { key: 'clip.has_vision_encoder', type: 'bool', value: true },
    { key: 'clip.has_llava_projector', type: 'bool', value: true },
    { key: 'clip.projector_type', type: 'string', value: 'mlp' },
    { key: 'clip.use_gelu', type: 'bool', value: v.activation === 'gelu' },
    { key: 'clip.vision.image_size', type: 'u32', value: v.imageSize },
    { key: 'clip.vision.patch_size', type: 'u32', value: v.patchSize },
    { key: 'clip.vision.embedding_length', type: 'u32', value: v.hidden },
    { key: 'clip.vision.feed_forward_length', type: 'u32', value: v.ffn },
    { key: 'clip.vision.projection_dim', type: 'u32', value: llm.hidden },
    { key: 'clip.vision.attention.head_count', type: 'u32', value: v.heads },
    { key: 'clip.vision.attention.layer_norm_epsilon', type: 'f32', value: v.layerNormEps },
    { key: 'clip.vision.block_count', type: 'u32', value: v.layers },
    { key: 'clip.vision.image_mean', type: 'array', elementType: 'f32', value: Float32Array.from(v.imageMean) },
    { key: 'clip.vision.image_std', type: 'array', elementType: 'f32', value: Float32Array.from(v.imageStd) },
  ];
  progress(`writing ${paths.mmproj}`);
  await native().writeGguf(paths.mmproj, mmMeta, mm, 32);
}
