"""The pages in a real browser: Debian's chromium driven by Playwright (no browser download).

The live page follows a synthetic run (the label changes, the chart grows, captures appear and
one is relabelled from its thumbnail); the relabel page of `edgesight review` files two
captures by a click and a key, on a phone-sized screen. Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

import os
import shutil

import pytest

from edgesight.edge.captures import read_records

from .test_web import BGR, Server, jpeg, make_capture_folder

CHROMIUM = os.environ.get("EDGESIGHT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


@pytest.fixture(scope="module")
def browser():
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "playwright is not installed: pip install -e '.[dev]'"
    if why is None and not os.path.exists(CHROMIUM):
        why = f"no browser at {CHROMIUM}: apt-get install chromium (or set EDGESIGHT_CHROMIUM)"
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def watch(page) -> list:
    """The page's script errors and failed requests, collected as they happen."""
    problems: list = []
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    return problems


def number(page, selector: str, attribute: str) -> int:
    return int(page.get_attribute(selector, attribute) or 0)


def test_live_page_follows_a_synthetic_run(browser, color_bundle, tmp_path):
    captures = tmp_path / "captures"
    run = Server(["run", color_bundle, "--source", "synthetic:320x240@15", "--roi", "120,80,80,80", "--http", "127.0.0.1:0",
                  "--capture", captures, "--capture-every", "1", "--stats-interval", "1", "--quiet"],
                 r"serving the live view at (http://\S+/)")
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems = watch(page)
        page.goto(run.url)
        page.wait_for_function("() => document.getElementById('label').textContent !== 'waiting for results'", timeout=20000)
        assert page.inner_text("#label") in ("blue", "green", "red")
        page.wait_for_function("() => Number(document.getElementById('chart').dataset.points) >= 5", timeout=20000)
        before = number(page, "#chart", "data-points")
        page.wait_for_function(f"() => Number(document.getElementById('chart').dataset.points) >= {before + 10}", timeout=20000)
        # the synthetic pattern's moving block crosses the window: the reported label changes
        page.wait_for_function("() => Number(document.body.dataset.labelChanges) >= 2", timeout=30000)
        assert number(page, "#timeline", "data-segments") >= 2
        page.wait_for_function("() => document.getElementById('fps').textContent !== '-'", timeout=20000)
        assert float(page.inner_text("#fps")) > 0 and page.inner_text("#p50").endswith(" ms")
        assert page.inner_text("#drift-state") in ("ok", "ALERT", "no baseline")
        page.wait_for_function("() => [...document.querySelectorAll('#thumbs img')].some(i => i.complete && i.naturalWidth > 0)",
                               timeout=20000)
        stream = page.evaluate("(() => { const i = document.getElementById('stream'); return [i.naturalWidth, i.naturalHeight]; })()")
        assert stream == [320, 240]
        page.screenshot(path=str(tmp_path / "live.png"), full_page=True)

        phone = browser.new_page(**PHONE)
        problems += watch(phone)
        phone.goto(run.url)
        phone.wait_for_function("() => Number(document.getElementById('chart').dataset.points) >= 3", timeout=20000)
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        phone.screenshot(path=str(tmp_path / "live-phone.png"), full_page=True)

        # a thumbnail leads to the relabel page, where one click files it under another class
        thumb = page.locator("#thumbs a").first
        file = thumb.get_attribute("title")
        thumb.click()
        page.wait_for_selector(f'article.item[data-file="{file}"]')
        current = file.split("/")[0]
        other = next(label for label in ("blue", "green", "red") if label != current)
        page.click(f'article.item[data-file="{file}"] button[data-label="{other}"]')
        page.wait_for_function("() => document.body.dataset.moved === '1'")
        name = file.split("/")[1]
        assert not (captures / file).exists() and (captures / other / name).is_file()
        moved = [r for r in read_records(captures) if "relabelled" in r]
        assert len(moved) == 1 and moved[0]["old_file"] == file and moved[0]["file"] == f"{other}/{name}"
        page.screenshot(path=str(tmp_path / "review-live.png"), full_page=True)
        assert problems == []
    finally:
        assert run.stop() == 0


def test_review_page_files_two_captures_by_click_and_key(browser, tmp_path):
    folder = make_capture_folder(tmp_path / "captures")
    labels = tmp_path / "labels.txt"
    labels.write_text("blue\ngreen\nred\n")
    red_taken_for_green, blue = sorted(p.name for p in (folder / "_uncertain").iterdir())
    server = Server(["review", folder, "--http", "127.0.0.1:0", "--labels", labels, "--http-token", "s3cret"],
                    r"relabel page at (http://\S+/)review")
    try:
        page = browser.new_page(**PHONE)
        problems = watch(page)
        page.goto(server.url + "?token=s3cret")  # / leads to /review, keeping the token
        page.wait_for_selector("article.item")
        assert page.inner_text("#count") == "4 to review, 4 in all"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        groups = page.eval_on_selector_all("section.group h2", "hs => hs.map(h => h.textContent)")
        assert groups == ["Uncertain (2)", "green (1)", "red (1)"]
        page.screenshot(path=str(tmp_path / "review-before.png"), full_page=True)

        page.click(f'article.item[data-file="_uncertain/{red_taken_for_green}"] button[data-label="red"]')
        page.wait_for_function("() => document.body.dataset.moved === '1'")
        page.focus(f'article.item[data-file="_uncertain/{blue}"]')
        page.keyboard.press("1")  # the first class: blue
        page.wait_for_function("() => document.body.dataset.moved === '2'")
        assert page.inner_text("#count") == "2 to review, 4 in all"
        page.screenshot(path=str(tmp_path / "review-after.png"), full_page=True)

        assert sorted(p.name for p in (folder / "_uncertain").iterdir()) == []
        assert (folder / "red" / red_taken_for_green).is_file() and (folder / "blue" / blue).is_file()
        records = [r for r in read_records(folder) if "relabelled" in r]
        assert [{k: v for k, v in r.items() if k != "time"} for r in records] == [
            {"file": f"red/{red_taken_for_green}", "relabelled": "red", "from": "green",
             "old_file": f"_uncertain/{red_taken_for_green}"},
            {"file": f"blue/{blue}", "relabelled": "blue", "from": "blue", "old_file": f"_uncertain/{blue}"},
        ]
        assert all(isinstance(r["time"], float) for r in records)
        # the reviewed ones are hidden until asked for
        page.check("#show-reviewed")
        assert page.locator("article.item.reviewed").count() == 2
        assert problems == []
    finally:
        assert server.stop() == 0


def test_serve_page_classifies_a_chosen_file(browser, color_bundle, tmp_path):
    image = tmp_path / "red.jpg"
    image.write_bytes(jpeg(BGR["red"]))
    server = Server(["serve", color_bundle, "--http", "127.0.0.1:0"], r"classifying at (http://\S+/)classify")
    try:
        page = browser.new_page()
        problems = watch(page)
        page.goto(server.url)
        page.set_input_files("#file", str(image))
        page.wait_for_function("() => document.getElementById('label').textContent === 'red'")
        assert page.locator("#top li").count() == 3 and page.inner_text("#model").endswith("3 classes")
        page.screenshot(path=str(tmp_path / "serve.png"))
        assert problems == []
    finally:
        assert server.stop() == 0
