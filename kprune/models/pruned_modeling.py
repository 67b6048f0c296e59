"""The modeling code a pruned model folder carries, so that plain transformers loads it.

``save_pruned`` copies this file beside the weights and names its classes in config.json's
``auto_map``; then, without kprune installed::

    AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)

(``AutoModelForQuestionAnswering`` for a QA model; a regression model is a sequence
classifier with one output). config.json holds each layer's kept head count and FFN width
(``kprune_heads_per_layer``, ``kprune_ffn_per_layer``); each class builds the family's
ordinary transformers model, resizes every layer's attention and FFN to those widths, and the
weights load as usual. A layer whose heads are all pruned gets ``EmptyAttention`` (its
sublayer computes LayerNorm(X + b)), as kprune's own surgery does.

This file imports only torch and transformers: it must run where kprune is not installed.
"""

from __future__ import annotations

import warnings

import torch
import transformers
from torch import nn
from transformers.models.mpnet import modeling_mpnet

HEADS_KEY = "kprune_heads_per_layer"
FFN_KEY = "kprune_ffn_per_layer"


class EmptyAttention(nn.Module):
    """Stands in for a self-attention block whose heads were all pruned.

    It returns a context with no features when the output projection lives outside the block
    (BERT, RoBERTa: a 0-input Linear then yields its bias), or the projection's bias
    (DistilBERT, MPNet: the projection is inside).
    """

    def __init__(self, bias: torch.Tensor | None):
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        shape = hidden_states.shape[:-1]
        if self.bias is None:
            return hidden_states.new_zeros(*shape, 0), None
        return self.bias.expand(*shape, -1), None


class KeptHeadsMPNetSelfAttention(modeling_mpnet.MPNetSelfAttention):
    """MPNet's self-attention over some of its heads.

    MPNet's encoder holds one relative-position bias table, one column per head, and adds the
    same (B, H, T, T) bias to every layer's scores. ``head_index`` (a buffer saved with the
    weights) names the original heads this layer kept; the bias is cut to their columns before
    the heads add it.
    """

    def forward(self, hidden_states, attention_mask=None, position_bias=None, *args, **kwargs):
        if position_bias is not None:
            position_bias = position_bias.index_select(1, self.head_index)
        return super().forward(hidden_states, attention_mask, position_bias, *args, **kwargs)


def keep_mpnet_heads(attn: nn.Module, kept: torch.Tensor) -> None:
    """Make ``attn`` (an MPNet self-attention whose Q/K/V/O now hold only the heads ``kept``,
    indices among its current heads) a ``KeptHeadsMPNetSelfAttention`` over them."""
    kept = kept.to(device=attn.q.weight.device, dtype=torch.long)
    current = getattr(attn, "head_index", None)
    attn.__class__ = KeptHeadsMPNetSelfAttention
    attn.register_buffer("head_index", kept.clone() if current is None else current[kept])
    attn.num_attention_heads = len(kept)
    attn.all_head_size = len(kept) * attn.attention_head_size


def _linear(in_features: int, out_features: int, like: nn.Linear) -> nn.Linear:
    """An uninitialised Linear of a new shape (its weights come from the checkpoint)."""
    with warnings.catch_warnings():  # a fully pruned sublayer has zero-element weights
        warnings.simplefilter("ignore", UserWarning)
        return nn.Linear(
            in_features,
            out_features,
            bias=like.bias is not None,
            device=like.weight.device,
            dtype=like.weight.dtype,
        )


def _resize_bert_layer(layer: nn.Module, heads: int, ffn: int) -> None:
    att = layer.attention
    sa = att.self
    width = heads * sa.attention_head_size
    if heads == 0:
        att.self = EmptyAttention(None)
    elif width < sa.query.out_features:
        for name in ("query", "key", "value"):
            setattr(sa, name, _linear(sa.query.in_features, width, getattr(sa, name)))
        sa.num_attention_heads, sa.all_head_size = heads, width
    dense = att.output.dense
    if width < dense.in_features:
        att.output.dense = _linear(width, dense.out_features, dense)
    _resize_bert_ffn(layer, ffn)


def _resize_bert_ffn(layer: nn.Module, ffn: int) -> None:
    """BERT's FFN (MPNet's too): intermediate.dense and output.dense at ``ffn`` neurons."""
    up, down = layer.intermediate.dense, layer.output.dense
    if ffn < up.out_features:
        layer.intermediate.dense = _linear(up.in_features, ffn, up)
        layer.output.dense = _linear(ffn, down.out_features, down)


def _resize_distilbert_layer(layer: nn.Module, heads: int, ffn: int) -> None:
    att = layer.attention
    head_dim = att.q_lin.out_features // att.n_heads
    width = heads * head_dim
    if heads == 0:
        layer.attention = EmptyAttention(att.out_lin.bias)
    elif width < att.q_lin.out_features:
        for name in ("q_lin", "k_lin", "v_lin"):
            setattr(att, name, _linear(att.q_lin.in_features, width, getattr(att, name)))
        att.out_lin = _linear(width, att.out_lin.out_features, att.out_lin)
        att.n_heads = heads
    up, down = layer.ffn.lin1, layer.ffn.lin2
    if ffn < up.out_features:
        layer.ffn.lin1 = _linear(up.in_features, ffn, up)
        layer.ffn.lin2 = _linear(ffn, down.out_features, down)


def _resize_mpnet_layer(layer: nn.Module, heads: int, ffn: int) -> None:
    att = layer.attention
    sa = att.attn
    width = heads * sa.attention_head_size
    if heads == 0:
        att.attn = EmptyAttention(sa.o.bias)
    elif width < sa.q.out_features:
        for name in ("q", "k", "v"):
            setattr(sa, name, _linear(sa.q.in_features, width, getattr(sa, name)))
        sa.o = _linear(width, sa.o.out_features, sa.o)
        # which heads: a placeholder of the right size, the checkpoint's head_index replaces it
        keep_mpnet_heads(sa, torch.arange(heads))
    _resize_bert_ffn(layer, ffn)


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The encoder layers of a BERT, RoBERTa, XLM-R, DistilBERT or MPNet task model."""
    if hasattr(model, "distilbert"):
        return list(model.distilbert.transformer.layer)
    backbone = getattr(model, "roberta", None) or getattr(model, "mpnet", None) or model.bert
    return list(backbone.encoder.layer)


_RESIZE = {"distilbert": _resize_distilbert_layer, "mpnet": _resize_mpnet_layer}


def resize_to_config(model: nn.Module) -> nn.Module:
    """Resize ``model``'s layers to the kept widths its config names; returns it."""
    config = model.config
    heads, ffn = getattr(config, HEADS_KEY, None), getattr(config, FFN_KEY, None)
    if heads is None or ffn is None:
        raise ValueError(f"config has no {HEADS_KEY} / {FFN_KEY}: not a kprune-pruned model")
    resize = _RESIZE.get(config.model_type, _resize_bert_layer)
    layers = encoder_layers(model)
    if not len(layers) == len(heads) == len(ffn):
        raise ValueError(f"{len(layers)} layers, but the config names {len(heads)} widths")
    for layer, h, n in zip(layers, heads, ffn, strict=True):
        resize(layer, int(h), int(n))
    return model


def _pruned(base: type) -> type:
    """``base`` (a transformers task model class) that resizes itself to the config."""

    def __init__(self, config, *args, **kwargs):
        base.__init__(self, config, *args, **kwargs)
        resize_to_config(self)

    return type(f"Pruned{base.__name__}", (base,), {"__init__": __init__})


PrunedBertForSequenceClassification = _pruned(transformers.BertForSequenceClassification)
PrunedBertForQuestionAnswering = _pruned(transformers.BertForQuestionAnswering)
PrunedRobertaForSequenceClassification = _pruned(transformers.RobertaForSequenceClassification)
PrunedRobertaForQuestionAnswering = _pruned(transformers.RobertaForQuestionAnswering)
PrunedXLMRobertaForSequenceClassification = _pruned(
    transformers.XLMRobertaForSequenceClassification
)
PrunedXLMRobertaForQuestionAnswering = _pruned(transformers.XLMRobertaForQuestionAnswering)
PrunedDistilBertForSequenceClassification = _pruned(
    transformers.DistilBertForSequenceClassification
)
PrunedDistilBertForQuestionAnswering = _pruned(transformers.DistilBertForQuestionAnswering)
PrunedMPNetForSequenceClassification = _pruned(transformers.MPNetForSequenceClassification)
PrunedMPNetForQuestionAnswering = _pruned(transformers.MPNetForQuestionAnswering)
