"""SigLIP in plain PyTorch, with the public API of Hugging Face transformers' SigLIP."""

from .auto import AutoImageProcessor, AutoModel, AutoProcessor, AutoTokenizer
from .config import SiglipConfig, SiglipTextConfig, SiglipVisionConfig
from .errors import CheckpointError, InputError, ModelNotCachedError, SiglipSearchError
from .image_processor import SiglipImageProcessor
from .loss import sigmoid_loss
from .model import SiglipModel, SiglipTextModel, SiglipVisionModel
from .pipeline import pipeline
from .processor import SiglipProcessor
from .tokenizer import SiglipTokenizer

__all__ = [
    "AutoImageProcessor", "AutoModel", "AutoProcessor", "AutoTokenizer",
    "SiglipConfig", "SiglipTextConfig", "SiglipVisionConfig",
    "CheckpointError", "InputError", "ModelNotCachedError", "SiglipSearchError",
    "SiglipImageProcessor", "SiglipModel", "SiglipTextModel", "SiglipVisionModel",
    "SiglipProcessor", "SiglipTokenizer", "pipeline", "sigmoid_loss",
]
__version__ = "0.1.0"
