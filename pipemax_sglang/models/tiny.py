"""The built-in model: a deterministic tiny Llama and its tokenizer, built locally in seconds.

No model hub is reachable from our machines, and no PyPI package ships small generative
weights, so the demo and the tests build their own checkpoint. It is an ordinary Hugging Face
model directory (config.json, model.safetensors, tokenizer.json, ...): SGLang loads it through
its own loader exactly as it would any other Llama.

- Weights: LlamaForCausalLM(vocab 1024, hidden 128, intermediate 256, 4 layers, 4 heads /
  2 KV heads, fp32; 0.85 M parameters, 3.4 MB) from a seeded generator: projections
  N(0, 0.08), embeddings N(0, 1), RMSNorm weights 1, lm_head N(0, 0.5). Token-for-token
  parity with another implementation (HF vs SGLang's CPU kernels) needs greedy choices that
  float32 rounding cannot flip: with unit norms and a wide lm_head, logits spread with a
  standard deviation of about 5, so the top two are rarely within rounding of each other.
  (Version 1 drew the norm weights N(0, 0.08) too; its logits were nearly flat and SGLang
  and HF disagreed on near-ties.) Random weights emit EOS early: callers pass ignore_eos=True.
- Tokenizer: byte-level BPE trained with `tokenizers` on a fixed list of standard-library
  modules (Python source is the only sizeable text every machine has), wrapped as
  PreTrainedTokenizerFast with a chat template, so /v1/chat/completions works.

Determinism: same Python minor version and same library pins -> byte-identical files. The
directory carries a stamp of the recipe; a changed recipe rebuilds.
"""

from __future__ import annotations

import json
import os
import shutil
import sysconfig
import tempfile
from pathlib import Path

TINY_MODEL_RECIPE = {
    "version": 2,
    "vocab_size": 1024,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "init_std": 0.08,
    "embed_std": 1.0,
    "lm_head_std": 0.5,
    "seed": 0,
}

# Modules present in every CPython 3.10-3.13 standard library; their text trains the BPE.
_CORPUS_MODULES = (
    "abc", "argparse", "ast", "base64", "bisect", "calendar", "cmd", "code", "codecs",
    "colorsys", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "dis", "enum", "filecmp", "fileinput", "fnmatch", "fractions",
    "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac",
    "inspect", "ipaddress", "keyword", "linecache", "locale", "mailbox", "mimetypes",
    "netrc", "numbers", "operator", "optparse", "pathlib", "pickle", "pkgutil", "platform",
    "plistlib", "pprint", "queue", "quopri", "random", "reprlib", "sched", "secrets",
    "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "statistics",
    "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit",
    "token", "tokenize", "trace", "traceback", "types", "typing", "uuid", "warnings",
    "wave", "weakref", "webbrowser", "zipfile",
)

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_STAMP = "pipemax_tiny_model.json"


def default_tiny_model_dir() -> Path:
    """Where the built-in model lives unless told otherwise (PIPEMAX_HOME overrides)."""
    from pipemax_sglang import env

    return Path(env.home()) / "models" / f"tiny-llama-v{TINY_MODEL_RECIPE['version']}"


def ensure_tiny_model(path: str | os.PathLike | None = None) -> str:
    """Build the tiny model at `path` (default: default_tiny_model_dir()) unless it is current.

    Returns the directory as a string, ready for `model_path=`. Built into a temporary
    sibling and renamed, so concurrent callers never see a half-written model.
    """
    target = Path(path) if path is not None else default_tiny_model_dir()
    stamp = target / _STAMP
    if stamp.exists() and json.loads(stamp.read_text()) == TINY_MODEL_RECIPE:
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        _build(tmp)
        (tmp / _STAMP).write_text(json.dumps(TINY_MODEL_RECIPE, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except FileExistsError:  # another process won the race with an identical build
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(target)


def _corpus_files() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [str(stdlib / f"{name}.py") for name in _CORPUS_MODULES]
    return [f for f in files if os.path.exists(f)]


def _build_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    r = TINY_MODEL_RECIPE
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=r["vocab_size"],
        special_tokens=[PAD, BOS, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(_corpus_files(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def _build(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    r = TINY_MODEL_RECIPE
    _build_tokenizer(out)
    config = LlamaConfig(
        vocab_size=r["vocab_size"],
        hidden_size=r["hidden_size"],
        intermediate_size=r["intermediate_size"],
        num_hidden_layers=r["num_hidden_layers"],
        num_attention_heads=r["num_attention_heads"],
        num_key_value_heads=r["num_key_value_heads"],
        max_position_embeddings=r["max_position_embeddings"],
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    gen = torch.Generator().manual_seed(r["seed"])
    with torch.no_grad():
        model = LlamaForCausalLM(config)
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                param.fill_(1.0)
                continue
            std = r["init_std"]
            if "embed_tokens" in name:
                std = r["embed_std"]
            elif name.startswith("lm_head"):
                std = r["lm_head_std"]
            param.copy_(torch.randn(param.shape, generator=gen) * std)
    model.save_pretrained(out, safe_serialization=True)


