/**
 * Python source for the float64 CLIP vision tower, written from HF's CLIPVisionModel definitions
 * (patch conv without bias, class token, learned positions, pre-LayerNorm, pre-norm blocks with
 * quick_gelu): `clip_patches(W, vc, x, select)` returns hidden_states[select] without the class
 * row (LLaVA's mm_vision_select_layer / 'patch'). `W` maps HF names to float64 tensors, `vc` is the
 * tower's vision_config, `x` the (1, 3, S, S) pixels. Paste it into a python() script.
 */
export const CLIP_PATCHES_PY = `
def clip_patches(W, vc, x, select):
    D, p, H = vc['hidden_size'], vc['patch_size'], vc['num_attention_heads']
    v = 'vision_model.'
    pt = torch.nn.functional.conv2d(x, W[v + 'embeddings.patch_embedding.weight'], stride=p).flatten(2).transpose(1, 2)[0]
    h = torch.cat([W[v + 'embeddings.class_embedding'][None], pt]) + W[v + 'embeddings.position_embedding.weight']
    ln = lambda t, pre: torch.nn.functional.layer_norm(t, (D,), W[pre + '.weight'], W[pre + '.bias'], vc['layer_norm_eps'])
    lin = lambda t, pre: t @ W[pre + '.weight'].T + W[pre + '.bias']
    h = ln(h, v + 'pre_layrnorm')
    # hidden_states[0] is the embeddings, [i] the output of layer i
    for l in range(vc['num_hidden_layers'] + 1 + select):
        P = v + 'encoder.layers.%d.' % l
        a = ln(h, P + 'layer_norm1')
        q, k, vv = [lin(a, P + 'self_attn.' + n).reshape(-1, H, D // H).transpose(0, 1) for n in ('q_proj', 'k_proj', 'v_proj')]
        att = torch.softmax(q @ k.transpose(1, 2) / (D // H) ** 0.5, -1) @ vv
        h = h + lin(att.transpose(0, 1).reshape(-1, D), P + 'self_attn.out_proj')
        m = lin(ln(h, P + 'layer_norm2'), P + 'mlp.fc1')
        h = h + lin(m * torch.sigmoid(1.702 * m), P + 'mlp.fc2')
    return h[1:]
`;
