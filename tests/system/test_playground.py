"""The playground page in a real browser: headless Chromium (Debian's, driven by chromedriver) on a
real ``stylequeue api`` process, with the session's Redis, SeaweedFS (identities on) and worker.

The page is loaded, the key typed in, a content image and two styles with their masks chosen from
disk (uploaded through presigned PUTs), options set in the form generated from the JSON Schema, the
job submitted; its progress is shown from the event stream and the result image displayed.
``STYLEQUEUE_SCREENSHOT=PATH`` keeps the screenshot (docs/playground.png is one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from support.browser import Browser
from support.images import png_bytes, random_rgb
from support.processes import cli, frozen, start_api
from support.sse import streams_open
from support.waiting import wait_for

from producer.core.schema import job_schema

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(stack_env: dict[str, str], worker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(the API's URL, a key of tenant ``play``: reads inputs/play/, writes outputs/play/)."""
    keys_file = tmp_path_factory.mktemp("play-keys") / "keys.json"
    flags = ["--input", "inputs/play/", "--output", "outputs/play/", "--rate", "500", "--burst", "1000"]
    made = cli("keys", "create", "--tenant", "play", *flags, "--add-to", str(keys_file), env=stack_env, timeout=60)
    assert made.returncode == 0, made.stderr
    env = {**stack_env, "STYLEQUEUE_API_KEYS_FILE": str(keys_file), "STYLEQUEUE_METRICS_PORT": "0"}
    server = start_api(env, tmp_path_factory.mktemp("play-api") / "api.log")
    yield server.url, made.stdout.split("\n", 1)[0].strip()
    server.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "chromedriver.log")
    yield b
    b.close()


def test_the_page_is_served_with_a_strict_content_security_policy(api: tuple[str, str], stack_env) -> None:
    url, _ = api
    page = httpx.get(f"{url}/playground", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["connect-src"] == f"'self' {stack_env['STYLEQUEUE_S3_ENDPOINT_URL']}"  # presigned uploads
    assert csp["frame-ancestors"] == "'none'" and csp["form-action"] == "'none'"
    assert "<script>" not in page.text and " style=" not in page.text and "onclick" not in page.text
    for asset, kind in (("playground.js", "text/javascript"), ("playground.css", "text/css")):
        r = httpx.get(f"{url}/playground/{asset}", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
    for name in ("index.html", "__init__.py", "..%2Froutes%2Fplayground.py"):  # only the page's own files
        assert httpx.get(f"{url}/playground/{name}", timeout=10).status_code == 404, name


def test_a_job_from_the_page_shows_its_progress_and_its_result(
    api: tuple[str, str], browser: Browser, worker: Any, tmp_path: Path
) -> None:
    url, key = api
    content, style, style2 = tmp_path / "content.png", tmp_path / "style.png", tmp_path / "style2.png"
    content.write_bytes(png_bytes(random_rgb(48, 64, 1)))
    style.write_bytes(png_bytes(random_rgb(40, 40, 2)))
    style2.write_bytes(png_bytes(random_rgb(40, 40, 3)))
    left = np.zeros((24, 32, 3), np.uint8)  # the content's aspect: white on the left half
    left[:, :16] = 255
    mask, mask2 = tmp_path / "left.png", tmp_path / "right.png"
    mask.write_bytes(png_bytes(left))
    mask2.write_bytes(png_bytes(255 - left))

    browser.get(f"{url}/playground")
    browser.type("#key", key)
    browser.click("#key-form button")
    browser.wait("return !document.getElementById('app').hidden", 30, "the form shown")
    assert browser.text("#who") == "tenant play"
    # the options form: one control per option of the contract's schema
    options = job_schema()["properties"]["params"]["properties"]
    browser.wait(f"return document.querySelectorAll('#options .option').length === {len(options)}", 30, "options")
    assert browser.run("return document.getElementById('output').value") == "s3://outputs/play/"

    browser.type("#content-file", str(content), clear=False)  # chosen from disk
    browser.type("#style-file", str(style), clear=False)
    browser.type("#style-mask-file", str(mask), clear=False)
    browser.type("#style2-file", str(style2), clear=False)
    browser.type("#style2-mask-file", str(mask2), clear=False)
    browser.type("#opt-size", "32")
    browser.type("#opt-iterations", "20")
    browser.run("const s = document.getElementById('opt-precision'); s.value = JSON.stringify('float32');")
    browser.run(  # the job the page sends, kept
        "const send = window.fetch; window.posted = []; window.fetch = (u, o) => {"
        " if (u === '/v1/jobs' && o && o.method === 'POST') window.posted.push(JSON.parse(o.body));"
        " return send(u, o); };"
    )
    # what the page shows while the job runs, every change of it kept
    browser.run(
        "window.seen = []; new MutationObserver(() => window.seen.push("
        "document.getElementById('job-state').textContent + ' ' + document.getElementById('job-detail').textContent"
        ")).observe(document.getElementById('job'), {subtree: true, childList: true, characterData: true});"
    )
    with frozen(worker.proc.pid):  # the job waits in the queue until the page follows its events
        browser.click("#submit")
        wait_for(lambda: streams_open(url) >= 1, 60, "the page's event stream open")
        assert browser.text("#job-state") == "PENDING"
    browser.wait("return document.getElementById('job-state').textContent === 'SUCCESS'", 180, "the job's end")
    loaded = browser.wait(
        "const i = document.getElementById('result'); return !i.hidden && i.complete && i.naturalWidth", 60, "image"
    )
    assert loaded == 32  # the result, 32 px wide, fetched from the store by the browser
    job_id = browser.text("#job-id")
    seen = browser.run("return window.seen")
    assert any(s.startswith("PROGRESS iteration") and "/20" in s for s in seen), seen  # from the event stream
    assert browser.run("return document.getElementById('job-progress').value") == 1

    # the job, as the API has it: the uploaded inputs, the options set in the form
    job = httpx.get(f"{url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    assert job["state"] == "SUCCESS" and job["result"]["iterations"] == 20 and job["result"]["width"] == 32
    (sent,) = browser.run("return window.posted")
    assert [sorted(s) for s in sent["style"]] == [["mask", "uri"], ["mask", "uri"]]  # each style with its mask
    uploaded = [v for s in sent["style"] for v in s.values()]
    assert len(set(uploaded)) == 4 and all(u.startswith("s3://inputs/play/") for u in uploaded)
    browser.wait(f"return document.getElementById('recent').textContent.includes({json.dumps(job_id)})", 30, "list")

    problems = [e for e in browser.console() if e.get("level") == "SEVERE"]
    assert not problems, problems  # no script error, no CSP violation, no failed load
    keep = os.environ.get("STYLEQUEUE_SCREENSHOT")
    browser.run("window.scrollTo(0, 0)")
    browser.screenshot(Path(keep) if keep else tmp_path / "playground.png")


def test_a_wrong_key_is_refused_and_not_kept(api: tuple[str, str], browser: Browser) -> None:
    url, _ = api
    browser.get(f"{url}/playground")
    browser.type("#key", "sq_not-a-key")
    browser.click("#key-form button")
    message = browser.wait("return document.getElementById('error').textContent", 30, "an error shown")
    assert message.startswith("401 Unauthorized"), message
    assert browser.run("return sessionStorage.getItem('stylequeue.key')") is None
    assert browser.run("return document.getElementById('app').hidden") is True
