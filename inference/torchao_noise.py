"""Two harmless messages that torchao 0.18 brings with torch 2.14 and diffusers 0.42, dropped by
their exact text on their own loggers (installed by ``inference/__init__.py``, so before anything
imports diffusers or torchao). Importing diffusers' pipelines imports its torchao quantizer,
which imports torchao when it is installed (the ``quant`` extra):

* ``torch.utils._pytree``: "<enum 'KernelPreference'> is an Enum subclass and is now natively
  supported by torch.compile ...", once for each of torchao's config enums: torchao registers
  them as pytree constants (``torchao.utils.register_as_pytree_constant``), which torch 2.14
  deprecates. Only enums from torchao are dropped.
* ``diffusers.quantizers.torchao.torchao_quantizer``: "Unable to import `torchao` Tensor
  objects": diffusers allow-lists torchao's ``NF4Tensor`` and ``torchao.dtypes.uintx`` classes
  for ``torch.load``, and torchao 0.18 no longer has them. Only checkpoints pickled with
  torchao tensors need them, and Easel never loads one (safetensors, GGUF, or weights-only
  pickles of plain tensors).
"""

from __future__ import annotations

import logging

PYTREE_LOGGER = "torch.utils._pytree"
DIFFUSERS_TORCHAO_LOGGER = "diffusers.quantizers.torchao.torchao_quantizer"
_ENUM_DEPRECATION = "%s is an Enum subclass and is now natively supported by torch.compile"
_TENSOR_IMPORT = "Unable to import `torchao` Tensor objects"


class _TorchaoNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if record.name == PYTREE_LOGGER and message.startswith(_ENUM_DEPRECATION):
            args = record.args if isinstance(record.args, tuple) else ()
            module = str(getattr(args[0], "__module__", "")) if args else ""
            return not module.startswith("torchao.")
        return not (record.name == DIFFUSERS_TORCHAO_LOGGER and message.startswith(_TENSOR_IMPORT))


_FILTER = _TorchaoNoise()


def silence_torchao_noise() -> None:
    """Drop the two messages above (idempotent: one filter on each logger)."""
    for name in (PYTREE_LOGGER, DIFFUSERS_TORCHAO_LOGGER):
        logging.getLogger(name).addFilter(_FILTER)
