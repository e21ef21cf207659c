"""Crash safety: a client streams upserts while `lmrec serve` is SIGKILLed at random moments (with
frequent snapshots, so some kills land mid-snapshot); after every restart each acknowledged item is
present, unchanged and searchable, and the state directory opens cleanly."""

from __future__ import annotations

import itertools
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _grpc_fixtures import serve_process, tiny_bundle  # noqa: F401  (fixtures; skips without the server extra)
from _tiny_bundle import TOPICS
from lmrec.client import RecommenderClient

TRIALS = 12
BUDGET_S = 40  # stop starting trials after this long (2 busy cores)
WORDS = sorted({w for ws in TOPICS.values() for w in ws})


def _texts() -> itertools.chain:
    """Distinct word sets, so each text embeds to its own vector and a search finds its item first."""
    return (" ".join(c) for c in itertools.combinations(WORDS, 4))


class Writer(threading.Thread):
    """Upserts until the server dies: unary calls and client streams, recording what was acked."""

    def __init__(self, client: RecommenderClient, texts, trial: int, acked: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.client, self.texts, self.trial, self.acked = client, texts, trial, acked
        self.calls = 0

    def _batch(self, n: int) -> dict:
        ids = [f"t{self.trial}-{self.calls}-{i}" for i in range(n)]
        return {"ids": ids, "texts": [next(self.texts) for _ in ids], "metadata": [{"trial": self.trial}] * n}

    def run(self) -> None:
        rng = random.Random(self.trial)
        try:
            while True:
                self.calls += 1
                if self.calls % 4 == 0:
                    batches = [self._batch(rng.randint(1, 10)) for _ in range(3)]
                    self.client.add_items_stream(batches)
                else:
                    batches = [self._batch(rng.randint(1, 20))]
                    self.client.add_items(**batches[0])
                for b in batches:  # acknowledged: the call returned
                    self.acked.update(zip(b["ids"], b["texts"], strict=True))
        except Exception:  # noqa: BLE001 - the server was killed: expected
            return


def test_no_acknowledged_write_is_lost_across_random_sigkills(serve_process, tiny_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    args = ("--bundle", str(tiny_bundle), "--state-dir", str(state), "--snapshot-interval", "0.2")
    acked: dict[str, str] = {}
    checked: set[str] = set()  # verified after an earlier restart: sampled from then on
    texts = _texts()
    rng = random.Random(1234)
    started = time.monotonic()
    trials = 0
    while trials < TRIALS and time.monotonic() - started < BUDGET_S:
        proc = serve_process(*args)
        port = proc.wait_port()
        with RecommenderClient(f"127.0.0.1:{port}", timeout=10, max_attempts=1) as client:
            proc.wait_serving(client)
            _check(client, acked, checked)
            checked = set(acked)
            writer = Writer(client, texts, trials, acked)
            writer.start()
            time.sleep(rng.uniform(0.05, 1.0))
            proc.kill()
            writer.join(15)
            assert not writer.is_alive()
        trials += 1
    proc = serve_process(*args)
    with RecommenderClient(f"127.0.0.1:{proc.wait_port()}", timeout=10) as client:
        proc.wait_serving(client)
        _check(client, acked, set())  # finally every single one
    assert trials >= 4, f"only {trials} kill/restart trials fit in {BUDGET_S} s"
    assert len(acked) >= 50 * trials, (
        f"only {len(acked)} items acknowledged over {trials} trials: the test wrote too little"
    )
    assert "snapshot written" in "".join(p.read_text() for p in tmp_path.glob("serve*.log")), (
        "no kill-free snapshot ever ran"
    )


def _check(client: RecommenderClient, acked: dict[str, str], checked: set[str]) -> None:
    """Every item acknowledged since the last check, and 200 checked before, is present; 40 are
    searched for by their text."""
    assert int(client.model_info()["catalogue_size"]) >= 120 + len(acked)
    rng = random.Random(len(acked))
    ids = [i for i in acked if i not in checked] + rng.sample(sorted(checked), min(200, len(checked)))

    def present(item_id: str) -> None:
        assert client.get_item(item_id).text == acked[item_id], f"acknowledged item {item_id} changed"

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(present, ids))  # re-raises the first failure (NOT_FOUND: lost)
    for item_id in rng.sample(sorted(acked), min(40, len(acked))):
        hits = client.search(acked[item_id], k=1)
        assert hits[0].item_id == item_id and hits[0].score > 0.999, f"{item_id} is not searchable"
