"""Why a checkpoint file does not load, in a few words (a torn write, a pickle that names
code, a directory), for the one-line errors of resume, eval and `model.pretrained`."""
from __future__ import annotations

import pickle


def load_reason(error: BaseException) -> str:
    """What went wrong loading a checkpoint, in a few words: torch's messages lead with
    advice to load unsafely; the reason (`unsupported GLOBAL posix.system`) is further down."""
    text = str(error).strip()
    if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in text:
        lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
        lines = [line.split("WeightsUnpickler error:")[-1].strip() for line in lines
                 if not line.startswith("Check the documentation") and "weights_only" not in line
                 or "WeightsUnpickler error:" in line]
        detail = "; ".join(line for line in lines if line) or "an object outside the allow-list"
        detail = detail.replace("Trying to load ", "")
        if "GLOBAL" in detail or "global" in detail:
            return f"refused: the pickle names {detail} (a checkpoint is data, never code)"
        return f"not a torch checkpoint ({detail})"
    if isinstance(error, EOFError) or (not text and isinstance(error, (OSError, RuntimeError))):
        return "empty or truncated file"
    if "failed finding central directory" in text or "PytorchStreamReader" in text:
        first = text.split(". This is")[0].split("failed reading zip archive: ")[-1]
        return f"not a complete checkpoint (torn or truncated: {first})"
    if isinstance(error, (UnicodeDecodeError, pickle.UnpicklingError)):
        return f"not a torch checkpoint ({type(error).__name__}: {text.splitlines()[0][:120]})"
    if isinstance(error, IsADirectoryError):
        return "is a directory, not a checkpoint file"
    if isinstance(error, OSError):
        return f"cannot read ({error.strerror or text})"
    first = next((line for line in text.splitlines() if "weights_only" not in line), "")
    return f"does not load ({type(error).__name__}: {first[:160]})"
