"""Graph passes after the ONNX Runtime fusions that make the fused graph quantize fully and run
faster on a CPU; each one is numerically neutral (the export verifies the result) and was
chosen from an ONNX Runtime profile (docs/deploy.md has the figures).

- ``fold_weights``: constant-fold what the exporter left computed at run time, such as the
  Concat of the Q, K and V weights feeding each fused Attention node. The quantizer only
  quantizes weights that are initializers.
- ``uniform_attention``: drop an Attention node's ``qkv_hidden_sizes`` when the three sizes
  are equal (always, for a pruned layer: each is its heads x head dim). ONNX Runtime's
  quantizer leaves any Attention node carrying that attribute in float32; without it the node
  becomes QAttention (int8 Q/K/V projection).
- ``unfuse_skip_layer_norm``: SkipLayerNormalization back into Add (+ bias Add) and
  LayerNormalization. In ONNX Runtime 1.32's CPU kernels the fused op took 4.8 ms per call
  on a 32 x 128 x 384 batch against about 1.5 ms for the pair (profile of rt at R = 0.6).
"""

from __future__ import annotations

import onnx
from onnx import helper


def fold_weights(model) -> None:
    """Constant-fold the onnx_ir ``model`` in place, with no size limit (weights included)."""
    import logging

    import onnxscript.optimizer

    quiet = logging.getLogger("onnx_ir")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # it logs every pass at INFO
    try:
        onnxscript.optimizer.fold_constants(
            model, input_size_limit=1 << 40, output_size_limit=1 << 40
        )
    finally:
        quiet.setLevel(level)


def uniform_attention(proto: onnx.ModelProto) -> int:
    """Remove ``qkv_hidden_sizes`` from Attention nodes whose three sizes are equal; returns
    how many nodes changed."""
    changed = 0
    for node in proto.graph.node:
        if node.op_type != "Attention":
            continue
        for attr in list(node.attribute):
            if attr.name == "qkv_hidden_sizes" and len(set(attr.ints)) == 1:
                node.attribute.remove(attr)
                changed += 1
    return changed


def unfuse_skip_layer_norm(proto: onnx.ModelProto) -> int:
    """Replace each SkipLayerNormalization whose mean/variance outputs nobody reads by
    Add(input, skip) [+ Add(bias)] -> LayerNormalization (and the sum, where its fourth
    output is read); returns how many were replaced."""
    graph = proto.graph
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    nodes, replaced = [], 0
    for n in graph.node:
        outs = list(n.output) + [""] * (4 - len(n.output))
        if n.op_type != "SkipLayerNormalization" or outs[1] in used or outs[2] in used:
            nodes.append(n)
            continue
        ins = list(n.input) + [""] * (5 - len(n.input))
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-12)
        total = f"{n.name}_sum"
        nodes.append(helper.make_node("Add", ins[:2], [total], name=f"{n.name}_add"))
        if ins[4]:
            biased = f"{n.name}_sum_bias"
            nodes.append(helper.make_node("Add", [total, ins[4]], [biased], name=f"{n.name}_bias"))
            total = biased
        if outs[3]:
            nodes.append(helper.make_node("Identity", [total], [outs[3]], name=f"{n.name}_id"))
        norm_in = [total, ins[2]] + ([ins[3]] if ins[3] else [])
        nodes.append(
            helper.make_node(
                "LayerNormalization", norm_in, [outs[0]], name=f"{n.name}_ln", axis=-1, epsilon=eps
            )
        )
        replaced += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return replaced
