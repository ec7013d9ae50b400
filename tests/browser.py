"""Running Node scripts from pytest: the JS client's unit tests and the Chromium tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import REPO_ROOT, Server

BROWSER_DIR = REPO_ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NODE_TIMEOUT = 240
SETUP_HINT = "run tests/browser/setup.sh (tox does before the suite)"


def _missing(need_browser: bool) -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if need_browser and not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}"
    if need_browser and not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed in tests/browser"
    return None


def require(need_browser: bool = True) -> None:
    """Fail, saying how to fix it, when a tool the test needs is missing."""
    missing = _missing(need_browser)
    if missing is not None:
        pytest.fail(f"{missing}: {SETUP_HINT}", pytrace=False)


def run_node(args: list[str], env: dict[str, str] | None = None, cwd: Path = REPO_ROOT,
             timeout: float = NODE_TIMEOUT) -> str:
    """Run ``node ARGS``; on a non-zero exit, fail the test showing everything it printed."""
    completed = subprocess.run(
        ["node", *args], cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if completed.returncode != 0:
        pytest.fail(f"node {' '.join(args)} exited {completed.returncode}:\n{completed.stdout}",
                    pytrace=False)
    return completed.stdout


def run_e2e(script: str, server: Server | None = None, **env: str) -> str:
    """One tests/browser/*.e2e.mjs file, in Chromium, against ``server`` (if any)."""
    require()
    if server is not None:
        env = {"SHARDCAST_API": server.api, "SHARDCAST_SECRET": server.secret, **env}
    return run_node(["--test", "--test-reporter=spec", str(BROWSER_DIR / script)],
                    {"CHROMIUM": CHROMIUM, **env})
