"""The README's headline usage on one machine, step by step (issue 12, item 8).

Reads the bash block under "One machine, through a local Ray head" in README.md and runs each of its
lines, in order, against a head of its own: the environment of the activated venv (this
interpreter's folder first on PATH), `RAY_AUTH_MODE=token`, `ray get-auth-token --generate` into an
own HOME, the README's `ray start --head ...` plus isolation flags (own ports and temp dir,
`--block` in an own process session, since other Rays share this machine), then every `ray job
submit` line as written, from the repository root, with RAY_ADDRESS naming the head's own port. The
real smoke sweep is the suite's one end-to-end tune_pacs smoke: chains, both smoke methods in
parallel studies, the zero-shot row, the report; it runs as written, shrunk by key=value overrides to
one test domain, one draw and four steps on the random tiny model, each trial training in its own
Tune actor as `--smoke-test` sets it (`train.scale.backend=local`; sweep trials on Ray Train run in
tests/test_sweep_control.py's S3 scenario) - `make run` is the full one, on the pretrained model.
`ray stop` stops every Ray of the user on the machine, so here it stops only the head's own process
session. A line the test does not know fails it, so README and test cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import RANDOM_MODEL, free_port, short_temp_dir
from own_ray_head import RAY_BIN, OwnRayHead, session_pids

REPO = Path(__file__).resolve().parents[1]
SECTION = "## One machine, through a local Ray head"
# The README's smoke sweep, shrunk for the suite: one test domain, one draw, four steps, trials in process, the
# random tiny model (the steps are what is shown, not learning: `make run` shows that; so the test runs while the
# pretrained model builds).
SMOKE_SHRUNK = ("data.images_per_class=3", "test_domains=[photo]", "num_samples=1", "train.optim.max_steps=4",
                "train.eval.every=2", "train.eval.max_per_domain=4", f"train.{RANDOM_MODEL}")


def readme_steps() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    section = text.split(SECTION, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)[1]
    return [shlex.split(line, comments=True) for line in block.splitlines() if shlex.split(line, comments=True)]


def test_readme_steps_are_the_headline() -> None:
    steps = [" ".join(step) for step in readme_steps()]
    assert steps[0] == "source .venv/bin/activate" and "export RAY_AUTH_MODE=token" in steps
    assert "ray job submit --working-dir . -- python jobs/tune_pacs.py --smoke-test --dry-run" in steps
    assert "ray job submit --working-dir . -- python jobs/tune_pacs.py --smoke-test" in steps
    assert steps[-1] == "ray stop"


def _run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_readme_headline_steps_on_an_own_head() -> None:
    root = short_temp_dir("rbr-")
    head = OwnRayHead(root, None, head_cpus=2, gcs_port=free_port())
    env = {key: value for key, value in head.env.items() if key != "RAY_AUTH_TOKEN"}  # the token file only
    env.pop("RAY_AUTH_MODE")
    outputs: dict[str, str] = {}
    try:
        for step in readme_steps():
            line = " ".join(step)
            if line == "source .venv/bin/activate":
                venv = Path(sys.executable).parents[1]
                env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
            elif step[0] == "export":
                key, _, value = step[1].partition("=")
                env[key] = value
            elif step[:2] == ["ray", "get-auth-token"]:
                result = _run([RAY_BIN, *step[1:]], env, 60)
                assert result.returncode == 0, result.stderr
                head.token = (root / "home" / ".ray" / "auth_token").read_text().strip()
            elif step[:3] == ["ray", "start", "--head"]:
                assert env.get("RAY_AUTH_MODE") == "token", "the head starts with token auth"
                given = {word.split("=", 1)[0] for word in step}
                own = [word for word in head.command[2:] if word.split("=", 1)[0] not in given]
                head.command = [RAY_BIN, *step[1:], *own]
                head.env = env
                head.start()
                env["RAY_ADDRESS"] = head.dashboard_url  # the README's default address, on the head's own port
            elif step[:3] == ["ray", "job", "submit"]:
                job = step[step.index("--") + 1:]
                if job[:2] == ["python", "jobs/tune_pacs.py"] and "--dry-run" not in job:
                    step = [*step, *SMOKE_SHRUNK]
                result = _run([RAY_BIN, *step[1:]], env, 1200)
                assert result.returncode == 0, f"{line}:\n{(result.stdout + result.stderr)[-4000:]}"
                assert "succeeded" in result.stdout + result.stderr
                outputs[" ".join(job)] = result.stdout
            elif step == ["ray", "stop"]:
                head.stop()
                assert not [pid for pid in session_pids(head.proc.pid) if pid != os.getpid()]
            else:
                pytest.fail(f"README step the test does not know: {line!r}")
    finally:
        head.stop()
        shutil.rmtree(root, ignore_errors=True)
    smoke = outputs["python jobs/tune_pacs.py --smoke-test"]
    assert '"report"' in smoke and "report.html" in smoke
    assert all(f"{method}-photo-s0" in smoke for method in ("direct", "mtct")), smoke[-6000:]
    dry = outputs["python jobs/tune_pacs.py --smoke-test --dry-run"]
    assert "reasonbed tune: resolved config (dry run: nothing started)" in dry and "methods: [direct, mtct]" in dry
    summary = json.loads(outputs["python jobs/cluster_check.py --smoke-test"].split("cluster_check:", 1)[1]
                         .splitlines()[0])
    assert summary["ok"], summary["errors"]
    assert all(task["setup_hook_active"] and task["torchvision"] for task in summary["tasks"])
    assert "working_dir" in summary["driver_runtime_env"]["fields"]
