"""Make PyPI's CUDA torchvision importable beside the CPU build of torch.

PyPI's torchvision 0.28.0 wheel is built against CUDA torch; beside the CPU torch its compiled ops
fail to load, and `torchvision._meta_registrations` then dies with "operator torchvision::nms does
not exist" while registering fake kernels. vLLM's and transformers' Qwen2-VL processing import
torchvision, so this import hook defines the two op schemas that module needs (`torchvision::nms`,
`torchvision::qnms`) just before it runs, and only when torchvision's compiled ops did not load.
Where torchvision is a matching build, the hook does nothing.

`install()` is cheap (it adds one meta-path finder, importing nothing heavy). It reaches every
process that may import torchvision in three ways:
- a startup file `reasonbed_torchvision_fix.pth` in the environment's site-packages (written by
  `python -m reasonbed install-startup-hook`, which `make setup` runs) makes every Python process
  of the environment install it at start-up: the driver, Ray workers, and the subprocesses vLLM
  starts (its model-registry inspector and engine processes import torchvision before any plugin);
- `import reasonbed` installs it;
- Ray's `worker_process_setup_hook` (see `reasonbed.ray_runtime`) installs it in every Ray worker,
  for clusters whose environment was set up without the startup file.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

_TARGET = "torchvision._meta_registrations"
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_libraries: list[object] = []  # keep torch.library.Library objects alive (they unregister on GC)


def _compiled_ops_loaded() -> bool:
    try:
        import torch

        torch.ops.torchvision.nms  # noqa: B018 - raises when the schema is missing
        return True
    except (AttributeError, RuntimeError):
        return False


def define_missing_schemas() -> list[str]:
    """Define the schemas torchvision's meta registrations need; returns the names defined."""
    if _compiled_ops_loaded():
        return []
    import torch

    library = torch.library.Library("torchvision", "FRAGMENT")
    defined = []
    for name, schema in _SCHEMAS.items():
        try:
            getattr(torch.ops.torchvision, name)
            continue
        except (AttributeError, RuntimeError):
            library.define(schema)
            defined.append(name)
    _libraries.append(library)
    return defined


class _Loader(importlib.abc.Loader):
    def __init__(self, wrapped: importlib.abc.Loader) -> None:
        self._wrapped = wrapped

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._wrapped.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        define_missing_schemas()
        self._wrapped.exec_module(module)


class TorchvisionOpsFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of `torchvision._meta_registrations` to define missing schemas first."""

    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if fullname != _TARGET:
            return None
        for finder in sys.meta_path:
            if type(finder).__name__ == "TorchvisionOpsFinder":
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


def install() -> None:
    """Install the import hook once per process (idempotent, imports nothing heavy)."""
    if any(type(finder).__name__ == "TorchvisionOpsFinder" for finder in sys.meta_path):  # any copy of this module
        return
    sys.meta_path.insert(0, TorchvisionOpsFinder())
    if _TARGET in sys.modules:  # torchvision already imported (successfully) before us
        return


PTH_NAME = "reasonbed_torchvision_fix.pth"
# A .pth line that starts with "import" is executed at interpreter start-up; it must never fail. It loads
# this file under a private name WITHOUT importing the `reasonbed` package, so a script may still put another
# checkout's platform/ first on sys.path (jobs/*.py do) and import that one.
_STARTUP_CODE = """try:
    import importlib.util as _u, os as _o
    _s = _u.find_spec('reasonbed')
    if _s is not None and _s.submodule_search_locations:
        _f = _o.path.join(list(_s.submodule_search_locations)[0], 'compat', 'torchvision_fix.py')
        _m = _u.spec_from_file_location('_reasonbed_torchvision_fix', _f)
        _x = _u.module_from_spec(_m)
        _m.loader.exec_module(_x)
        _x.install()
except Exception:
    pass
"""
PTH_LINE = f"import sys; exec({_STARTUP_CODE!r})\n"


def startup_file(site_packages: str | None = None) -> str:
    import os
    import sysconfig

    return os.path.join(site_packages or sysconfig.get_paths()["purelib"], PTH_NAME)


def install_startup_file(site_packages: str | None = None) -> str:
    """Write the .pth startup file into site-packages (idempotent); returns its path."""
    path = startup_file(site_packages)
    with open(path, "w") as handle:
        handle.write(PTH_LINE)
    return path


def uninstall_startup_file(site_packages: str | None = None) -> None:
    import os

    path = startup_file(site_packages)
    if os.path.exists(path):
        os.remove(path)
