"""Every shell command a meeting kit tells its host to run live works as written.

A kit marks such a command with `<!-- run live -->` on the line before its ```bash block.
The block runs here exactly as written, from a folder that looks like the repository's root
(each top-level entry linked), so whatever it writes lands in a temporary folder instead of
the checkout. Run pytest with -s to see how long each took; the kit states its time.
"""

import re
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIVE = re.compile(r"<!-- run live -->\n```(?:bash|sh)\n(.*?)```", re.S)


def live_commands() -> list[tuple[str, str]]:
    return [(kit.parent.name, block) for kit in sorted(ROOT.glob("Meeting-*/README.md"))
            for block in LIVE.findall(kit.read_text(encoding="utf-8"))]


def test_the_pretraining_kit_has_a_live_command():
    assert any(meeting == "Meeting-5" for meeting, _ in live_commands())


@pytest.mark.parametrize("meeting, block", live_commands(),
                         ids=[f"{m}-{i}" for i, (m, _) in enumerate(live_commands())])
def test_a_live_command_runs_as_written(meeting, block, tmp_path):
    for entry in ROOT.iterdir():
        if entry.name != ".git":
            (tmp_path / entry.name).symlink_to(entry)
    start = time.perf_counter()
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    print(f"{meeting}: {time.perf_counter() - start:.0f} s for\n{block}")
    assert done.returncode == 0, done.stderr[-3000:]
