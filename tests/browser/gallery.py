"""fc7 serve in a real browser: Debian's Chromium, headless, driven through chromedriver's
WebDriver API (W3C, plain HTTP, so only Python's standard library is needed). It picks an image
with the page's file input and waits for six neighbours, clicks one and waits for the page to
search from it, and checks the browse grid shows every indexed image.

Usage: python3 tests/browser/gallery.py FC7_BINARY INDEX UPLOAD_IMAGE
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Driver:
    def __init__(self, port):
        self.base = "http://127.0.0.1:%d" % port
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]}}}}
        self.sid = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.load(r)["value"] if path != "/session" else json.load(r)["value"]

    def s(self, method, path, body=None):
        return self.call(method, "/session/%s%s" % (self.sid, path), body)

    def find(self, css):
        return [e[ELEMENT] for e in self.s("POST", "/elements", {"using": "css selector", "value": css})]

    def text(self, el):
        return self.s("GET", "/element/%s/text" % el)

    def wait(self, what, check, seconds=60):
        end = time.time() + seconds
        while time.time() < end:
            got = check()
            if got:
                return got
            time.sleep(0.2)
        raise AssertionError("timed out waiting for " + what)


def result_names(d):
    """Paths in the result row (each name's title): the query first, then its neighbours; none
    while the page is replacing the row (an element found then gone: a stale reference)."""
    try:
        return [d.s("GET", "/element/%s/attribute/title" % e) for e in d.find("#result .tile .name")]
    except urllib.error.HTTPError as e:
        if e.code == 404 and json.load(e)["value"].get("error") == "stale element reference":
            return []
        raise


def main(fc7, index, image):
    serve = subprocess.Popen([fc7, "serve", "--index", index, "--port", "0", "--device", "cpu"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = free_port()
    # Chromium's profile and scratch folders (org.chromium.Chromium.scoped_dir.*, ~2.5 MB a run)
    # go to a folder of this run's, removed at the end, instead of piling up in /tmp.
    scratch = tempfile.mkdtemp(prefix="fc7-browser-")
    driver = subprocess.Popen(["chromedriver", "--port=%d" % port],
                              env=dict(os.environ, TMPDIR=scratch),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = re.search(r"http://\S+/", serve.stdout.readline()).group(0)
        for _ in range(100):
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/status" % port, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        d = Driver(port)
        d.s("POST", "/url", {"url": url})
        indexed = json.load(urllib.request.urlopen(url + "api/info"))["indexed"]
        tiles = d.wait("the browse grid", lambda: len(d.find("#browse .tile")) == min(indexed, 60))
        assert tiles, "browse grid"

        # Pick a file: the query tile and six neighbours with distances.
        d.s("POST", "/element/%s/value" % d.find("#pick")[0], {"text": image})
        d.wait("neighbours of the upload", lambda: len(d.find("#result .tile")) == 7)
        names = result_names(d)
        assert names[0] == "uploaded image", names
        dists = [d.text(e) for e in d.find("#result .tile .dist")]
        assert len(dists) == 6 and all(t.startswith("distance ") for t in dists), dists
        values = [float(t.split()[1]) for t in dists]
        assert values == sorted(values), values

        # Click the second neighbour: the page searches from it.
        second = names[2]
        d.s("POST", "/element/%s/click" % d.find("#result .tile")[2], {})
        d.wait("a search from the clicked neighbour", lambda: result_names(d)[:1] == [second])
        after = result_names(d)
        assert len(after) == 7 and second not in after[1:], after
        assert not d.text(d.find("#status")[0]), "no error line"
        d.s("DELETE", "")
        print("browser: Chromium uploaded an image, saw 6 neighbours, clicked one and saw its 6")
    finally:
        serve.kill()
        driver.kill()
        driver.wait()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
