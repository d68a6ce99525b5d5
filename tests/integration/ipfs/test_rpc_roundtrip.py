"""ipfshttpclient (the same client that talks to a real Kubo) against the embedded node over HTTP."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

from gpumesh.ipfs.unixfs import CHUNK_SIZE, cid_of_bytes

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::FutureWarning")]


def test_version_and_id(client):
    v = client.version()
    assert set(v) >= {"Version", "Commit", "Repo", "System"}
    ident = client.id()
    assert ident["ID"].startswith("12D3KooW") and "AgentVersion" in ident


def test_add_bytes_and_cat(client):
    assert client.add_bytes(b"hello world\n") == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    data = os.urandom(5 * CHUNK_SIZE + 3)
    cid = client.add_bytes(data)
    assert cid == cid_of_bytes(data)
    assert client.cat(cid) == data
    assert client.cat(cid, offset=CHUNK_SIZE - 2, length=7) == data[CHUNK_SIZE - 2 : CHUNK_SIZE + 5]


def test_add_file_with_options(client, tmp_path):
    f = tmp_path / "hello.txt"
    f.write_text("Hello Worlds!\n")
    r = client.add(str(f))
    assert (r["Name"], r["Hash"]) == ("hello.txt", "QmVr26fY1tKyspEJBniVhqxQeEjhF78XerGiqWAwraVLQH")
    assert r["Size"] == "22"  # Kubo's cumulative size: 14 data bytes + 8 bytes of framing
    # ipfshttpclient always sends raw-leaves (False unless asked), and Kubo honours an explicit
    # raw-leaves=false even with CIDv1: dag-pb leaves under a CIDv1.
    r1 = client.add(str(f), cid_version=1)
    assert r1["Hash"] == cid_of_bytes(b"Hello Worlds!\n", 1, False)
    r1raw = client.add(str(f), cid_version=1, raw_leaves=True)
    assert r1raw["Hash"] == cid_of_bytes(b"Hello Worlds!\n", 1)
    only = client.add(str(f), only_hash=True, raw_leaves=True)
    assert only["Hash"] == cid_of_bytes(b"Hello Worlds!\n", 0, True)
    wrapped = client.add(str(f), wrap_with_directory=True)
    assert [w["Name"] for w in wrapped] == ["hello.txt", ""]
    assert client.cat(wrapped[-1]["Hash"] + "/hello.txt") == b"Hello Worlds!\n"


def test_add_progress_is_ndjson(node):
    data = os.urandom(2 * CHUNK_SIZE + 1)
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(node.api_url + "/api/v0/add?progress=true", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req) as resp:
        lines = [json.loads(x) for x in resp.read().decode().splitlines()]
    assert [x["Bytes"] for x in lines if "Bytes" in x] == [CHUNK_SIZE, 2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 1]
    assert lines[-1]["Hash"] == cid_of_bytes(data)


def test_add_directory_ls_and_get(client, tmp_path):
    d = tmp_path / "planets"
    d.mkdir()
    (d / "mars.txt").write_text("Hello Mars!\n")
    (d / "venus.txt").write_text("Hello Venus!\n")
    res = client.add(str(d), recursive=True)
    by_name = {r["Name"]: r["Hash"] for r in res}
    assert by_name == {  # Kubo's t0040 output for the same tree
        "planets/mars.txt": "QmPrrHqJzto9m7SyiRzarwkqPcCSsKR2EB1AyqJfe8L8tN",
        "planets/venus.txt": "QmU5kp3BH3B8tnWUU2Pikdb2maksBNkb92FHRr56hyghh4",
        "planets": "QmWSgS32xQEcXMeqd3YPJLrNBLSdsfYCep2U7CFkyrjXwY",
    }
    root = by_name["planets"]
    links = client.ls(root)["Objects"][0]["Links"]
    assert [(x["Name"], x["Type"], x["Size"]) for x in links] == [("mars.txt", 2, 12), ("venus.txt", 2, 13)]
    client.get(root, target=str(tmp_path / "out"))
    assert (tmp_path / "out" / root / "venus.txt").read_text() == "Hello Venus!\n"
    client.get(by_name["planets/mars.txt"], target=str(tmp_path / "out2"))
    assert (tmp_path / "out2" / by_name["planets/mars.txt"]).read_text() == "Hello Mars!\n"


def test_block_put_get_stat(client, tmp_path):
    f = tmp_path / "blk"
    f.write_bytes(b"raw block bytes")
    put = client.block.put(str(f))
    assert put["Key"] == str(__import__("gpumesh.ipfs.cid", fromlist=["Cid"]).Cid.of_block(
        b"raw block bytes", version=1, codec=0x55))
    assert client.block.get(put["Key"]) == b"raw block bytes"
    assert client.block.stat(put["Key"]) == {"Key": put["Key"], "Size": 15}


def test_pin_add_ls_rm_and_gc(client):
    keep = client.add_bytes(b"keep me", opts={"pin": "false"})
    drop = client.add_bytes(b"drop me", opts={"pin": "false"})
    assert client.pin.add(keep)["Pins"] == [keep]
    assert client.pin.ls(type="recursive")["Keys"][keep] == {"Type": "recursive"}
    removed = {r["Key"]["/"] for r in client.repo.gc()}
    assert client.cat(keep) == b"keep me"
    with pytest.raises(Exception):  # noqa: B017 - ipfshttpclient's ErrorResponse
        client.cat(drop)
    assert removed  # the unpinned block went away
    assert client.pin.rm(keep)["Pins"] == [keep]


def test_errors_are_kubo_shaped(node):
    def post(path: str) -> tuple[int, dict]:
        req = urllib.request.Request(node.api_url + path, data=b"", method="POST")
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    code, body = post("/api/v0/cat")
    assert code == 400 and body["Type"] == "error" and body["Code"] == 1 and "required" in body["Message"]
    code, body = post("/api/v0/cat?arg=QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5X")
    assert code == 500 and body["Type"] == "error" and body["Code"] == 0
    code, body = post(f"/api/v0/block/get?arg={cid_of_bytes(b'absent ' + os.urandom(4))}")
    assert code == 500 and "not found" in body["Message"]


def test_only_post(node):
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(node.api_url + "/api/v0/version")
    assert exc.value.code == 405
