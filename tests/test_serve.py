"""The endpoint on a real local Ray Serve (num_cpus=2), started once for the module: served
scores equal the offline model's for the same groups, two tenants never share a group,
dummies never leak, bad requests get a JSON 4xx while the server keeps serving, and a
replica killed under load costs no request more than a clean retry or a 503."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import torch

from serving.inputs import Input

from conftest import TINY_SERVED_SEQ_LEN, free_port

ALICE_KEY = "alice-key-0123456789abcdef"
BOB_KEY = "bob-key-0123456789abcdefgh"
MAX_BATCH = 6  # instances: 3 groups of N=2
MAX_BODY = 4096
WORDS = "a fine film dull and long surprisingly touching weak ending great cast".split()


@dataclass
class Server:
    url: str
    handle: object  # the Classifier deployment's handle (test hooks)
    port: int

    def classify(self, inputs: list, key: str | None = ALICE_KEY, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return requests.post(f"{self.url}/v1/classify", json={"inputs": inputs}, headers=headers, timeout=60, **kwargs)

    def passes(self) -> list:
        return self.handle.recorded_groups.remote().result()


@pytest.fixture(scope="module")
def server(local_ray, tiny_servable_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from ray import serve

    from serving.app import ServeOptions, prepare, run
    from serving.keys import read_keys

    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"alice {ALICE_KEY}\nbob {BOB_KEY}\n")
    options = ServeOptions(
        model=str(tiny_servable_dir),
        keys=read_keys(keys),
        max_batch=MAX_BATCH,
        max_wait_ms=40,
        replicas=1,
        cpus_per_replica=1,
        max_body_bytes=MAX_BODY,
        max_inputs=40,
        request_timeout_s=45,
        record_groups=True,
    )
    port = free_port()
    # every interface, so that test_without_keys_only_loopback_clients_are_answered can call from another address
    run(options, prepare(options), "0.0.0.0", port)
    try:
        yield Server(f"http://127.0.0.1:{port}", serve.get_deployment_handle("Classifier", "prumux"), port)
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def offline(tiny_servable_dir: Path):
    """The exported model and tokenizer, loaded as a user would, outside Ray."""
    from prumux import PruMUXModel
    from trainers.models import load_tokenizer

    model = PruMUXModel.from_pretrained(tiny_servable_dir).eval()
    tokenizer = load_tokenizer(str(tiny_servable_dir))

    def scores(rows: list[Input]) -> torch.Tensor:
        """Probabilities of ``rows`` in one forward pass (the model groups them N at a time, in order)."""
        encoded = [
            tokenizer(
                *((row,) if isinstance(row, str) else row),
                padding="max_length",
                truncation=True,
                max_length=TINY_SERVED_SEQ_LEN,
                return_tensors="pt",
            )
            for row in rows
        ]
        batch = {key: torch.cat([e[key] for e in encoded]) for key in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad():
            return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits.softmax(-1)

    return scores


def texts(seed: int, count: int) -> list[Input]:
    """``count`` distinct inputs; every third one a pair."""
    words = [
        " ".join(WORDS[(seed * 7 + i * 3 + j) % len(WORDS)] for j in range(2 + (seed + i) % 4)) for i in range(count)
    ]
    return [(word, WORDS[i % len(WORDS)]) if i % 3 == 2 else f"{word} {seed}" for i, word in enumerate(words)]


def test_one_request_at_a_time_equals_the_offline_model(server: Server, offline) -> None:
    for seed, count in enumerate([1, 2, 3, 5, MAX_BATCH]):
        inputs = texts(seed, count)
        answer = server.classify(inputs).json()
        expected = offline(inputs)
        torch.testing.assert_close(torch.tensor(answer["scores"]), expected, atol=1e-5, rtol=0)
        assert answer["labels"] == [("negative", "positive")[i] for i in expected.argmax(-1).tolist()]
        assert answer["model"] == {"N": 2, "s": 0.0} and answer["truncated"] == []


def test_racing_tenants_get_their_own_groups_and_offline_scores(server: Server, offline) -> None:
    """Two tenants interleave 24 requests from 8 clients; each recorded pass (the model's groups)
    recomputed offline gives exactly the scores each request got back, in order."""
    before = len(server.passes())
    jobs = [(ALICE_KEY if i % 2 else BOB_KEY, texts(100 + i, 1 + i % 4)) for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda job: server.classify(job[1], job[0]).json(), jobs))
    sent = {answer["request_id"]: (key, inputs) for (key, inputs), answer in zip(jobs, answers)}
    served = {answer["request_id"]: answer["scores"] for answer in answers}
    passes = server.passes()[before:]
    assert any(len({member[1] for group in groups for member in group if member}) > 1 for groups in passes), (
        "no pass held two requests: batching did not happen"
    )
    seen = []
    for groups in passes:
        members = [member for group in groups for member in group]
        real = [member for member in members if member]
        assert members == real + [None] * (-len(real) % 2), "dummies only fill the last group"
        tenants = {member[0] for member in members if member}
        assert len(tenants) == 1, f"a pass mixed tenants {tenants}"
        for group in groups:
            assert len({member[0] for member in group if member}) == 1
        tenant = tenants.pop()
        assert {sent[request][0] for _, request, _ in real} == {ALICE_KEY if tenant == "alice" else BOB_KEY}
        expected = offline([sent[request][1][index] for _, request, index in real])
        got = torch.tensor([served[request][index] for _, request, index in real])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        seen += [(request, index) for _, request, index in real]
    assert sorted(seen) == sorted(
        (request, index) for request, (_, inputs) in sent.items() for index in range(len(inputs))
    )
    for (_, inputs), answer in zip(jobs, answers):  # one answer per input: no dummy leaked into a response
        assert len(answer["scores"]) == len(answer["labels"]) == len(inputs)


def test_a_request_larger_than_a_batch_is_split_and_reassembled(server: Server, offline) -> None:
    inputs = texts(7, 2 * MAX_BATCH + 3)
    answer = server.classify(inputs).json()
    expected = torch.cat([offline(inputs[start : start + MAX_BATCH]) for start in range(0, len(inputs), MAX_BATCH)])
    torch.testing.assert_close(torch.tensor(answer["scores"]), expected, atol=1e-5, rtol=0)


def test_callers_without_a_valid_key_never_reach_a_replica(server: Server) -> None:
    before = len(server.passes())
    for key in (None, "not-a-key-0123456789", "Basic"):
        refused = server.classify(["a fine film"], key=key)
        assert refused.status_code == 401 and "API key" in refused.json()["error"]
        assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(f"{server.url}/v1/stats", timeout=30).status_code == 401
    assert len(server.passes()) == before


def test_bad_requests_get_json_4xx_and_the_server_keeps_serving(server: Server, offline) -> None:
    headers = {"Authorization": f"Bearer {ALICE_KEY}"}
    url = f"{server.url}/v1/classify"
    bodies = {
        b"{not json": 400,
        b'{"inputs": []}': 422,
        b'{"inputs": ["a", 3]}': 422,
        b'{"inputs": [""]}': 422,
        b'{"inputs": [["a", "b", "c"]]}': 422,
        b'{"inputs": ["x"], "extra": 1}': 422,
        b'{"inputs": ["a"]}' + b" " * MAX_BODY: 413,
        ('{"inputs": [' + ",".join(['"a"'] * 41) + "]}").encode(): 413,
    }
    for body, status in bodies.items():
        answer = requests.post(url, data=body, headers=headers, timeout=30)
        assert answer.status_code == status, (body[:40], answer.text)
        assert answer.json()["error"]
    chunked = requests.post(url, data=iter([b'{"inputs": ["a"', b" " * MAX_BODY, b"]}"]), headers=headers, timeout=30)
    assert chunked.status_code == 413  # no Content-Length: counted while reading
    assert requests.get(f"{server.url}/v1/nothing", timeout=30).json() == {"error": "Not Found"}

    long_text = " ".join(WORDS * 4)
    answer = server.classify(["a fine film", long_text]).json()
    assert answer["truncated"] == [1] and "truncated" in answer["warning"]
    torch.testing.assert_close(torch.tensor(answer["scores"]), offline(["a fine film", long_text]), atol=1e-5, rtol=0)


def test_health_and_stats(server: Server) -> None:
    health = requests.get(f"{server.url}/v1/health", timeout=30).json()
    assert health["model"]["labels"] == ["negative", "positive"] and health["auth"] == "api keys"
    server.classify(["a fine film"], key=BOB_KEY)
    stats = requests.get(f"{server.url}/v1/stats", headers={"Authorization": f"Bearer {BOB_KEY}"}, timeout=30).json()
    assert list(stats["tenants"]) == ["bob"]  # a tenant sees its own counts only
    assert stats["requests"] >= stats["tenants"]["bob"]["requests"] >= 1
    assert stats["forward_passes"] >= stats["batches"] >= 1 and 0 < stats["batch_fill"] <= 1
    assert stats["groups_padded"] >= 1 and stats["dummy_rows"] >= 1
    assert stats["responses"]["401"] >= 1 and stats["latency_ms"]["p99"] >= stats["latency_ms"]["p50"] > 0


def test_a_replica_killed_under_load_retries_cleanly_and_recovers(server: Server) -> None:
    """Requests in flight when the only replica is killed are sent again (by Ray Serve's router,
    or by the gateway when Serve reports the replica lost) and answered by its replacement, each
    with its own scores; none hangs, and the server serves on.

    Each request holds 3-5 batches' worth of inputs, so the replica always has parts queued."""
    pid = server.handle.describe.remote().result()["pid"]
    stop = threading.Event()
    outcomes: list[tuple[float, float, int, int, int]] = []  # sent, answered, status, inputs, scores

    def client(seed: int) -> None:
        while not stop.is_set():
            inputs = texts(seed + len(outcomes), 3 * MAX_BATCH + (seed + len(outcomes)) % (2 * MAX_BATCH))
            sent = time.monotonic()
            answer = server.classify(inputs, key=(ALICE_KEY, BOB_KEY)[seed % 2])
            outcomes.append(
                (sent, time.monotonic(), answer.status_code, len(inputs), len(answer.json().get("scores", [])))
            )

    with ThreadPoolExecutor(6) as pool:
        clients = [pool.submit(client, seed) for seed in range(6)]
        deadline = time.monotonic() + 60
        while len(outcomes) < 6 and time.monotonic() < deadline:  # under way on every client
            time.sleep(0.1)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        while sum(sent > killed for sent, *_ in outcomes) < 6 and time.monotonic() < deadline + 60:
            time.sleep(0.1)  # until requests sent after the crash are answered too
        stop.set()
        for future in clients:
            future.result(timeout=90)
    in_flight = [outcome for outcome in outcomes if outcome[0] < killed < outcome[1]]
    assert in_flight and sum(sent > killed for sent, *_ in outcomes) >= 6
    assert all(status == 200 and scores == count for _, _, status, count, scores in in_flight), in_flight
    assert {status for _, _, status, _, _ in outcomes} <= {200, 503}
    assert all(scores == count for _, _, status, count, scores in outcomes if status == 200)
    assert server.handle.describe.remote().result()["pid"] != pid
    assert server.classify(["after the crash"]).status_code == 200


def this_machines_address() -> str | None:
    """A non-loopback address of this machine (the interface of its default route), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_without_keys_only_loopback_clients_are_answered(server: Server, tiny_servable_dir: Path) -> None:
    """A second application without keys on the same (all-interfaces) proxy: a caller from this
    machine's network address gets 403, a loopback caller its scores."""
    from ray import serve

    from serving.app import ServeOptions, build_app

    address = this_machines_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    options = ServeOptions(model=str(tiny_servable_dir), cpus_per_replica=1)
    serve.run(build_app(options), name="open", route_prefix="/open")
    try:
        body = {"inputs": ["a fine film"]}
        remote = requests.post(f"http://{address}:{server.port}/open/v1/classify", json=body, timeout=60)
        assert remote.status_code == 403 and "loopback" in remote.json()["error"]
        assert (
            requests.post(f"http://127.0.0.1:{server.port}/open/v1/classify", json=body, timeout=60).status_code == 200
        )
    finally:
        serve.delete("open")
