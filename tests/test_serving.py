"""The serving package without Ray: key files, request bodies, tenant-safe grouping, stats,
servable folders, tokenisation with truncation, the `serve` command's checks before Ray and
the `serve run` builder. (The endpoint on a real Ray Serve: `test_serve.py`.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from servable import SERVING_FILE, read_servable
from serving.batching import Part, split_request, tenant_passes
from serving.inputs import BadRequest, parse_inputs
from serving.keys import LOCAL_TENANT, TenantKeys, check_exposure, is_loopback_host, key_digest, read_keys
from serving.stats import latency_percentiles

from conftest import TINY_SERVED_SEQ_LEN

ALICE_KEY = "alice-key-0123456789abcdef"
BOB_KEY = "bob-key-0123456789abcdefgh"


def keys_file(folder: Path, text: str) -> Path:
    path = folder / "keys.txt"
    path.write_text(text)
    return path


def test_key_file_maps_digests_to_tenants(tmp_path: Path) -> None:
    path = keys_file(
        tmp_path, f"# tenants\nalice {ALICE_KEY}\n\nbob {BOB_KEY}  # rotated monthly\nalice {ALICE_KEY}x\n"
    )
    digests = read_keys(path)
    assert sorted(digests.values()) == ["alice", "alice", "bob"]
    assert ALICE_KEY not in json.dumps(digests)  # only digests leave the reader
    keys = TenantKeys(digests)
    assert keys.tenant_for(f"Bearer {ALICE_KEY}") == "alice"
    assert keys.tenant_for(f"bearer {BOB_KEY}") == "bob"
    assert keys.tenant_for(f"Bearer {ALICE_KEY}x") == "alice"
    assert [keys.tenant_for(header) for header in (None, "", ALICE_KEY, "Bearer ", "Basic abc", "Bearer nope")] == [
        None
    ] * 6
    assert keys.tenants() == ["alice", "bob"]
    assert TenantKeys(None).tenant_for(None) == LOCAL_TENANT


@pytest.mark.parametrize(
    "text, message",
    [
        ("alice\n", "expected `tenant key`, got 1 fields"),
        (f"alice {ALICE_KEY} extra\n", "got 3 fields"),
        ("alice short\n", "shorter than 16 characters"),
        (f"alice {ALICE_KEY}\nbob {ALICE_KEY}\n", "already given to tenant 'alice'"),
        ("# nothing\n\n", "holds no `tenant key` line"),
    ],
)
def test_bad_key_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_keys(keys_file(tmp_path, text))


def test_key_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="cannot read key file"):
        read_keys(tmp_path / "missing.txt")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_keys(tmp_path / "binary")
    assert key_digest("x") != key_digest("y")


def test_exposure_rules() -> None:
    assert all(map(is_loopback_host, ["127.0.0.1", "127.0.0.5", "localhost", "::1", "[::1]"]))
    assert not any(map(is_loopback_host, ["0.0.0.0", "10.1.2.3", "example.com", "::"]))
    check_exposure("127.0.0.1", None, False)
    with pytest.raises(ValueError, match="needs --keys"):
        check_exposure("0.0.0.0", None, True)
    with pytest.raises(ValueError, match="without --allow-remote"):
        check_exposure("0.0.0.0", Path("keys.txt"), False)
    check_exposure("0.0.0.0", Path("keys.txt"), True)


def test_request_bodies() -> None:
    assert parse_inputs(b'{"inputs": ["a", ["b", "c"]]}', 10) == ["a", ("b", "c")]
    assert parse_inputs(b'{"inputs": "one text"}', 10) == ["one text"]
    cases = {
        b"{not json": (400, "not JSON"),
        b"\xff": (400, "not JSON"),
        b"[1, 2]": (422, "must be an object"),
        b'{"input": ["a"]}': (422, "must be an object"),
        b'{"inputs": ["a"], "top_k": 2}': (422, "unknown field"),
        b'{"inputs": []}': (422, "non-empty list"),
        b'{"inputs": {"a": 1}}': (422, "non-empty list"),
        b'{"inputs": ["a", 3]}': (422, r"inputs\[1\]: expected a string, got int"),
        b'{"inputs": ["  "]}': (422, r"inputs\[0\]: empty text"),
        b'{"inputs": [["a", "b", "c"]]}': (422, "a pair is \\[text, text_pair\\], got 3 parts"),
        b'{"inputs": [["a", null]]}': (422, r"inputs\[0\]\[1\]: expected a string, got NoneType"),
        b'{"inputs": ["a", "b", "c"]}': (413, "3 inputs in one request; the limit is 2"),
    }
    for body, (status, message) in cases.items():
        with pytest.raises(BadRequest, match=message) as refused:
            parse_inputs(body, 2)
        assert refused.value.status == status, body


def test_groups_never_mix_tenants_and_keep_order() -> None:
    parts = [
        Part("alice", "r1", ("a1", "a2", "a3")),
        Part("bob", "r2", ("b1",)),
        Part("alice", "r3", ("a4",)),
        Part("bob", "r4", ("b2", "b3"), start=4),
    ]
    passes = tenant_passes(parts)
    assert [(p.tenant, p.parts, p.rows) for p in passes] == [
        ("alice", [0, 2], ["a1", "a2", "a3", "a4"]),
        ("bob", [1, 3], ["b1", "b2", "b3"]),
    ]
    assert passes[1].sources == [("r2", 0), ("r4", 4), ("r4", 5)]
    assert passes[0].groups(3) == [
        [("alice", "r1", 0), ("alice", "r1", 1), ("alice", "r1", 2)],
        [("alice", "r3", 0), None, None],
    ]
    assert passes[1].groups(2) == [[("bob", "r2", 0), ("bob", "r4", 4)], [("bob", "r4", 5), None]]


def test_a_request_is_cut_into_parts_that_fit_a_batch() -> None:
    parts = split_request("alice", "r", [f"t{i}" for i in range(7)], 3)
    assert [(part.start, part.inputs) for part in parts] == [
        (0, ("t0", "t1", "t2")),
        (3, ("t3", "t4", "t5")),
        (6, ("t6",)),
    ]


def test_latency_percentiles_are_nearest_rank() -> None:
    assert latency_percentiles([]) == {"p50": None, "p95": None, "p99": None}
    values = [float(v) for v in range(1, 101)]
    assert latency_percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert latency_percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}


def test_servable_folder_is_self_contained(tiny_servable_dir: Path) -> None:
    spec = read_servable(tiny_servable_dir)
    assert (spec.N, spec.s, spec.seq_len, spec.label_names) == (2, 0.0, TINY_SERVED_SEQ_LEN, ("negative", "positive"))
    assert (tiny_servable_dir / "tokenizer.json").is_file()


def test_unservable_folders_are_named(tiny_servable_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        read_servable(tmp_path / "nothing")
    with pytest.raises(ValueError, match="not a saved PruMUX model"):
        read_servable(tmp_path)
    plain = tmp_path / "plain"
    shutil.copytree(tiny_servable_dir, plain)
    (plain / SERVING_FILE).unlink()
    with pytest.raises(ValueError, match="prumux-search export"):
        read_servable(plain)
    (plain / SERVING_FILE).write_text('{"task": "x"}')
    with pytest.raises(ValueError, match="not a valid serving spec"):
        read_servable(plain)
    spec = json.loads((tiny_servable_dir / SERVING_FILE).read_text())
    (plain / SERVING_FILE).write_text(json.dumps({**spec, "N": 5}))
    with pytest.raises(ValueError, match="contradicts"):
        read_servable(plain)


def test_encoding_truncates_like_the_tokenizer_and_says_so(tiny_servable_dir: Path) -> None:
    from serving.model import ServedModel

    served = ServedModel(tiny_servable_dir)
    inputs = ["a fine film", ("short", "pair"), "word " * 40, ("long " * 30, "tail " * 30), "x " * 14]
    encoded, truncated = served.encode(inputs)
    assert truncated == [False, False, True, True, False]
    for index, value in enumerate(inputs):
        text, pair = (value, None) if isinstance(value, str) else value
        expected = served.tokenizer(
            text,
            pair,
            padding="max_length",
            truncation=True,
            max_length=TINY_SERVED_SEQ_LEN,
            return_tensors="pt",
            return_token_type_ids=True,
        )
        for key, tensor in encoded.items():
            assert torch.equal(tensor[index], expected[key][0]), (index, key)
    scores, _ = served.probabilities(inputs)
    assert scores.shape == (5, 2) and torch.allclose(scores.sum(-1), torch.ones(5))


def test_serve_checks_its_input_before_ray(run_main, tiny_servable_dir: Path, tmp_path: Path) -> None:
    good_keys = keys_file(tmp_path, f"alice {ALICE_KEY}\n")
    plain = tmp_path / "plain"
    shutil.copytree(tiny_servable_dir, plain)
    (plain / SERVING_FILE).unlink()
    model = ["--model", str(tiny_servable_dir)]
    cases = {
        "no model": ([], "exactly one of --model DIR, --trial K or --best"),
        "two sources": ([*model, "--best"], "exactly one of"),
        "remote without keys": ([*model, "--host", "0.0.0.0"], "needs --keys FILE"),
        "remote without allow": ([*model, "--host", "0.0.0.0", "--keys", str(good_keys)], "without --allow-remote"),
        "missing keys file": ([*model, "--keys", str(tmp_path / "none.txt")], "cannot read key file"),
        "missing model": (["--model", str(tmp_path / "none")], "does not exist"),
        "not servable": (["--model", str(plain)], "make it servable"),
        "bad port": ([*model, "--port", "0"], "port must be in 1..65535"),
        "bad replicas": ([*model, "--replicas", "0"], "replicas must be positive"),
        "bad wait": ([*model, "--max-wait-ms", "-1"], "max-wait-ms must be in"),
        "bad device": ([*model, "--device", "tpu"], "device must be auto, cpu or cuda"),
        "no study": (["--best", "--run-dir", str(tmp_path / "run")], "no study at"),
    }
    for name, (args, message) in cases.items():
        code, out, err = run_main("serve", *args)
        assert code == 2, (name, out, err)
        assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, (name, err)


def test_serve_run_builder(tiny_servable_dir: Path, tmp_path: Path) -> None:
    from ray.serve import Application

    from serving.app import app_builder, batch_instances

    keys = keys_file(tmp_path, f"alice {ALICE_KEY}\n")
    assert isinstance(app_builder({"model": str(tiny_servable_dir), "keys": str(keys), "max_batch": "5"}), Application)
    with pytest.raises(ValueError, match="unknown argument"):
        app_builder({"model": str(tiny_servable_dir), "batch": "5"})
    with pytest.raises(ValueError, match="give model=DIR"):
        app_builder({})
    assert [batch_instances(None, 2), batch_instances(5, 2), batch_instances(1, 3)] == [64, 4, 3]


def test_a_model_at_a_uri_is_pulled_into_a_local_mirror(tiny_servable_dir: Path) -> None:
    from serving.model import check_servable, local_folder

    folder = local_folder(f"file://{tiny_servable_dir}")
    assert folder != tiny_servable_dir and check_servable(folder).N == 2
    with pytest.raises(ValueError, match="missing or empty"):
        local_folder(f"file://{tiny_servable_dir}-nothing")
    shutil.rmtree(folder)
