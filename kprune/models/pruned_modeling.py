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

HEADS_KEY = "kprune_heads_per_layer"
FFN_KEY = "kprune_ffn_per_layer"


class EmptyAttention(nn.Module):
    """Stands in for a self-attention block whose heads were all pruned.

    It returns a context with no features when the output projection lives outside the block
    (BERT, RoBERTa: a 0-input Linear then yields its bias), or the projection's bias
    (DistilBERT, whose projection is inside).
    """

    def __init__(self, bias: torch.Tensor | None):
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        shape = hidden_states.shape[:-1]
        if self.bias is None:
            return hidden_states.new_zeros(*shape, 0), None
        return self.bias.expand(*shape, -1), None


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


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The encoder layers of a BERT, RoBERTa, XLM-R or DistilBERT task model."""
    if hasattr(model, "distilbert"):
        return list(model.distilbert.transformer.layer)
    backbone = getattr(model, "roberta", None) or model.bert
    return list(backbone.encoder.layer)


def resize_to_config(model: nn.Module) -> nn.Module:
    """Resize ``model``'s layers to the kept widths its config names; returns it."""
    config = model.config
    heads, ffn = getattr(config, HEADS_KEY, None), getattr(config, FFN_KEY, None)
    if heads is None or ffn is None:
        raise ValueError(f"config has no {HEADS_KEY} / {FFN_KEY}: not a kprune-pruned model")
    resize = _resize_distilbert_layer if config.model_type == "distilbert" else _resize_bert_layer
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
