"""Where model.py's models come from, and the noise on the way (a reader does not need this file to understand MOSAIC).

A model name becomes a folder to load (model_path: the shipped tiny base, the tiny build and SmolLM2 of
plumbing/hub.py, a local folder, a hub id in the local cache or, where the hub is reachable, to download); bitsandbytes'
4-bit config and the guard its CPU kernels need; whether a device runs bf16 natively; the known warnings of
transformers, peft and bitsandbytes quieted, once at import (before any of them loads a model) and again in quiet()
for callers, like pytest, that reset the filters. Every failure is one line: ModelError.
"""
import contextlib
import logging
import os
import warnings

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "Failed to load CPU gemm_4bit_forward ..." at import
NOISE = [".*gradient_checkpointing_enable.*deprecated.*", ".*is_gradient_checkpointing.*deprecated.*",
         ".*use_reentrant.*", ".*torch_dtype.*deprecated.*", ".*torch.jit.script_method.*"]  # last: bnb import
for _pattern in NOISE:
    warnings.filterwarnings("ignore", message=_pattern)


@contextlib.contextmanager
def quiet():
    """The same filters again, for callers (like pytest) that reset the global ones."""
    with warnings.catch_warnings():
        for pattern in NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        yield

import torch  # noqa: E402
import transformers  # noqa: E402

from plumbing import hub  # noqa: E402
from plumbing.hub import ModelError  # noqa: E402

transformers.utils.logging.set_verbosity_error()  # generation-flag and loading warnings
transformers.utils.logging.disable_progress_bar()


def model_path(name, cache_dir, base_dir, tiny_texts=None):
    """(folder, extra from_pretrained kwargs) of a model name: "tiny" (built once into cache_dir), "tiny-base" (the
    shipped base_dir), "smollm2-135m" (converted once into cache_dir), a local model folder, or a hub id (from the
    local hub cache if there, else downloaded). A name that names none of them is a ModelError."""
    if name == "tiny":
        return hub.tiny_dir(cache_dir, tiny_texts), {}
    if name == "tiny-base":
        if not os.path.isfile(os.path.join(base_dir, "config.json")):
            raise ModelError(f"no tiny base in {base_dir}: build it with `python train.py --preset base`")
        return base_dir, {}
    if name == "smollm2-135m":
        return hub.smollm2_dir(cache_dir), {}
    if os.path.isdir(name):
        if os.path.isfile(os.path.join(name, "adapter_config.json")):
            raise ModelError(f"{name} holds a LoRA adapter, not a model: pass it as adapter= with its base model")
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise ModelError(f"{name} holds no model (no config.json)")
        return name, {}
    try:  # a hub id: from the local hub cache if there, else download
        transformers.AutoTokenizer.from_pretrained(name, local_files_only=True)
        return name, {"local_files_only": True}
    except Exception:
        if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not an "org/name" hub id
            raise ModelError(f"no such model directory: {name}") from None
        if not hub.hub_reachable():
            raise ModelError(f"unknown model '{name}': not 'tiny', 'smollm2-135m', a model directory, or a hub "
                             "id in the local cache (the hub is unreachable)") from None
    return name, {}


def bnb_config(device):
    """bitsandbytes' NF4 config (double quantization; bf16 compute on a GPU, fp32 on a CPU), or a ModelError where
    bitsandbytes cannot run here: before any download or conversion."""
    try:
        with quiet():
            import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except Exception as e:  # ImportError, or a broken native library
        raise ModelError(f"4-bit needs a working bitsandbytes ({type(e).__name__}: {str(e).splitlines()[0]}); "
                         "use quant='none'") from None
    if torch.device(device).type not in ("cuda", "cpu", "xpu"):
        raise ModelError(f"4-bit (bitsandbytes) cannot run on device '{device}'; use quant='none'")
    compute = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def guard_4bit_cpu(model):
    """Stop bitsandbytes from repacking 4-bit weights on a no-grad CPU forward (it breaks later gradients)."""
    import bitsandbytes as bnb
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
    return model


def native_bf16(device):
    """Whether `device` runs bf16 matmuls in hardware: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX (as
    oneDNN reports it). Elsewhere bf16 is emulated and slower than fp32."""
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        except (AssertionError, RuntimeError):  # a torch without CUDA asked about a CUDA device
            return False
    if dev.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def first_line(e):
    """An exception's first line (at most 300 characters), for a one-line ModelError."""
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
