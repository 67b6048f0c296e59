"""BERT (and MiniLM), RoBERTa, DistilBERT and MPNet adapters."""

from __future__ import annotations

import torch
from torch import nn

from kprune.models.adapters.base import Adapter, EmptyAttention, LayerView
from kprune.models.pruned_modeling import keep_mpnet_heads


class BertAdapter(Adapter):
    family = "bert"
    model_types = ("bert",)
    prefix = "bert"

    def backbone(self, model: nn.Module) -> nn.Module:
        return getattr(model, self.prefix)

    def layers(self, model: nn.Module) -> list[nn.Module]:
        return list(self.backbone(model).encoder.layer)

    def view(self, layer: nn.Module) -> LayerView:
        att = layer.attention
        return LayerView(
            att.self.query,
            att.self.key,
            att.self.value,
            att.output.dense,
            att.output.LayerNorm,
            layer.intermediate.dense,
            layer.output.dense,
            layer.output.LayerNorm,
            layer.intermediate.intermediate_act_fn,
        )

    def embed(self, model, input_ids, token_type_ids):
        return self.backbone(model).embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def seq_head(self, model, hidden):
        return model.classifier(self.backbone(model).pooler(hidden))

    def set_num_heads(self, layer, n):
        sa = layer.attention.self
        sa.num_attention_heads = n
        sa.all_head_size = n * sa.attention_head_size

    def empty_attention(self, layer):
        layer.attention.self = EmptyAttention(None)

    def has_heads(self, layer):
        return not isinstance(layer.attention.self, EmptyAttention)

    def ffn(self, layer):
        return layer.intermediate.dense, layer.output.dense


class RobertaAdapter(BertAdapter):
    family = "roberta"
    model_types = ("roberta", "xlm-roberta")
    prefix = "roberta"

    def seq_head(self, model, hidden):
        return model.classifier(hidden)


class DistilBertAdapter(Adapter):
    family = "distilbert"
    model_types = ("distilbert",)

    def backbone(self, model: nn.Module) -> nn.Module:
        return model.distilbert

    def layers(self, model: nn.Module) -> list[nn.Module]:
        return list(model.distilbert.transformer.layer)

    def view(self, layer: nn.Module) -> LayerView:
        a = layer.attention
        return LayerView(
            a.q_lin,
            a.k_lin,
            a.v_lin,
            a.out_lin,
            layer.sa_layer_norm,
            layer.ffn.lin1,
            layer.ffn.lin2,
            layer.output_layer_norm,
            layer.ffn.activation,
        )

    def embed(self, model, input_ids, token_type_ids):
        return model.distilbert.embeddings(input_ids)

    def seq_head(self, model, hidden):
        return model.classifier(torch.relu(model.pre_classifier(hidden[:, 0])))

    def set_num_heads(self, layer, n):
        layer.attention.n_heads = n

    def empty_attention(self, layer):
        layer.attention = EmptyAttention(layer.attention.out_lin.bias)

    def has_heads(self, layer):
        return not isinstance(layer.attention, EmptyAttention)

    def ffn(self, layer):
        return layer.ffn.lin1, layer.ffn.lin2


class MPNetAdapter(Adapter):
    """MPNet: BERT's layer with the output projection inside the self-attention, and one
    relative-position bias table in the encoder, one column per head, that every layer adds to
    its scores; after surgery each layer adds the columns of the heads it kept."""

    family = "mpnet"
    model_types = ("mpnet",)

    def backbone(self, model: nn.Module) -> nn.Module:
        return model.mpnet

    def layers(self, model: nn.Module) -> list[nn.Module]:
        return list(model.mpnet.encoder.layer)

    def view(self, layer: nn.Module) -> LayerView:
        a = layer.attention.attn
        return LayerView(
            a.q,
            a.k,
            a.v,
            a.o,
            layer.attention.LayerNorm,
            layer.intermediate.dense,
            layer.output.dense,
            layer.output.LayerNorm,
            layer.intermediate.intermediate_act_fn,
        )

    def position_bias(self, model, layer):
        encoder = model.mpnet.encoder
        index = getattr(layer.attention.attn, "head_index", None)

        def bias(t: int) -> torch.Tensor:
            # the encoder's own computation (1, H, T, T), cut to the layer's kept heads
            shape = encoder.relative_attention_bias.weight.new_empty(1, t, 0)
            values = encoder.compute_position_bias(shape)
            return values if index is None else values.index_select(1, index)

        return bias

    def embed(self, model, input_ids, token_type_ids):
        return model.mpnet.embeddings(input_ids=input_ids)

    def seq_head(self, model, hidden):
        return model.classifier(hidden)

    def keep_heads(self, layer, kept):  # the head count too
        keep_mpnet_heads(layer.attention.attn, kept)

    def empty_attention(self, layer):
        layer.attention.attn = EmptyAttention(layer.attention.attn.o.bias)

    def has_heads(self, layer):
        return not isinstance(layer.attention.attn, EmptyAttention)

    def ffn(self, layer):
        return layer.intermediate.dense, layer.output.dense
