"""Regenerate docs/report-audit.html and docs/report-audit.png (README, "HTML report").

The host is the captured tree tests/hosts/nearly-full-drops (a 95.7 % full table) with a
table dump written by tests/flowgen.py (the same four classes test_html_report uses),
audited with a 2-second polling window.  Needs the 'report' extra and chromium:

    .venv/bin/python docs/report-sample.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import flowgen  # noqa: E402
from conftest import materialize  # noqa: E402
from test_html_report import MIX  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        roots = materialize("nearly-full-drops", Path(tmp))
        (roots.procfs / "sys/kernel/hostname").write_text("gw-edge-01\n")
        flowgen.write_dump(roots, MIX)
        html = ROOT / "docs/report-audit.html"
        subprocess.run([sys.executable, "-m", "ct_tune", "audit", "--procfs", str(roots.procfs),
                        "--sysfs", str(roots.sysfs), "--duration", "2", "--interval", "0.5",
                        "--format", "html", "-o", str(html)], check=False)
        subprocess.run([shutil.which("chromium") or "chromium", "--headless", "--no-sandbox",
                        "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", f"--user-data-dir={tmp}/profile",
                        f"--screenshot={ROOT / 'docs/report-audit.png'}",
                        "--window-size=1200,3300", html.as_uri()],
                       check=True, capture_output=True)


if __name__ == "__main__":
    main()
