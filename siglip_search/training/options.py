"""The options of a training run (TrainConfig) and the demo model's architecture (DEMO_CONFIG)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import SiglipConfig
from ..devices import resolve_device
from ..errors import InputError

# The demo model: 96 px with 32 px patches (3 x 3 tokens), so that each of the five object positions
# is the centre of one patch. A ViT trained from scratch on this little data learned shape only when
# a whole object falls inside one patch (patch 8: chance after 400 steps; see the model card).
DEMO_CONFIG: dict[str, Any] = {
    "text_config": {
        "vocab_size": 128,
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "max_position_embeddings": 32,
    },
    "vision_config": {
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "image_size": 96,
        "patch_size": 32,
    },
}


@dataclass
class TrainConfig:
    out_dir: Path
    model_config: dict[str, Any] = field(
        default_factory=lambda: json.loads(json.dumps(DEMO_CONFIG))
    )
    data: str = "synthetic"  # or a folder with captions.jsonl / captions.csv
    tokenizer: str | None = None  # an existing spiece.model; synthetic data trains one
    steps: int = 3600
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    seed: int = 0
    checkpoint_every: int = 250
    workers: int = 1
    threads: int | None = None
    device: str = "cpu"
    twins: bool = False  # shape-twin batches (measured: no gain on the demo recipe)
    # The first steps train the image tower against a frozen text tower (as in LiT, but with the text
    # tower at its whitened random start); synthetic data then shows single objects with short captions.
    # Without it both towers settle on one embedding for all five shapes (see the model card).
    lock_text_steps: int = 1200
    text_lr_scale: float = 1 / 3  # text tower learning rate relative to lr, once unlocked
    # synthetic data: render this many scenes once and reuse them (0: render every batch)
    pool_size: int = 80000
    progress: bool = True

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    def validate(self) -> None:
        """Refuse options that would crash mid-run or train nothing, in one line naming the option."""
        at_least = {
            "steps": 1,
            "batch_size": 1,
            "checkpoint_every": 1,
            "warmup_steps": 0,
            "workers": 0,
            "lock_text_steps": 0,
            "pool_size": 0,
            "seed": 0,
        }
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise InputError(
                    f"--{name.replace('_', '-')} must be at least {low}, got {getattr(self, name)}"
                )
        for name in ("lr", "weight_decay", "text_lr_scale"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                raise InputError(
                    f"--{name.replace('_', '-')} must be a {'positive' if name == 'lr' else 'non-negative'} "
                    f"number, got {value}"
                )
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1, got {self.threads}")
        resolve_device(self.device)
        if self.tokenizer and not Path(self.tokenizer).is_file():
            raise InputError(
                f"tokenizer file {self.tokenizer} does not exist (pass a SentencePiece spiece.model)"
            )
        config = self.model_config
        if not isinstance(config, dict) or not all(
            isinstance(config.get(k), dict) for k in ("text_config", "vision_config")
        ):
            raise InputError(
                'the model config must be a JSON object with "text_config" and "vision_config" objects'
            )
        SiglipConfig.from_dict(config)  # malformed sizes fail here, in one line
