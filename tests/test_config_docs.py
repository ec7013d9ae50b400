"""The configuration as documented is the configuration as it is: README's table and
config/shardcast.ini come from the commands the README gives, run now (both once lacked
api_workers)."""
from __future__ import annotations

import re
import subprocess
import sys

from harness import REPO_ROOT

README = REPO_ROOT / "README.md"


def run(*command: str) -> str:
    return subprocess.run([sys.executable, *command], cwd=REPO_ROOT, check=True,
                          capture_output=True, text=True, timeout=60).stdout


def test_the_readme_table_is_what_its_refresh_command_prints():
    text = README.read_text()
    command = re.search(r'^python -c "(.*render_markdown_table.*)"$', text, re.MULTILINE).group(1)
    table = run("-c", command)
    start = text.index("| key | default | meaning |")
    assert text[start:text.index("\n\n", start) + 1] == table


def test_config_shardcast_ini_is_what_make_config_writes(tmp_path):
    written = tmp_path / "shardcast.ini"
    run("-m", "shardcast", "make-config", "-o", str(written))
    assert written.read_text() == (REPO_ROOT / "config" / "shardcast.ini").read_text()
