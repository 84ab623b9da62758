"""Screenshots of what a run shows, rendered in headless Chromium: the Snakemake report and the MLflow UI.

    .venv/bin/python docs/screenshots.py [--project .] [--out docs]

Run it after ``make run`` and ``make report``. It opens ``reports/report.html`` and the MLflow UI
(``mlflow ui`` started on a free 127.0.0.1 port over the project's ``mlflow.db``) at the experiment's
training runs, waits until each page shows what it must (the report: its Dataset, Examples and Models
sections, the split counts table and a model's confusion matrix; MLflow: every run's name and the
dataset the runs were trained on), and fails, naming the page, on any uncaught page error or console
error. Writes ``report.png``, ``report_dataset.png``, ``report_models.png`` and ``mlflow_runs.png``
to ``--out``. Chromium is Debian's (``make system-deps`` installs it), driven by Playwright.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = os.environ.get("SOUNDSTAGE_CHROMIUM", "/usr/bin/chromium")
# The machine's network is closed: without these Chromium keeps trying Google's hosts at start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1440, "height": 900}
# Browser notices that are not page failures: Chromium reports a ResizeObserver callback deferred to the
# next frame as an error event, and MLflow's UI logs it whenever a table resizes while it draws.
BENIGN_CONSOLE = ("ResizeObserver loop completed with undelivered notifications",
                  "ResizeObserver loop limit exceeded")


@dataclass
class Rendered:
    """One page rendered: its screenshot and every error the page raised or logged."""

    url: str
    screenshot: Path
    errors: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.missing


def console_error(kind: str, text: str, where: str, expected_404: Sequence[str] = ()) -> bool:
    """Whether a console message of type ``kind`` logged from ``where`` is a page error: an ``error``
    that is neither a ``BENIGN_CONSOLE`` notice nor a failed load of a URL ending with ``expected_404``."""
    if kind != "error" or any(b in text for b in BENIGN_CONSOLE):
        return False
    return not (expected_404 and where.endswith(tuple(expected_404)))


@contextlib.contextmanager
def browser() -> Iterator[object]:
    """A headless Chromium (Playwright ``Browser``) on the system's binary."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        raise FileNotFoundError(f"{CHROMIUM}: no Chromium; `make system-deps` installs Debian's")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def render(browser: object, url: str, screenshot: Path, *, expect: Sequence[str] = (),
           click: Sequence[str] = (), view: str | None = None, expected_404: Sequence[str] = (),
           timeout_s: float = 60.0) -> Rendered:
    """Open ``url``, click each text of ``click`` in turn, then (Snakemake report) the eye of the result
    row ``view`` and wait for its image to be drawn; wait for every text of ``expect``, and save a
    ``VIEWPORT``-sized PNG to ``screenshot``. Page errors and console errors are collected, not raised,
    but for failed loads of URLs ending with one of ``expected_404``."""
    result = Rendered(url, Path(screenshot))
    page = browser.new_page(viewport=VIEWPORT)

    def on_console(msg: object) -> None:
        where = (msg.location or {}).get("url", "")
        if console_error(msg.type, msg.text, where, expected_404):
            result.errors.append(f"console: {msg.text} ({where})")

    page.on("pageerror", lambda exc: result.errors.append(f"uncaught: {exc}"))
    page.on("console", on_console)
    page.set_default_timeout(timeout_s * 1000)
    page.goto(url, wait_until="load")
    for text in click:
        page.get_by_text(text, exact=True).first.click()
    if view is not None:
        page.locator("tr", has_text=view).first.locator("a[iconname=eye]").click()
        if not _shown(page, timeout_s):
            result.missing.append(f"the figure or table of {view!r}")
    deadline = time.monotonic() + timeout_s
    for text in expect:
        try:
            page.get_by_text(text).first.wait_for(state="visible",
                                                  timeout=max(1.0, deadline - time.monotonic()) * 1000)
        except Exception:  # Playwright's TimeoutError: the text never showed
            result.missing.append(text)
    with contextlib.suppress(Exception):  # a page that polls (MLflow's) is never idle: settle briefly
        page.wait_for_load_state("networkidle", timeout=5000)
    result.screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(result.screenshot))
    page.close()
    return result


def _shown(page: object, timeout_s: float) -> bool:
    """Whether the report's viewer draws the entry: a decoded image wider than the report's logo, or an
    HTML table in the frame it opens."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if page.evaluate("Array.from(document.images).some(i => i.complete && i.naturalWidth > 100)"):
            return True
        if any(frame.locator("table tr").count() > 1 for frame in page.frames[1:]):
            return True
        page.wait_for_timeout(250)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(db: Path, *, timeout_s: float = 120.0) -> Iterator[str]:
    """``mlflow ui`` over the SQLite store ``db`` on a free loopback port; yields its base URL."""
    if not db.is_file():
        raise FileNotFoundError(f"{db}: no MLflow store; run the pipeline first")
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", f"sqlite:///{db.resolve()}",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow ui exited ({proc.returncode}): {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow ui did not answer on {base} within {timeout_s:.0f} s")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def runs_to_show(db: Path) -> tuple[str, list[str], list[str]]:
    """The experiment to show (the one with most runs), its run names and its dataset names."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db.resolve()}")
    best = max(client.search_experiments(), key=lambda e: len(client.search_runs([e.experiment_id])))
    runs = client.search_runs([best.experiment_id])
    names = sorted({r.info.run_name for r in runs})
    datasets = sorted({d.dataset.name for r in runs for d in (r.inputs.dataset_inputs if r.inputs else [])})
    return best.experiment_id, names, datasets


def screenshots(project: Path, out: Path) -> list[Rendered]:
    """Render the project's Snakemake report and MLflow runs page; see the module docstring."""
    project, out = Path(project), Path(out)
    report = project / "reports/report.html"
    if not report.is_file():
        raise FileNotFoundError(f"{report}: no report; run `make report` first")
    db = project / "mlflow.db"
    experiment, names, datasets = runs_to_show(db)
    results = []
    with browser() as b:
        url = report.resolve().as_uri()
        results.append(render(b, url, out / "report.png", expect=["Dataset", "Examples", "Models"]))
        results.append(render(b, url, out / "report_dataset.png", click=["Dataset"], view="split counts per class"))
        results.append(render(b, url, out / "report_models.png", click=["Models", names[0]],
                              view="confusion matrix, test (counts)"))
        with mlflow_ui(db) as base:
            # The UI opens on GenAI views unless asked for the model-training one (MLflow 3.17 keeps the
            # choice per browser, not per experiment).
            results.append(render(b, f"{base}/#/experiments/{experiment}/runs?workflowType=machine_learning",
                                  out / "mlflow_runs.png", expect=[*names, *datasets],
                                  expected_404=["/mlflow/users/current"]))  # asked of servers with auth only
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--out", type=Path, default=Path("docs"))
    args = ap.parse_args(argv)
    failed = False
    for r in screenshots(args.project, args.out):
        print(f"{r.screenshot}  <- {r.url}")
        for e in r.errors:
            print(f"  error: {e}")
        for m in r.missing:
            print(f"  never shown: {m!r}")
        failed |= not r.ok
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
