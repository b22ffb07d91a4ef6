"""`reasonbed install-startup-hook`: make every Python process of this environment apply the torchvision fix.

Writes (or with --uninstall removes) the startup file `reasonbed_torchvision_fix.pth` in
site-packages (see reasonbed.compat.torchvision_fix); `make setup` runs it.
"""

from __future__ import annotations

import argparse
from typing import Any

from reasonbed.cli.base import Command


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uninstall", action="store_true", help="remove the startup file instead")


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    from reasonbed.compat import torchvision_fix

    return {"action": "uninstall" if args.uninstall else "install", "file": str(torchvision_fix.startup_file())}


def execute(resolved: dict[str, Any], args: argparse.Namespace) -> int:  # noqa: ARG001
    from reasonbed.compat import torchvision_fix

    if resolved["action"] == "uninstall":
        torchvision_fix.uninstall_startup_file()
        print(f"removed {torchvision_fix.startup_file()}")
    else:
        print(f"wrote {torchvision_fix.install_startup_file()}")
    return 0


COMMAND = Command(name="install-startup-hook", summary="make every Python process of this environment apply "
                  "the torchvision fix", doc=__doc__, configure=configure, resolve=resolve, execute=execute)
