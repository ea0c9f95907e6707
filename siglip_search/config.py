"""SigLIP configuration objects; field names and defaults are those of Hugging Face's config.json."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .atomic import write_atomic
from .errors import CheckpointError
from .hub import hub_options, loader_options, resolve_checkpoint_dir


def _split_known(cls, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in fields(cls) if f.init and f.name != "extra"}
    known = {k: v for k, v in data.items() if k in names}
    extra = {k: v for k, v in data.items() if k not in names}
    return known, extra


class _ConfigMixin:
    """Dict/JSON round-trips that keep unknown keys (in `extra`) instead of crashing on them."""

    if TYPE_CHECKING:  # what every subclass, a dataclass with an `extra` field, provides
        __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
        extra: dict[str, Any]

        def __init__(self, **fields: Any) -> None: ...

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **overrides: Any):
        data = dict(data or {}) | overrides
        known, extra = _split_known(cls, data)
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        return copy.deepcopy(self.extra) | out

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any):
        """A tower config from a checkpoint's config.json: its text_config / vision_config part when the
        file is a full SigLIP config, the whole file when it is this tower's own config."""
        hub = hub_options(kwargs)
        # the ignored ones; a typo is a TypeError
        loader_options(kwargs, f"{cls.__name__}.from_pretrained")
        return load_tower_config(cls, resolve_checkpoint_dir(path, **hub) / "config.json")

    def __getattr__(self, name: str) -> Any:
        # Unknown config.json keys stay readable as attributes, like HF's PretrainedConfig.
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


@dataclass
class SiglipTextConfig(_ConfigMixin):
    vocab_size: int = 32000
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 64
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    # pad = </s> = 1; bos/eos 49406/49407 are CLIP leftovers that SigLIP never uses (transformers'
    # defaults, kept for hub checkpoints that rely on them). A model trained here writes its own
    # tokenizer's ids: eos = </s>, and no bos (SigLIP's tokenizer has none), so transformers finds
    # every id inside the vocabulary.
    pad_token_id: int = 1
    bos_token_id: int | None = 49406
    eos_token_id: int | None = 49407
    projection_size: int | None = None
    model_type: str = "siglip_text_model"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.projection_size is None:
            self.projection_size = self.hidden_size
        _check_values(
            self, "text_config", "vocab_size", "max_position_embeddings", "projection_size"
        )


@dataclass
class SiglipVisionConfig(_ConfigMixin):
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 16
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    vision_use_head: bool = True
    model_type: str = "siglip_vision_model"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.image_size, (list, tuple)):
            sizes = set(self.image_size)
            if len(sizes) != 1:
                raise CheckpointError(
                    f"vision_config.image_size must be square, got {self.image_size}"
                )
            self.image_size = int(sizes.pop())
        _check_values(self, "vision_config", "num_channels", "image_size", "patch_size")

    @property
    def num_patches(self) -> int:
        # Floor division: a stride-p "valid" convolution drops leftover pixels (384 // 14 = 27).
        return (self.image_size // self.patch_size) ** 2


# The hidden_act values of SigLIP and SigLIP 2 checkpoints (layers.py holds their formulas).
HIDDEN_ACTS = ("gelu_pytorch_tanh", "gelu")


def unsupported_hidden_act(name: Any, where: str = "hidden_act") -> CheckpointError:
    return CheckpointError(
        f"{where} {name!r} is not supported: SigLIP checkpoints use "
        f"{' or '.join(map(repr, HIDDEN_ACTS))}"
    )


def _check_values(config, where: str, *names: str) -> None:
    """Sizes are positive ints (a "768" string or a 0 in config.json gives one line, not a TypeError
    deep in torch), the heads divide the width, and hidden_act is one that SigLIP checkpoints use."""
    for name in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        *names,
    ):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"{where}.{name} must be a positive integer, got {value!r}")
    if config.hidden_size % config.num_attention_heads:
        raise CheckpointError(
            f"{where}: hidden_size {config.hidden_size} is not divisible by num_attention_heads "
            f"{config.num_attention_heads}"
        )
    if config.hidden_act not in HIDDEN_ACTS:
        raise unsupported_hidden_act(config.hidden_act, f"{where}.hidden_act")


@dataclass
class SiglipConfig(_ConfigMixin):
    text_config: SiglipTextConfig = field(default_factory=SiglipTextConfig)
    vision_config: SiglipVisionConfig = field(default_factory=SiglipVisionConfig)
    initializer_factor: float = 1.0
    model_type: str = "siglip"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __init__(
        self,
        text_config: SiglipTextConfig | dict | None = None,
        vision_config: SiglipVisionConfig | dict | None = None,
        initializer_factor: float = 1.0,
        model_type: str = "siglip",
        extra: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.text_config = _as_config(SiglipTextConfig, text_config)
        self.vision_config = _as_config(SiglipVisionConfig, vision_config)
        self.initializer_factor = initializer_factor
        self.model_type = model_type
        self.extra = dict(extra or {}) | kwargs
        # A text projection_size that differs from the vision hidden_size is allowed, as in transformers:
        # each tower's features still work; only the joint logits (SiglipModel.forward) refuse it.

    @classmethod
    def from_text_vision_configs(
        cls, text_config: SiglipTextConfig, vision_config: SiglipVisionConfig, **kwargs: Any
    ) -> SiglipConfig:
        return cls(
            text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), **kwargs
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **overrides: Any) -> SiglipConfig:
        data = dict(data or {}) | overrides
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = copy.deepcopy(self.extra)
        out.update(
            text_config=self.text_config.to_dict(),
            vision_config=self.vision_config.to_dict(),
            initializer_factor=self.initializer_factor,
            model_type=self.model_type,
        )
        out.setdefault("architectures", ["SiglipModel"])
        return out

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> SiglipConfig:
        hub = hub_options(kwargs)
        # the ignored ones; a typo is a TypeError
        loader_options(kwargs, f"{cls.__name__}.from_pretrained")
        return load_config(resolve_checkpoint_dir(path, **hub) / "config.json")

    def save_pretrained(self, path: str | os.PathLike) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        write_atomic(Path(path) / "config.json", self.to_json_string().encode())

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def _as_config(cls, value):
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls.from_dict(value)
    raise TypeError(f"expected {cls.__name__} or dict, got {type(value).__name__}")


def read_config_json(path: Path) -> dict[str, Any]:
    """The config.json object; a missing, non-JSON or non-object file is a CheckpointError."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: not a SigLIP checkpoint directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


_TOWER_KEYS = {"siglip_text_model": "text_config", "siglip_vision_model": "vision_config"}
_TOWER_CLASSES = {
    "siglip_text_model": "SiglipTextModel",
    "siglip_vision_model": "SiglipVisionModel",
}


def unsupported_model_type(
    path: Path, model_type: Any, expected: str = "'siglip'"
) -> CheckpointError:
    """The one-line refusal of a config.json whose model_type this class cannot load."""
    if model_type in _TOWER_CLASSES:
        why = f"it holds one tower only; load it with {_TOWER_CLASSES[model_type]} or AutoModel"
    elif model_type == "siglip2":
        why = "SigLIP 2 NaFlex checkpoints are not supported; fixed-resolution SigLIP 2 ones use 'siglip'"
    else:
        why = "not a SigLIP checkpoint"
    return CheckpointError(f"{path}: model_type {model_type!r} is not {expected} ({why})")


def _tower_part(path: Path, data: dict[str, Any], key: str) -> dict[str, Any]:
    part = data.get(key)
    if part is None:
        return {}  # transformers also falls back to the defaults
    if not isinstance(part, dict):
        raise CheckpointError(f"{path}: {key} must be a JSON object, got {type(part).__name__}")
    return part


def load_tower_config(cls, path: Path):
    data = read_config_json(path)
    own_type = cls.__dataclass_fields__["model_type"].default
    model_type = data.get("model_type", "siglip")
    if model_type == "siglip":
        return cls.from_dict(_tower_part(path, data, _TOWER_KEYS[own_type]))
    if model_type != own_type:
        raise unsupported_model_type(path, model_type, f"{own_type!r} or 'siglip'")
    return cls.from_dict(data)


def load_config(path: Path) -> SiglipConfig:
    data = read_config_json(path)
    model_type = data.get("model_type", "siglip")
    if model_type != "siglip":
        raise unsupported_model_type(path, model_type)
    parts = {key: _tower_part(path, data, key) for key in ("text_config", "vision_config")}
    return SiglipConfig.from_dict(data | parts)
