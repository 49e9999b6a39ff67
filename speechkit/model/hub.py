"""Find a checkpoint: a local directory in the official layout, or a hub id fetched into the HF cache."""

from __future__ import annotations

import logging
from pathlib import Path

from speechkit.errors import CheckpointError

log = logging.getLogger(__name__)

RELEASED_MODEL = "microsoft/Phi-4-multimodal-instruct"
# the small model trained on synthetic speech that ships inside the package (recipes/synthetic_demo)
DEMO_MODEL = "demo"
DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"

# what the speech branch needs: configs, tokenizer, and the main shards (which carry the speech
# LoRA); the separate speech-lora/ and vision-lora/ folders are not needed
SPEECH_FILES = (
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "model.safetensors.index.json",
    "model-*.safetensors",
)


def resolve_checkpoint(model: str | Path) -> Path:
    """Local directory for ``model``: ``demo`` (the packaged demo model), an existing directory as is,
    else a hub id downloaded once.

    The download (~12 GB for the released model) goes to the standard Hugging Face cache
    (``HF_HOME``) with progress bars; later calls find it there, also offline.
    """
    if str(model) == DEMO_MODEL:
        if not (DEMO_DIR / "config.json").is_file():
            raise CheckpointError(f"the packaged demo model is missing from {DEMO_DIR}; reinstall speechkit")
        return DEMO_DIR
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    text = str(model)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise CheckpointError(
            f"{model}: no such checkpoint directory (and not a hub id like {RELEASED_MODEL})"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a core dependency
        raise CheckpointError("huggingface_hub is not installed; pip install huggingface_hub") from None
    try:
        return Path(snapshot_download(text, allow_patterns=list(SPEECH_FILES), local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached yet (the hub raises several error types); try online next
        pass
    log.info("downloading %s (speech files only, about 12 GB for the released model)", text)
    try:
        return Path(snapshot_download(text, allow_patterns=list(SPEECH_FILES)))
    except Exception as err:  # noqa: BLE001 - network, auth and not-found errors all end here
        raise CheckpointError(
            f"could not download {text} ({type(err).__name__}); without network, download it elsewhere "
            f"(huggingface-cli download {text}) and pass --model /path/to/that/directory"
        ) from None
