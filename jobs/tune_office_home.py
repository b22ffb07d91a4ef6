"""Tune methods on OfficeHome with leave-one-domain-out splits (Ray Tune + Optuna + ASHA), then report.

`python jobs/tune_office_home.py --help` lists the flags and the commands for one machine and for a cluster
(the shared text is reasonbed.tune.job.USAGE); `--smoke-test` runs on the embedded default.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # runnable from a checkout
    import reasonbed  # noqa: F401 - torchvision fix before anything imports it
    from reasonbed.tune.job import entry

    entry("office_home", __doc__)
