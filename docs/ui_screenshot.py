"""Take the README's screenshot: the sweep's models compared in the MLflow UI, in a real browser.

Serves mlflow.db with `mlflow server` on a free 127.0.0.1 port and points Debian's headless
Chromium (`apt-get install chromium`) at the compare view of the newest sweep's model runs.

    python docs/ui_screenshot.py [--out docs/mlflow_compare.png]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs" / "mlflow_compare.png"))
    ap.add_argument("--store", default=str(ROOT / "mlflow.db"))
    args = ap.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        sys.exit("error: no chromium on PATH; install Debian's package: apt-get install chromium")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"sqlite:///{Path(args.store).resolve()}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            uri,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(120):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("vaebic")
        parent = client.search_runs(
            [exp.experiment_id], "tags.`vaebic.role` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1
        )[0]
        children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        ids = [r.info.run_id for r in sorted(children, key=lambda r: int(r.data.tags["latent_dim"]))]
        url = f"http://127.0.0.1:{port}/#/compare-runs?runs={quote(json.dumps(ids))}&experiments={quote(json.dumps([exp.experiment_id]))}"
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    f"--user-data-dir={profile}",
                    "--hide-scrollbars",
                    "--window-size=1600,1100",
                    "--virtual-time-budget=20000",
                    f"--screenshot={args.out}",
                    url,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=180,
            )
        print(f"wrote {args.out} ({url})")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
