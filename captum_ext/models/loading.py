"""Load a user's model file without unpickling arbitrary code.

Accepted formats:

* **torch.export** archives (``torch.export.save``): loaded with ``torch.export.load`` and
  unflattened back into the original module hierarchy, so layers can be named and hooked.
* **TorchScript** archives (``torch.jit.save``): TorchScript is a restricted language, not
  arbitrary Python, so loading one runs no user code. TorchScript modules do not run Python
  hooks, though, so layer methods cannot explain them (:func:`supports_hooks` says so).

Refused: a pickled full model (``torch.save(model)``) or any other pickle, because unpickling can
run arbitrary code; the error explains how to export the model instead.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["UnsafeModelFileError", "load_model_file", "supports_hooks"]

_HOW_TO_EXPORT = (
    "Save the model with torch.export instead: "
    "torch.export.save(torch.export.export(model.eval(), (example_input,)), 'model.pt2')."
)


class UnsafeModelFileError(ValueError):
    """The file is a pickle; loading it could execute arbitrary code."""


def _archive_kind(path: Path) -> str:
    if not zipfile.is_zipfile(path):
        return "pickle"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(name.endswith("/archive_format") or name == "archive_format" for name in names):
        return "export"
    if any("/code/" in name for name in names):
        return "torchscript"
    return "pickle"


def load_model_file(path: str | Path) -> nn.Module:
    """Load a torch.export or TorchScript model file, in eval mode. Pickles are refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist.")
    kind = _archive_kind(path)
    if kind == "pickle":
        raise UnsafeModelFileError(
            f"{path} is a pickled file (torch.save of a model or a state dict). Pickles can run "
            f"arbitrary code when loaded, so captum-ext refuses them. {_HOW_TO_EXPORT}"
        )
    if kind == "export":
        program = torch.export.load(str(path))
        module = torch.export.unflatten(program)
    else:
        module = torch.jit.load(str(path), map_location="cpu")
    return module.eval()


def supports_hooks(model: nn.Module) -> bool:
    """Whether Python forward hooks run on this model (not on TorchScript modules)."""
    return not isinstance(model, torch.jit.ScriptModule)
