"""Loading and evaluating in several processes gives what one process gives, byte for byte; a failing or killed
evaluation worker fails the run and leaves the previous output as it was; a load worker that cannot read its
share leaves it to the run's process, with the same rows, messages and line numbers.

Runs go through the real CLI in a subprocess: a fork needs a process without other threads, which the test
runner (with its emulator threads) is not.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from auditors.report import Summary
from auditors.sinks.local import LocalFilesSink
from auditors.workers import CLUSTERS_PER_PROCESS, process_count

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from synth_estate import generate

REPO = Path(__file__).resolve().parent.parent
RUN_ID = "0b9c1a52-3a4e-4c43-9a3b-5f0e2d7c8a11"
EXEMPTIONS = ("exemptions:\n  - {id: EX-1, rules: [AKS-ACR-006, AKS-ACR-001], clusters: {name: aks-00*},\n"
              "     justification: migration, approvedBy: secops@example.com, expiresOn: 2027-03-31}\n")


@pytest.fixture(scope="module")
def estate(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("estate")
    generate(folder, clusters=240, registries=60, role_assignments=4000, subscriptions=30, seed=11)
    (folder.parent / "exemptions.yaml").write_text(EXEMPTIONS)
    return folder


SPLIT_EVERY_FILE = "import auditors.inputs\nauditors.inputs.SHARED_FILE_BYTES = 1\n"


def saying(module: str, owner: str, line: str) -> str:
    """A prelude after which `owner` (an attribute path in `module`) writes `line` on stderr (an f-string body over
    the call's `args`, written in one piece whichever process calls it) each time before it does what it did."""
    name = owner.replace(".", "_")
    return (f"import os\nimport {module}\nreal_{name} = {module}.{owner}\n"
            f"def saying_{name}(*args, **kwargs):\n"
            f"    os.write(2, (f{line!r} + '\\n').encode())\n"
            f"    return real_{name}(*args, **kwargs)\n"
            f"{module}.{owner} = saying_{name}\n")


def scan(snapshot: Path, out: Path, workers: int, *, prelude: str = "") -> subprocess.CompletedProcess:
    args = ["scan", "--snapshot", str(snapshot), "--out", str(out), "--workers", str(workers), "--run-id", RUN_ID,
            "--exemptions", str(snapshot.parent / "exemptions.yaml")]
    code = f"{prelude}\nimport sys\nfrom auditors.cli import main\nsys.exit(main({args!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)


def outputs(out: Path) -> dict[str, str]:
    """The run's files with its own time stamps masked (two runs never start in the same second)."""
    run = json.loads((out / "run.json").read_text())
    files = {name: (out / name).read_text() for name in ("findings.jsonl", "findings.csv")}
    files["run.json"] = json.dumps({k: v for k, v in run.items() if k not in ("StartTime", "EndTime", "TimeGenerated",
                                                                             "DurationSeconds")}, sort_keys=True)
    return {name: text.replace(run["StartTime"], "<this run>") for name, text in files.items()}


def without_clusters_of_one_subscription(snapshot: Path) -> str:
    """The next collection misses one subscription's clusters; the manifest says why. Returns the subscription."""
    lines = (snapshot / "clusters.jsonl").read_text().splitlines()
    subscription = json.loads(lines[-1])["subscriptionId"]
    (snapshot / "clusters.jsonl").write_text("\n".join(line for line in lines
                                                       if json.loads(line)["subscriptionId"] != subscription) + "\n")
    manifest = json.loads((snapshot / "manifest.json").read_text())
    manifest["coverage"]["gaps"] = [{"query": "clusters", "types": ["microsoft.containerservice/managedclusters"],
                                     "subscriptions": [subscription], "reason": "HTTP 500 after 4 attempts"}]
    (snapshot / "manifest.json").write_text(json.dumps(manifest))
    return subscription


def test_three_processes_write_what_one_writes_across_a_first_and_a_carried_run(estate, tmp_path):
    import shutil

    results = {}
    for workers in (1, 3):
        snapshot = tmp_path / f"snapshot-{workers}"
        shutil.copytree(estate, snapshot)
        shutil.copy(estate.parent / "exemptions.yaml", tmp_path / "exemptions.yaml")
        out = tmp_path / f"out-{workers}"
        first = scan(snapshot, out, workers)
        assert first.returncode == 0, first.stderr
        assert ("evaluating in 3 processes" in first.stderr) == (workers == 3)
        first_files = outputs(out)
        without_clusters_of_one_subscription(snapshot)
        second = scan(snapshot, out, workers)
        assert second.returncode == 3, second.stderr  # Incomplete: a collection gap
        results[workers] = (first_files, outputs(out), first.stdout.split("\n\n")[0], second.stdout)
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]

    (one_first, one_second, one_table, one_text), (three_first, three_second, three_table, three_text) = \
        results[1], results[3]
    assert one_table == three_table  # the summary's counts
    for name in one_first:
        assert one_first[name] == three_first[name], name
    # The second run's FirstSeen/LastSeen hold the first run's time, which differs between the two sequences.
    first_one = json.loads(one_first["run.json"])
    assert first_one["CarriedForward"] == 0 and first_one["ExemptedCount"] > 0
    second_one, second_three = (json.loads(files["run.json"]) for files in (one_second, three_second))
    assert second_one["CarriedForward"] > 0 and second_one == second_three
    assert _rows_without_times(one_second) == _rows_without_times(three_second)
    assert "carried forward as Unknown" in one_text
    assert _printed(one_text, "out-1", "snapshot-1") == _printed(three_text, "out-3", "snapshot-3")


def _printed(text: str, *names: str) -> str:
    for name in names:
        text = text.replace(name, "<folder>")
    return re.sub(r" in \d+\.\ds;", " in <seconds>;", text)


def _rows_without_times(files: dict[str, str]) -> list[dict]:
    rows = [json.loads(line) for line in files["findings.jsonl"].splitlines()]
    for row in rows:
        for column in ("FirstSeen", "LastSeen"):
            row.pop(column, None)
        # "Last known: Fail on <the first run's time>" (masked as "<this run>" when both runs began in one second)
        row["Message"] = re.sub(r" on (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ|<this run>)", " on <time>",
                                row.get("Message", ""))
    return rows


@pytest.mark.parametrize(("failure", "said"), [
    ("raise RuntimeError('rule blew up in a worker')",
     r"worker process [12] of 2 failed: RuntimeError: rule blew up in a worker \(at <string>:"),
    ("os.kill(os.getpid(), signal.SIGKILL)",
     r"worker process [12] of 2 ended without a result \(killed by signal 9\)"),
])
def test_a_worker_that_fails_or_dies_fails_the_run_and_keeps_the_previous_output(estate, tmp_path, failure, said):
    out = tmp_path / "out"
    assert scan(estate, out, 1).returncode == 0
    before = {name: (out / name).read_bytes() for name in ("findings.jsonl", "findings.csv", "run.json")}
    prelude = ("import os, signal\nfrom auditors import engine\nPARENT = os.getpid()\n"
               "real = engine.Evaluator._cluster\n"
               "def failing(self, cluster):\n"
               "    if os.getpid() != PARENT and cluster.name.endswith('9'):\n"
               f"        {failure}\n"
               "    return real(self, cluster)\n"
               "engine.Evaluator._cluster = failing\n")
    result = scan(estate, out, 3, prelude=prelude)
    assert result.returncode == 4, result.stderr
    assert re.search(said, result.stderr), result.stderr
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no part or temporary file left


def test_the_parent_failing_stops_its_workers_and_removes_their_parts(estate, tmp_path):
    out = tmp_path / "out"
    prelude = ("import os, time\nfrom auditors import engine\nPARENT = os.getpid()\nreal = engine.Evaluator._cluster\n"
               "def failing(self, cluster):\n"
               "    if os.getpid() == PARENT and cluster.name.endswith('5'):\n"
               "        time.sleep(0.5)\n"  # the workers are writing their parts by now
               "        raise RuntimeError('the run itself failed')\n"
               "    return real(self, cluster)\n"
               "engine.Evaluator._cluster = failing\n")
    result = scan(estate, out, 3, prelude=prelude)
    assert result.returncode == 4 and "the run itself failed" in result.stderr
    assert not (out / "findings.jsonl").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(("requested", "clusters", "cpus", "threads", "partitioned", "expected"), [
    (0, 20_000, 2, 1, True, 2),  # auto: one per CPU
    (0, 20_000, 32, 1, True, 8),  # auto: at most 8
    (0, 20_000, 1, 1, True, 1),  # auto on one CPU
    (0, 3 * CLUSTERS_PER_PROCESS, 8, 1, True, 3),  # auto: enough clusters for each
    (0, CLUSTERS_PER_PROCESS - 1, 8, 1, True, 1),  # auto: a small estate stays in one process
    (3, 10, 1, 1, True, 3),  # asked for: as asked, whatever the CPUs
    (5, 2, 8, 1, True, 2),  # never more processes than clusters
    (1, 20_000, 8, 1, True, 1),
    (4, 20_000, 8, 2, True, 1),  # another thread: no fork
    (4, 20_000, 8, 1, False, 1),  # a sink that cannot take parts (Log Analytics, evidence, reports)
])
def test_how_many_processes_evaluate(monkeypatch, requested, clusters, cpus, threads, partitioned, expected):
    import threading

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)), raising=False)
    monkeypatch.setattr(threading, "active_count", lambda: threads)

    class OneProcessOnly:
        name = "remote"

    sinks = [Summary()] + ([] if partitioned else [OneProcessOnly()])
    assert process_count(requested, clusters, sinks) == expected


def test_the_sinks_that_take_parts_are_the_local_ones():
    for sink in (Summary, LocalFilesSink):
        assert all(hasattr(sink, method) for method in ("part", "absorb"))
    from auditors.reports import ReportSink
    from auditors.sinks.evidence import EvidenceSink
    from auditors.sinks.log_analytics import LogAnalyticsSink

    for sink in (ReportSink, EvidenceSink, LogAnalyticsSink):
        assert not hasattr(sink, "part")


@pytest.mark.parametrize("workers_slowed", [False, True])
def test_every_file_read_in_three_processes_loads_what_one_process_loads(estate, tmp_path, workers_slowed):
    # Every JSON Lines file is large enough to share; the role assignments are read in three, in 48 pieces.
    # Says when a worker's piece is taken in (not read again by the run).
    counted = SPLIT_EVERY_FILE + "import time\nfrom auditors import inputs\n" + saying(
        "auditors.model", "Inventory.absorb_role_assignments", "took in {args[1].rows} role assignment rows")
    if workers_slowed:  # so that the run's process reads pieces too, from the start of the file
        counted += ("read_share = inputs._read_share\n"
                    "def slowly(*args):\n"
                    "    time.sleep(0.1)\n"
                    "    return read_share(*args)\n"
                    "inputs._read_share = slowly\n")
    one = scan(estate, tmp_path / "one", 1, prelude=counted)
    three = scan(estate, tmp_path / "three", 3, prelude=counted)
    assert one.returncode == three.returncode == 0, three.stderr
    # Only the role assignments are shared: workers on other files would only hand their shares back.
    assert "[scan] reading role_assignments.jsonl in 3 processes" in three.stderr.splitlines()
    taken = [line for line in three.stderr.splitlines() if line.startswith("took in ")]
    assert "took in " not in one.stderr
    assert 2 <= len(taken) < 48 if workers_slowed else len(taken) >= 2  # workers' pieces taken in
    assert "in 3 processes" not in one.stderr
    assert outputs(tmp_path / "one") == outputs(tmp_path / "three")
    assert _printed(one.stdout, str(tmp_path / "one")) == _printed(three.stdout, str(tmp_path / "three"))


@pytest.mark.parametrize("damage", ["{not json", '["a", "list"]', '{"id": "/subscriptions/x/providers/'
                                    'Microsoft.Authorization/roleAssignments/y"}',
                                    '{"id": "/subscriptions/x/resourceGroups/g/providers/Microsoft.ContainerRegistry/'
                                    'registries/extra", "type": "microsoft.containerregistry/registries", '
                                    '"name": "extra", "location": "westeurope", "properties": {}}'])
def test_a_damaged_row_in_a_share_read_elsewhere_is_reported_as_one_process_reports_it(estate, tmp_path, damage):
    import shutil

    snapshot = tmp_path / "snapshot"
    shutil.copytree(estate, snapshot)
    shutil.copy(estate.parent / "exemptions.yaml", tmp_path / "exemptions.yaml")
    lines = (snapshot / "role_assignments.jsonl").read_text().splitlines()
    lines[len(lines) * 5 // 6] = damage  # in a piece near the end: a worker's
    (snapshot / "role_assignments.jsonl").write_text("\n".join(lines) + "\n")
    one = scan(snapshot, tmp_path / "one", 1, prelude=SPLIT_EVERY_FILE)
    three = scan(snapshot, tmp_path / "three", 3, prelude=SPLIT_EVERY_FILE)
    assert one.returncode == three.returncode, three.stderr
    if one.returncode != 2:  # a row the loader skips, or cannot read (a gap): the same notes, gaps and findings
        notes = [[line for line in result.stderr.splitlines() if "skipped" in line] for result in (one, three)]
        assert notes[0] == notes[1]
        assert outputs(tmp_path / "one") == outputs(tmp_path / "three")
        assert _printed(one.stdout, str(tmp_path / "one")) == _printed(three.stdout, str(tmp_path / "three"))
    else:
        assert one.stderr.splitlines()[-1] == three.stderr.splitlines()[-1]
        assert f"role_assignments.jsonl: line {len(lines) * 5 // 6 + 1}:" in three.stderr


@pytest.mark.parametrize("dies", ["at once", "after handing over pieces", "while leaving a piece"])
def test_a_load_worker_that_dies_leaves_its_pieces_to_the_run(estate, tmp_path, dies):
    dying = SPLIT_EVERY_FILE + ("import os, pickle, signal\nfrom auditors import inputs\n"
                                "read_share = inputs._read_share\n")
    if dies == "at once":
        dying += "inputs._read_share = lambda *args: os.kill(os.getpid(), signal.SIGKILL)\n"
    elif dies == "after handing over pieces":
        dying += ("done = []\n"
                  "def read_then_die(*args):\n"
                  "    done.append(1)\n"
                  "    if len(done) > 3:\n"
                  "        os.kill(os.getpid(), signal.SIGKILL)\n"
                  "    return read_share(*args)\n"
                  "inputs._read_share = read_then_die\n")
    else:  # half a share in its file, and no word of it
        dying += ("real_dump = pickle.dump\n"
                  "def dump_half(share, handle, **kw):\n"
                  "    handle.write(pickle.dumps(share)[:100])\n"
                  "    handle.flush()\n"
                  "    os.kill(os.getpid(), signal.SIGKILL)\n"
                  "inputs.pickle = type('P', (), {'dump': staticmethod(dump_half), 'load': pickle.load,\n"
                  "                               'UnpicklingError': pickle.UnpicklingError,\n"
                  "                               'HIGHEST_PROTOCOL': pickle.HIGHEST_PROTOCOL})\n")
    three = three_processes_write_what_one_writes(estate, tmp_path, dying)
    assert "[scan] reading role_assignments.jsonl in 3 processes" in three.stderr.splitlines()
    assert re.search(r"reading role_assignments.jsonl \(worker [12] of 2\) ended without a result \(killed by "
                     r"signal 9\): its pieces were read by the run's own process", three.stderr), three.stderr


def three_processes_write_what_one_writes(estate: Path, tmp_path: Path, prelude: str) -> subprocess.CompletedProcess:
    """Scans in one process and (after `prelude`) in three; both succeed and write the same. Returns the second."""
    one = scan(estate, tmp_path / "one", 1)
    three = scan(estate, tmp_path / "three", 3, prelude=prelude)
    assert one.returncode == three.returncode == 0, three.stderr
    assert outputs(tmp_path / "one") == outputs(tmp_path / "three")
    return three


def test_without_a_folder_for_the_workers_pieces_the_file_is_read_in_one_process(estate, tmp_path):
    refusing = SPLIT_EVERY_FILE + ("import errno, os, tempfile\n"
                                   "make = tempfile.mkdtemp\n"
                                   "def refuse(*args, prefix='', **kwargs):\n"
                                   "    if prefix == 'acr-audit-load-':\n"
                                   "        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
                                   "    return make(*args, prefix=prefix, **kwargs)\n"
                                   "tempfile.mkdtemp = refuse\n")
    three = three_processes_write_what_one_writes(estate, tmp_path, refusing)
    assert "[scan] role_assignments.jsonl is read in one process: No space left on device" in three.stderr


def test_a_worker_hands_over_items_as_it_goes_and_those_sent_before_it_dies_stay_valid():
    import signal
    import time

    from auditors.forking import Forked, WorkerFailed

    def count_then_die(send):
        for number in range(5):
            send(number)
        time.sleep(0.3)
        send("x" * 10_000_000)  # cut short by the kill below
        return "never"

    worker = Forked.start(count_then_die, "a counting worker", sends=True)
    time.sleep(0.2)
    assert worker.received() == [0, 1, 2, 3, 4]  # before the worker has ended
    assert worker.received() == []
    time.sleep(0.2)
    os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(WorkerFailed, match=r"a counting worker ended without a result \(killed by signal 9\)"):
        worker.result()
    assert worker.received() == []  # the item cut short is not one
    finished = Forked.start(lambda send: [send(n) for n in range(3)] and "done", "a worker", sends=True)
    assert finished.result() == "done" and finished.received() == [0, 1, 2]


@pytest.mark.parametrize("kernel_copy", ["works", "refused", "missing"])
def test_a_part_is_appended_after_what_was_written_whatever_the_kernel_offers(tmp_path, monkeypatch, kernel_copy):
    from auditors.sinks import local

    if kernel_copy == "refused":
        def refuse(*_args):
            raise OSError(18, "Invalid cross-device link")
        monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    elif kernel_copy == "missing":
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    (tmp_path / "part").write_bytes(b"part line\n" * 50_000)
    with (tmp_path / "target").open("wb") as target:
        target.write(b"head\n")
        target.flush()
        with (tmp_path / "part").open("rb") as source:
            local._append(source, target)
        target.write(b"tail\n")
    assert (tmp_path / "target").read_bytes() == b"head\n" + b"part line\n" * 50_000 + b"tail\n"


@pytest.mark.parametrize("shares", [1, 2, 3, 5, 40])
def test_the_shares_in_order_then_the_tail_are_the_whole_run(shares):
    from auditors.engine import Evaluator
    from tests.helpers import demo_config, demo_rows, evaluate
    from tests.test_demo import demo_exemptions

    whole = evaluate(demo_rows(), demo_config(), exemptions=demo_exemptions())
    evaluator = Evaluator(_demo_inventory(), demo_config(), run_id="r", time_generated="t",
                          exemptions=demo_exemptions())
    parts = [[f.FindingId for f in evaluator.share(index, shares)] for index in range(shares)]
    tail = [f.FindingId for f in evaluator.tail()]
    assert tail and [i for part in parts for i in part] + tail == [f.FindingId for f in whole]
    assert evaluator.pair_count == len({(f.ClusterId, f.RegistryId or f.RegistryName) for f in whole
                                        if f.RuleId == "AKS-ACR-000"})


def _demo_inventory():
    from tests.helpers import demo_rows, snapshot_inventory

    return snapshot_inventory(demo_rows())  # captured when the demo's manifest says, as `evaluate` reads it


def test_a_worker_killed_while_it_sends_its_result_is_a_worker_failure():
    import signal
    import time

    from auditors.forking import Forked, WorkerFailed

    worker = Forked.start(lambda: b"x" * 8_000_000, "a big share")  # blocks on the pipe after its first 64 KiB
    time.sleep(0.5)
    os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(WorkerFailed, match=r"a big share ended without a result \(killed by signal 9\)"):
        worker.result()
    worker.stop()  # nothing left to stop, and no descriptor closed twice


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has ended (an orphan's reaper may be slow)


@pytest.mark.parametrize("end", ["the run fails", "the run is killed"])
def test_no_worker_outlives_the_run(estate, tmp_path, end):
    import signal
    import time

    parent_fails = end == "the run fails"
    prelude = ("import os, time\nfrom auditors import engine\nPARENT = os.getpid()\n"
               "real = engine.Evaluator._cluster\n"
               "def slow(self, cluster):\n"
               "    if os.getpid() != PARENT:\n"
               "        os.write(2, f'worker {os.getpid()}\\n'.encode())\n"  # one write: workers print at once
               "        time.sleep(120)\n"
               f"    elif {parent_fails!r}:\n"
               "        time.sleep(1)\n"
               "        raise RuntimeError('the run itself failed')\n"
               "    else:\n"
               "        time.sleep(120)\n"
               "    return real(self, cluster)\n"
               "engine.Evaluator._cluster = slow\n")
    args = ["scan", "--snapshot", str(estate), "--out", str(tmp_path / "out"), "--workers", "3", "--quiet"]
    code = f"{prelude}\nimport sys\nfrom auditors.cli import main\nsys.exit(main({args!r}))"
    run = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           text=True, cwd=REPO)
    workers = []
    while len(workers) < 2:
        line = run.stderr.readline()
        assert line, "the run ended before its workers started"
        workers += [int(pid) for pid in re.findall(r"worker (\d+)", line)]
    if not parent_fails:
        run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _running(pid)], f"workers still running after {end}"
    run.stderr.close()


@pytest.mark.parametrize("worker_pause", [0.0, 0.1])
def test_pieces_are_taken_from_both_ends_until_they_meet_each_once_and_in_order(worker_pause):
    import time

    from auditors.forking import Claims, Forked

    claims = Claims(64)

    def take_from_back() -> list[int]:
        taken = []
        while (piece := claims.from_back()) is not None:
            taken.append(piece)
            time.sleep(worker_pause)
        return taken

    workers = [Forked.start(take_from_back, f"worker {n}") for n in (1, 2)]
    mine = []
    while (piece := claims.from_front()) is not None:
        mine.append(piece)
        time.sleep(0.01)
    theirs = [worker.result() for worker in workers]
    claims.close()
    assert mine == list(range(claims.mine))  # the run's pieces: a prefix, in order
    assert all(taken == sorted(taken, reverse=True) for taken in theirs)
    taken = [piece for pieces in theirs for piece in pieces]
    assert len(taken) == len(set(taken))  # never one piece to two workers
    assert set(range(claims.mine, 64)) <= set(taken)  # nothing left undone
    if worker_pause:  # slowed workers take fewer pieces: the run's process does the rest
        assert claims.mine > 40, theirs
    else:  # quick ones take most
        assert taken and claims.mine < 32, mine


def test_a_piece_taken_from_both_ends_is_written_once(estate, tmp_path):
    one = scan(estate, tmp_path / "one", 1)
    assert one.returncode == 0, one.stderr
    # Workers that never see the run's pieces as taken take every piece: the race at the meeting point, made
    # to happen on every piece the run's process evaluates.
    prelude = ("from auditors import forking\n"
               "real = forking.Claims.from_back\n"
               "def blind(self):\n"
               "    self._RUN = -1\n"
               "    return real(self)\n"
               "forking.Claims.from_back = blind\n") + saying("auditors.sinks.local", "LocalFilesSink.discard",
                                                             "discarded a part")
    three = scan(estate, tmp_path / "three", 3, prelude=prelude)
    assert three.returncode == 0, three.stderr
    assert "discarded a part" in three.stderr
    assert outputs(tmp_path / "one") == outputs(tmp_path / "three")
    assert not [p.name for p in (tmp_path / "three").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("kernel", ["starts writing early", "has no sync_file_range"])
def test_the_findings_files_are_handed_to_the_disk_as_they_grow(tmp_path, monkeypatch, kernel):
    from auditors.findings import encode
    from auditors.sinks import local
    from tests.helpers import demo_config, demo_rows, evaluate

    asked: list[tuple[int, int, int]] = []
    real = local._start_writing
    if kernel == "has no sync_file_range":
        monkeypatch.setattr(local, "_start_writing", None)
    else:
        def recorded(fd, offset, length, flags):
            asked.append((fd, offset, length))
            return real(fd, offset, length, flags)
        monkeypatch.setattr(local, "_start_writing", recorded)
    monkeypatch.setattr(local, "WRITEBACK_BYTES", 4096)
    findings = [encode(f) for f in evaluate(demo_rows(), demo_config())]
    sink = LocalFilesSink(tmp_path, RUN_ID)
    for start in range(0, len(findings), 7):
        sink.write(findings[start:start + 7])
    sink.close()
    for fd in {fd for fd, _, _ in asked}:  # each file's ranges: one after the other, the whole file in the end
        ranges = [(offset, length) for f, offset, length in asked if f == fd]
        assert [offset for offset, _ in ranges] == [0] + [o + n for o, n in ranges[:-1]]
        assert sum(n for _, n in ranges) in {(tmp_path / name).stat().st_size for name in ("findings.jsonl",
                                                                                            "findings.csv")}
    assert len({fd for fd, _, _ in asked}) == (2 if kernel == "starts writing early" else 0)
    assert (tmp_path / "findings.jsonl").read_bytes().count(b"\n") == len(findings)


def test_summaries_of_pieces_taken_over_in_order_list_the_same_worst_pairs_as_one():
    import random
    from types import SimpleNamespace

    rng = random.Random(3)
    verdicts = [SimpleNamespace(RuleId="AKS-ACR-000", Status=rng.choice(["Pass", "Fail", "Fail", "Unknown"]),
                                Severity="High", Exempted=False, Evidence={"rootCause": f"AKS-ACR-00{n % 6}"},
                                ClusterId=f"/subscriptions/s/resourceGroups/g{n % 3}/providers/x/clusters/c{n % 97}",
                                ClusterName=f"c{n % 97}", ResourceGroup=f"g{n % 3}", RegistryId=f"/r/acr{n % 13}",
                                RegistryName=f"acr{n % 13}", Message=f"message {n}")
                for n in range(3000)]
    whole, pieces = Summary(), [Summary().part(n) for n in range(7)]
    for number, verdict in enumerate(verdicts):
        whole.observe(verdict)
        pieces[number * 7 // len(verdicts)].observe(verdict)
    taken = Summary()
    for piece in pieces:
        taken.absorb(piece.finish())
    assert taken.worst_pairs() == whole.worst_pairs() and len(whole.worst_pairs()) == 10
    assert taken.pair_counts() == whole.pair_counts() and taken.counts == whole.counts
    assert sum(1 for pair in taken.pairs.values() if pair.message) <= 7 * 10  # no other message travels


def test_what_every_context_reads_is_worked_out_once_before_the_workers_start(estate, tmp_path):
    counting = saying("auditors.observed", "ObservedPulls.from_rows", "observed pulls worked out in {os.getpid()}")
    three = scan(estate, tmp_path / "three", 3, prelude=counting)
    assert three.returncode == 0, three.stderr
    assert three.stderr.count("observed pulls worked out in") == 1


def test_pieces_closed_twice_leave_a_descriptor_that_reused_their_number_alone():
    from auditors.forking import Claims

    claims = Claims(4)
    claims.close()
    reader, writer = os.pipe()  # the lowest free numbers: those the claims had
    try:
        claims.close()
        os.write(writer, b"still open")
        assert os.read(reader, 10) == b"still open"
    finally:
        os.close(reader)
        os.close(writer)


def test_a_worker_result_that_cannot_be_pickled_fails_the_work_with_the_reason():
    import threading

    from auditors.forking import Forked, WorkerFailed

    worker = Forked.start(threading.Lock, "a worker returning a lock")
    with pytest.raises(WorkerFailed, match=r"a worker returning a lock failed: TypeError: cannot pickle"):
        worker.result()


def test_sigterm_ends_a_parallel_scan_as_an_error_does_leaving_nothing_behind(estate, tmp_path):
    import signal
    import time

    out, temporary = tmp_path / "out", tmp_path / "tmp"
    temporary.mkdir()
    assert scan(estate, out, 1).returncode == 0
    before = {name: (out / name).read_bytes() for name in ("findings.jsonl", "findings.csv", "run.json")}
    slowed = SPLIT_EVERY_FILE + (  # the load's workers take their time: the run is stopped while they read
        "import os, time\nfrom auditors import inputs\nread_share = inputs._read_share\n"
        "def slowly(*args):\n"
        "    os.write(2, b'worker reading\\n')\n"
        "    time.sleep(0.5)\n"
        "    return read_share(*args)\n"
        "inputs._read_share = slowly\n")
    args = ["scan", "--snapshot", str(estate), "--out", str(out), "--workers", "3"]
    code = f"{slowed}\nimport sys\nfrom auditors.cli import main\nsys.exit(main({args!r}))"
    run = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           text=True, cwd=REPO, env={**os.environ, "TMPDIR": str(temporary)})
    while "worker reading" not in run.stderr.readline():
        pass
    time.sleep(0.3)  # pieces handed over and some in its folder
    run.send_signal(signal.SIGTERM)
    run.stderr.read()
    assert run.wait(timeout=60) == 143
    assert list(temporary.iterdir()) == []  # no work folder, no folder of pieces
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
