"""reasonbed: domain generalization experiments with multimodal LLMs on Ray.

Importing the package installs the torchvision import fix (see `reasonbed.compat.torchvision_fix`);
it is cheap and does nothing where torchvision's compiled ops load.
"""

from reasonbed.compat.torchvision_fix import install as _install_torchvision_fix

_install_torchvision_fix()

__version__ = "0.1.0"
