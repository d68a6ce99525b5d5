"""The importer against CIDs that Kubo itself published (sharness t0040-add-and-cat.sh and docs).

Every expected CID here was printed by Kubo, not by this code. The big files are Kubo's own
`random SIZE SEED` files, rebuilt by tests/unit/ipfs/gorandom.py and checked against the SHA-1
that the same Kubo test asserts, so a wrong generator fails before any CID is compared.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from gpumesh.ipfs.unixfs import Entry, cid_of_bytes, import_directory, import_file

_spec = importlib.util.spec_from_file_location("gorandom", Path(__file__).with_name("gorandom.py"))
gorandom = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gorandom)


@pytest.mark.parametrize(
    ("data", "cid_version", "raw_leaves", "expected"),
    [
        (b"hello world\n", 0, None, "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"),
        (b"", 0, None, "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"),
        (b"", 0, True, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
        (b"", 1, None, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
        (b"Hello Worlds!\n", 0, None, "QmVr26fY1tKyspEJBniVhqxQeEjhF78XerGiqWAwraVLQH"),
        (b"Helloo Worlds!\n", 0, None, "Qmf35k66MZNW2GijohUmXQEWKZU4cCGTCwK6idfnt152wJ"),
        (b"IPFS\n", 0, None, "QmdFyxZXsFiP4csgfM5uPu99AvFiKH62CSPDw5TP92nr7w"),
        (b"Hello Venus!\n", 0, None, "QmU5kp3BH3B8tnWUU2Pikdb2maksBNkb92FHRr56hyghh4"),
        (b"Hello Jupiter!\n", 0, None, "QmUnvPcBctVTAcJpigv6KMqDvmDewksPWrNVoy1E1WP5fh"),
        (b"Hello Neptune!\nHello Pluton!", 0, None, "QmZDhWpi8NvKrekaYYhxKCdNVGWsFFe1CREnAjP1QbPaB3"),
        (b"Hello Mars!\n", 1, None, "bafkreibmlvvgdyihetgocpof6xk64kjjzdeq2e4c7hqs3krdheosk4tgj4"),
        (b"Hello Mars!\n", 1, False, "bafybeiawta2ntdmsy24aro35w3homzl4ak7svr3si7l7gesvq4erglyye4"),
        (b"Hello Venus!\n", 1, False, "bafybeicvkvhs2fr75ynebtdjqpgm4g2fc63abqbmysupwpmcjl4gx7mzrm"),
        # `ipfs add --cid-base=base32` of a CIDv0 file upgrades the same dag-pb node to CIDv1.
        (b"base32 test\n", 1, False, "bafybeibyosqxljd2eptb4ebbtvk7pb4aoxzqa6ttdsflty6rsslz5y6i34"),
    ],
)
def test_small_files_match_kubo(data, cid_version, raw_leaves, expected):
    assert cid_of_bytes(data, cid_version, raw_leaves) == expected


@pytest.fixture(scope="module")
def five_mb() -> bytes:
    data = gorandom.go_random_bytes(5242880, 41)
    assert hashlib.sha1(data).hexdigest() == "5620fb92eb5a49c9986b5c6844efda37e471660e"
    return data


@pytest.mark.parametrize(
    ("cid_version", "raw_leaves", "expected"),
    [
        (0, None, "QmSr7FqYkxYWGoSfy8ZiaMWQ5vosb18DQGCzjwEQnVHkTb"),
        (0, True, "QmbdLHCmdi48eM8T7D67oXjA1S2Puo8eMfngdHhdPukFd6"),
        (1, None, "bafybeigfnx3tka2rf5ovv2slb7ymrt4zbwa3ryeqibe6fipyt5vgsrli3u"),
        (1, False, "bafybeieyifrgpjn3yengthr7qaj72ozm2aq3wm53srgeprc43w67qpvfqa"),
    ],
)
def test_5mb_multi_chunk_file_matches_kubo(five_mb, cid_version, raw_leaves, expected):
    assert cid_of_bytes(five_mb, cid_version, raw_leaves) == expected


def test_100mb_two_level_tree_matches_kubo(tmp_path):
    # 100 MiB = 400 chunks > 174 links: the root has three depth-1 children (174, 174, 52 leaves).
    data = gorandom.go_random_bytes(104857600, 42)
    assert hashlib.sha1(data).hexdigest() == "885b197b01e0f7ff584458dc236cb9477d2e736d"
    path = tmp_path / "bigfile"
    path.write_bytes(data)
    del data
    assert str(import_file(path).cid) == "QmU9SWAPPmNEKZB8umYMmjYvN7VyHqABNvdA6GUi4MMEz3"
    assert str(import_file(path, 1).cid) == "bafybeidkj5ecbhrqmzrcee2rw7qwsx24z3364qya3fnp2ktkg2tnsrewhi"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


PLANETS = {"mars.txt": "Hello Mars!\n", "venus.txt": "Hello Venus!\n"}


@pytest.mark.parametrize(
    ("cid_version", "raw_leaves", "expected"),
    [
        (0, None, "QmWSgS32xQEcXMeqd3YPJLrNBLSdsfYCep2U7CFkyrjXwY"),
        (0, True, "QmfWfQfKCY5Ukv9peBbxM5vqWM9BzmqUSXvdCgjT2wsiBT"),
        (1, None, "bafybeih7e5dmkyk25up5vxug4q3hrg2fxbzf23dfrac2fns5h7z4aa7ioi"),
        (1, False, "bafybeif5tuep5ap2d7zyhbktucey75aoacxufgt6i3v4gebmixyipnyp7y"),
    ],
)
def test_directory_matches_kubo(tmp_path, cid_version, raw_leaves, expected):
    d = _tree(tmp_path / "planets", PLANETS)
    assert str(import_directory(d, cid_version, raw_leaves=raw_leaves).cid) == expected


def test_nested_directory_and_output_order_match_kubo(tmp_path):
    d = _tree(
        tmp_path / "moons",
        {
            "jupiter/europa.txt": "Hello Europa!\n",
            "saturn/titan.txt": "Hello Titan!\n",
            "mercury.txt": "hey youre no moon!\n",
        },
    )
    entries: list[Entry] = []
    root = import_directory(d, entries=entries)
    assert str(root.cid) == "QmVKvomp91nMih5j6hYBA8KjbiaYvEetU2Q7KvtZkLe9nQ"
    # `ipfs add -rn mountdir/moons` output, line by line.
    assert [(e.name, str(e.result.cid)) for e in entries] == [
        ("moons/jupiter/europa.txt", "Qmbjg7zWdqdMaK2BucPncJQDxiALExph5k3NkQv5RHpccu"),
        ("moons/mercury.txt", "QmUJjVtnN8YEeYcS8VmUeWffTWhnMQAkk5DzZdKnPhqUdK"),
        ("moons/saturn/titan.txt", "QmZzppb9WHn552rmRqpPfgU5FEiHH6gDwi3MrB9cTdPwdb"),
        ("moons/jupiter", "QmS5mZddhFPLWFX3w6FzAy9QxyYkaxvUpsWCtZ3r7jub9J"),
        ("moons/saturn", "QmaMagZT4rTE7Nonw8KGSK4oe1bh533yhZrCo1HihSG8FK"),
        ("moons", "QmVKvomp91nMih5j6hYBA8KjbiaYvEetU2Q7KvtZkLe9nQ"),
    ]


def test_directory_with_subdirectory_matches_kubo(tmp_path):
    d = _tree(tmp_path / "test_current_dir", {"hey": "Hey\n", "hello/world": "World\n"})
    assert str(import_directory(d).cid) == "QmZQWnfcqJ6hNkkPvrY9Q5X39GP3jUnUbAV4AbmbbR3Cb1"
    # t0040 test_add_pwd_is_symlink greps this line of `ipfs add -r .` (the file hellodir/world).
    entries: list[Entry] = []
    import_directory(_tree(tmp_path / "hellodir", {"world": "World\n"}), entries=entries)
    assert str(entries[0].result.cid) == "Qma9CyFdG5ffrZCcYSin2uAETygB25cswVwEYYzwfQuhTe"


def test_empty_directory_and_hidden_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert str(import_directory(empty).cid) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
    # Kubo's CLI skips dotfiles unless --hidden: a directory of only dotfiles is the empty one.
    (empty / ".secret").write_text("x")
    assert str(import_directory(empty).cid) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
    assert str(import_directory(empty, hidden=True).cid) != "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
