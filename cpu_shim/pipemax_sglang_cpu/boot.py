"""Interpreter start-up hook of the CPU environment (run from pipemax_sglang_cpu.pth).

Why it exists (measured, docs/sglang-on-cpu.md): on a CPU-only torch, three things
stop SGLang 0.5.23 before any PipeMax code could run, in every process, spawned children
included:

1. `SGLANG_USE_CPU_ENGINE=1` must be in the environment before sglang is imported, or
   `is_cpu()` is false and CUDA-only modules are imported. The torch of this environment is a
   CPU build, so CPU mode is always right here; a value the user set is kept.
2. With CPU mode on, sglang imports CPU kernels from `sgl_kernel`, whose CPU build is not on
   PyPI. A stand-in module answers every attribute with a function that raises
   NotImplementedError: on the paths we run (Llama, PP, HiCache) the names are only resolved
   at import, never called. The finder sits at the END of sys.meta_path, so a real
   sgl_kernel, if one is installed, always wins.
3. PyPI's torchvision is a CUDA build: importing it beside CPU torch fails with
   "operator torchvision::nms does not exist". transformers imports torchvision when it is
   installed, so the two op schemas it registers fakes for are defined first.

Cost: install() appends one finder; nothing is imported until sgl_kernel or torchvision is.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types

_STANDIN_DOC = "pipemax_sglang_cpu stand-in for sgl_kernel (CPU build not on PyPI)"


def _missing_kernel(name: str):
    def kernel(*args, **kwargs):
        raise NotImplementedError(
            f"sgl_kernel.{name} is not available on CPU (pipemax_sglang_cpu stand-in); "
            "this code path needs the real sgl_kernel"
        )

    kernel.__name__ = name.rsplit(".", 1)[-1]
    return kernel


class _StandInModule(types.ModuleType):
    """A package whose every missing attribute is a kernel that raises when called."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        kernel = _missing_kernel(f"{self.__name__}.{name}")
        setattr(self, name, kernel)
        return kernel


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        # A plain module, not a package: `from sgl_kernel.<sub> import ...` must still raise
        # ImportError, because sglang guards those imports and falls back (for example
        # quantization/utils.py:get_scalar_types).
        module = _StandInModule(spec.name, _STANDIN_DOC)
        module.PIPEMAX_STANDIN = True
        return module

    def exec_module(self, module):
        return None


class _TorchvisionPrep(importlib.abc.MetaPathFinder):
    """Defines torchvision's nms/qnms schemas just before torchvision is first imported."""

    done = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" and not _TorchvisionPrep.done:
            _TorchvisionPrep.done = True
            define_torchvision_schemas()
        return None  # let the normal finders load torchvision itself


class _SglKernelStandIn(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "sgl_kernel":
            return importlib.machinery.ModuleSpec(fullname, _Loader())
        return None


_LIBS: list = []  # keeps the torch.library fragments alive for the process lifetime


def define_torchvision_schemas() -> None:
    import torch

    if torch.cuda.is_available():  # a CUDA torch has torchvision's real ops
        return
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        try:
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:  # already defined (a CPU torchvision build)
            pass
    _LIBS.append(lib)


def install() -> None:
    os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")
    if not any(isinstance(f, _TorchvisionPrep) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionPrep())
        sys.meta_path.append(_SglKernelStandIn())
