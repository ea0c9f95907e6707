"""SigLIP towers and the two-tower model, parameter names equal to Hugging Face checkpoint keys."""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_model, save_model
from .config import SiglipConfig, SiglipTextConfig, SiglipVisionConfig
from .errors import CheckpointError, InputError
from .hub import hub_options, loader_options
from .layers import SiglipEncoder, SiglipMultiheadAttentionPoolingHead
from .loss import sigmoid_logits, sigmoid_loss
from .outputs import BaseModelOutputWithPooling, SiglipOutput


class SiglipVisionEmbeddings(nn.Module):
    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size
        )
        self.num_positions = config.num_patches
        self.position_embedding = nn.Embedding(self.num_positions, config.hidden_size)

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """Bicubic resize of the square position grid to (height, width) patches, as transformers."""
        table = self.position_embedding.weight  # (N, D)
        g = int(math.sqrt(self.num_positions))
        grid = table.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1).reshape(1, height * width, -1)

    def forward(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # (B, D, h, w)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, D), row-major patch order, no CLS token
        if interpolate_pos_encoding and (h * w != self.num_positions or h != w):
            return x + self.interpolate_pos_encoding(h, w)
        if h * w != self.num_positions:
            raise InputError(
                f"pixel_values give {h}x{w} patches but the model has {self.num_positions} positions; "
                "resize to the model's image_size or pass interpolate_pos_encoding=True"
            )
        return x + self.position_embedding.weight


class SiglipVisionTransformer(nn.Module):
    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = SiglipVisionEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if config.vision_use_head:
            self.head = SiglipMultiheadAttentionPoolingHead(config)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool = False,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        x = self.embeddings(pixel_values, interpolate_pos_encoding)  # (B, N, D)
        x, hidden_states, attentions = _encode(
            self.encoder, x, None, output_hidden_states, output_attentions
        )
        x = self.post_layernorm(x)
        pooled = self.head(x) if self.config.vision_use_head else None
        return BaseModelOutputWithPooling(x, pooled, hidden_states, attentions)


class SiglipTextEmbeddings(nn.Module):
    def __init__(self, config: SiglipTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        T = input_ids.shape[-1]
        max_len = self.position_embedding.num_embeddings
        if T > max_len:
            raise InputError(
                f"Sequence length must be less than max_position_embeddings (got {T}, max {max_len}); "
                "tokenize with truncation=True"
            )
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device)
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)


class SiglipTextTransformer(nn.Module):
    def __init__(self, config: SiglipTextConfig):
        super().__init__()
        self.config = config
        self.embeddings = SiglipTextEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # projection_size is set (to hidden_size when config.json has none) by SiglipTextConfig
        self.head = nn.Linear(config.hidden_size, config.projection_size or config.hidden_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        x = self.embeddings(input_ids, position_ids)  # (B, T, D)
        mask = _key_mask(attention_mask)
        x, hidden_states, attentions = _encode(
            self.encoder, x, mask, output_hidden_states, output_attentions
        )
        x = self.final_layer_norm(x)
        # Pool the LAST position (always </s> when padded to max length), not the first EOS.
        pooled = self.head(x[:, -1, :])
        return BaseModelOutputWithPooling(x, pooled, hidden_states, attentions)

    def pooled_output(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """forward(...).pooler_output without the work only last_hidden_state needs.

        The pooled feature reads the last position alone, so the last layer computes that position's
        query, attention output and MLP only (its keys and values still cover every position). On the
        base model this skips about 7% of the text tower's work.
        """
        x = self.embeddings(input_ids, position_ids)
        x = self.encoder.forward_last_position(x, _key_mask(attention_mask))  # (B, 1, D)
        return self.head(self.final_layer_norm(x[:, -1]))


def _encode(
    encoder: SiglipEncoder,
    x: torch.Tensor,
    attention_mask: torch.Tensor | None,
    output_hidden_states: bool,
    output_attentions: bool,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
    """(encoder output, hidden states if asked, attention maps if asked): the plain forward, unless the
    caller asks for transformers' extra outputs."""
    if not (output_hidden_states or output_attentions):
        return encoder(x, attention_mask), None, None
    x, hidden_states, attentions = encoder.forward_with_states(x, attention_mask, output_attentions)
    return x, hidden_states if output_hidden_states else None, attentions


def _key_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) 1/0 -> (B, 1, 1, T) bool. SigLIP was trained without a padding mask; one is applied
    only if a caller insists."""
    return None if attention_mask is None else attention_mask[:, None, None, :].to(torch.bool)


class SiglipPreTrainedModel(nn.Module):
    """Checkpoint I/O shared by the three public models."""

    config_class: type[SiglipConfig | SiglipTextConfig | SiglipVisionConfig] = SiglipConfig
    key_prefix = ""  # what the HF SiglipModel checkpoint puts in front of this module's keys

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        torch_dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ):
        """kwargs: transformers' names `dtype` (for torch_dtype) and `device_map` (for device), the hub
        options (revision, cache_dir, local_files_only, token) and hub.IGNORED_OPTIONS; anything else
        is a TypeError."""
        hub = hub_options(kwargs)
        own = loader_options(
            kwargs, f"{cls.__name__}.from_pretrained", accepted=("dtype", "device_map")
        )
        dtype = own.get("dtype", torch_dtype)
        device = own.get("device_map", device)
        return load_model(cls, pretrained_model_name_or_path, dtype=dtype, device=device, **hub)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        dtype: torch.dtype | None = None,
        max_shard_size: int | str | None = None,
        safe_serialization: bool = True,
    ) -> None:
        save_model(self, save_directory, dtype, max_shard_size, safe_serialization)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameter count, as transformers' ModuleUtilsMixin.num_parameters (nn.Embedding weights are
        the embeddings; the vision patch convolution is not one)."""
        embedding_names = {
            f"{n}.weight" for n, m in self.named_modules() if isinstance(m, nn.Embedding)
        }
        return sum(
            p.numel()
            for name, p in self.named_parameters()
            if not (exclude_embeddings and name in embedding_names)
            and (p.requires_grad or not only_trainable)
        )

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialisation for training from scratch (follows transformers' SigLIP init)."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=1 / math.sqrt(module.weight.shape[1]))
            elif isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.normal_(module.bias, std=1e-6)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, SiglipMultiheadAttentionPoolingHead):
                nn.init.xavier_uniform_(module.probe)
                nn.init.xavier_uniform_(module.attention.in_proj_weight)
                nn.init.zeros_(module.attention.in_proj_bias)
        if isinstance(self, SiglipModel):
            # The paper's init: t = 10 and b = -10, so that the many negatives start near prob 0.
            self.logit_scale.fill_(math.log(10.0))
            self.logit_bias.fill_(-10.0)


class SiglipVisionModel(SiglipPreTrainedModel):
    config_class = SiglipVisionConfig
    key_prefix = "vision_model."

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.config = config
        self.vision_model = SiglipVisionTransformer(config)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool = False,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool = False,
        # accepted and ignored: the output indexes like a tuple too
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        return self.vision_model(
            pixel_values, output_hidden_states, interpolate_pos_encoding, output_attentions
        )


class SiglipTextModel(SiglipPreTrainedModel):
    config_class = SiglipTextConfig
    key_prefix = "text_model."

    def __init__(self, config: SiglipTextConfig):
        super().__init__()
        self.config = config
        self.text_model = SiglipTextTransformer(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        # accepted and ignored: the output indexes like a tuple too
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        return self.text_model(
            input_ids, attention_mask, position_ids, output_hidden_states, output_attentions
        )


class SiglipModel(SiglipPreTrainedModel):
    def __init__(self, config: SiglipConfig):
        super().__init__()
        self.config = config
        self.text_model = SiglipTextTransformer(config.text_config)
        self.vision_model = SiglipVisionTransformer(config.vision_config)
        self.logit_scale = nn.Parameter(torch.zeros(1))
        self.logit_bias = nn.Parameter(torch.zeros(1))

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> torch.Tensor:
        """Un-normalised text features (N, D), as in transformers v4.37. The last three arguments are
        v4.37's, accepted and ignored: a tensor carries no hidden states or attention maps."""
        return self.text_model.pooled_output(input_ids, attention_mask, position_ids)

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> torch.Tensor:
        """Un-normalised image features (N, D), as in transformers v4.37 (the last three arguments are
        accepted and ignored, as for get_text_features)."""
        return self.vision_model(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding
        ).pooler_output

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_loss: bool = False,
        output_hidden_states: bool = False,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool = False,
        # accepted and ignored: the output indexes like a tuple too
        return_dict: bool | None = None,
    ) -> SiglipOutput:
        out = SiglipOutput()
        if pixel_values is not None:
            vision = self.vision_model(
                pixel_values, output_hidden_states, interpolate_pos_encoding, output_attentions
            )
            out.vision_model_output, img = vision, vision.pooler_output
            out.image_embeds = img / img.norm(p=2, dim=-1, keepdim=True)
        if input_ids is not None:
            text = self.text_model(
                input_ids, attention_mask, position_ids, output_hidden_states, output_attentions
            )
            out.text_model_output, txt = text, text.pooler_output
            out.text_embeds = txt / txt.norm(p=2, dim=-1, keepdim=True)
        if out.image_embeds is not None and out.text_embeds is not None:
            if out.text_embeds.shape[-1] != out.image_embeds.shape[-1]:
                raise CheckpointError(
                    f"cannot compute logits: text projection_size {out.text_embeds.shape[-1]} differs "
                    f"from the vision hidden_size {out.image_embeds.shape[-1]} "
                    "(get_text_features / get_image_features still work)"
                )
            scale = self.logit_scale.to(out.text_embeds.dtype)
            bias = self.logit_bias.to(out.text_embeds.dtype)
            out.logits_per_text = sigmoid_logits(out.text_embeds, out.image_embeds, scale, bias)
            out.logits_per_image = out.logits_per_text.t()
            if return_loss:
                out.loss = sigmoid_loss(out.logits_per_text)
        elif return_loss:
            raise InputError("return_loss=True needs both input_ids and pixel_values")
        return out
