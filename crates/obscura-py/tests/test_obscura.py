"""The package against a real cluster: node and keeper processes started by the `obscura`
binary (OBSCURA_BIN), photos from the repository's testdata (OBSCURA_TESTDATA). Run by
`cargo test` through crates/obscura-cli/tests/cli_python.rs, in the environment .ci/python
makes."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

import obscura

BIN = os.environ["OBSCURA_BIN"]
TESTDATA = os.environ["OBSCURA_TESTDATA"]
PASSWORD = "correct horse battery staple"


def free_base(n):
    """A port with n free ports after it."""
    for start in range(31000, 60000, 97):
        ok = True
        for p in range(start, start + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return start
    raise RuntimeError("no free ports")


def run(*args, password=None):
    out = subprocess.run([BIN, *args], input=(password + "\n") if password else None,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def cluster():
    top = tempfile.mkdtemp(prefix="obscura-py-")
    directory = os.path.join(top, "cluster")
    base = free_base(9)
    run("cluster", "init", directory, "--base-port", str(base), "--keeper-base-port", str(base + 6))
    up = subprocess.Popen([BIN, "cluster", "up", directory],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            out = subprocess.run([BIN, "status", "--cluster", directory, "--json"],
                                 capture_output=True, text=True)
            try:
                s = json.loads(out.stdout)
                if all(x["ok"] for x in s["nodes"] + s["keepers"]):
                    break
            except (ValueError, KeyError):
                pass
            assert time.time() < deadline, "the cluster did not come up"
            time.sleep(0.2)
        run("register", "--cluster", directory, "--user", "admin", password=PASSWORD)
        yield directory
    finally:
        up.terminate()
        up.wait(timeout=30)
        shutil.rmtree(top, ignore_errors=True)


def photo(name):
    return os.path.join(TESTDATA, "photos", name)


def test_log_in_index_search_get_and_log_out(cluster, tmp_path):
    c = obscura.Cluster(cluster)
    assert c.user is None
    with pytest.raises(obscura.ObscuraError, match="not logged in"):
        c.search(photo("camera.png"))
    with pytest.raises(obscura.ObscuraError):
        c.login("admin", "not the password")

    login = c.login("admin", PASSWORD)
    assert login.user == "admin" and len(login.keepers) >= 2
    assert login.expires.tzinfo is not None and login.expires.timestamp() > time.time()
    assert c.user == "admin"

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ["camera.png", "coffee.png", "rocket.jpg"]:
        shutil.copy(photo(name), folder / name)
    (folder / "notes.txt").write_text("not an image")
    report = c.index(folder)
    assert [os.path.basename(i.path) for i in report.indexed] == ["camera.png", "coffee.png", "rocket.jpg"]
    assert [os.path.basename(s.path) for s in report.skipped] == ["notes.txt"]
    assert report.skipped[0].reason and report.ledger_error is None and report.warnings == []
    ids = {os.path.basename(i.path): i.id for i in report.indexed}

    # A JPEG variant finds its photo, named by the file it was indexed from.
    variant = os.path.join(TESTDATA, "derived", "coffee.q75.jpg")
    matches = c.search(variant, top=3)
    assert isinstance(matches[0], obscura.Match)
    assert matches[0].id == ids["coffee.png"]
    assert matches[0].file.endswith("coffee.png")
    assert matches[0].distance <= 4
    # The same from bytes.
    with open(variant, "rb") as f:
        assert c.search(f.read(), top=1)[0].id == ids["coffee.png"]
    with pytest.raises(ValueError):
        c.search(variant, top=0)

    # Rebuilt from any k nodes, byte for byte.
    with open(photo("rocket.jpg"), "rb") as f:
        assert c.get(ids["rocket.jpg"]) == f.read()
    with pytest.raises(ValueError):
        c.get("not an id")
    with pytest.raises(obscura.ObscuraError, match="not stored"):
        c.get("00" * 16)

    assert c.logout() == "admin"
    assert c.user is None
    assert c.logout() is None


def test_pil_images_in_and_out(cluster):
    Image = pytest.importorskip("PIL.Image")
    c = obscura.Cluster(cluster)
    c.login("admin", PASSWORD)
    try:
        found = c.search(photo("camera.png"), top=1)
        assert found and found[0].distance == 0
        picture = c.get(found[0].id, image=True)
        assert picture.size == Image.open(photo("camera.png")).size
        # A PIL image as the query.
        assert c.search(picture, top=1)[0].id == found[0].id
    finally:
        c.logout()


def test_a_wrong_directory_fails_at_once(tmp_path):
    with pytest.raises(obscura.ObscuraError):
        obscura.Cluster(tmp_path / "nothing here")
