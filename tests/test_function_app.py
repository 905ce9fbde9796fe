"""The Functions app: a valid function index, and the timer run end to end against the Resource Graph
emulator, the Logs Ingestion emulator and Azurite, in-process (no Functions host exists here)."""

import inspect
import json
import tomllib
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest
from azure.functions.timer import TimerRequest

from auditors.inputs import demo_path
from auditors.services import Services
from auditors.settings import Settings, valid_schedule
from auditors.sinks.evidence import EvidenceArchive
from auditors.sinks.tables import FINDINGS_STREAM, RUNS_STREAM
from emulators.ingestion import LogsIngestionEmulator
from tests.helpers import demo_copy

ROOT = Path(__file__).resolve().parent.parent
DCR = "dcr-" + "cd" * 16


@cache
def functions():
    import function_app

    # get_functions() indexes once; a second call raises in azure-functions 1.x, so it is cached.
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def test_function_index_is_valid():
    index = functions()
    assert list(index) == ["acr_pull_audit"]
    for function in index.values():
        bindings = json.loads(function.get_function_json())["bindings"]
        parameters = list(inspect.signature(function.get_user_function()).parameters)
        assert [b["name"] for b in bindings] == parameters  # arg_name matches the parameter
        [trigger] = bindings
        assert trigger["type"] == "timerTrigger" and trigger["runOnStartup"] is False
        assert trigger["schedule"] == "%AUDIT_SCHEDULE%"


def test_schedule_setting_is_a_six_field_ncrontab_expression():
    assert valid_schedule(Settings().schedule)
    local = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert valid_schedule(local["AUDIT_SCHEDULE"])
    for bad in ("0 */6 * * *", "0 0 24 * * *", "every 6 hours"):
        assert not valid_schedule(bad)


def test_host_json():
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0" and host["extensionBundle"]["version"] == "[4.*, 5.0.0)"
    hours, minutes, seconds = map(int, host["functionTimeout"].split(":"))
    assert 0 < hours * 3600 + minutes * 60 + seconds <= 4 * 3600


def test_deployed_requirements_cover_the_package_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {d.split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in project["project"]["dependencies"]}
    lines = [x.strip() for x in (ROOT / "requirements.txt").read_text().splitlines()]
    required = {x.split(">")[0].split("=")[0].split("<")[0].strip().lower()
                for x in lines if x and not x.startswith("#")}
    assert declared <= required and "azure-functions" in required
    assert not any("azure-functions-worker" in x for x in required)


def test_function_app_builds_no_clients_at_import():
    source = (ROOT / "function_app.py").read_text()
    top_level = [line for line in source.splitlines() if line and not line.startswith((" ", "#", '"""'))]
    assert all(not line.startswith("from auditors") for line in top_level)
    assert len(source.splitlines()) <= 25  # a thin shim


@pytest.fixture
def deployment(tmp_path, azurite, monkeypatch, emulated_azure):
    """Environment variables as the infrastructure sets them, pointing at local emulators and Azurite: Resource
    Graph with deny assignments, Microsoft Graph and Container Insights serve a copy of the demo estate captured
    now, so the timer's live run and a scan of that copy must agree."""
    estate = demo_copy(tmp_path / "estate", captured_at=datetime.now(UTC).replace(microsecond=0))
    world = emulated_azure(estate, page_size=4)
    ingestion = LogsIngestionEmulator(dcr_id=DCR, ca_out=tmp_path / "ingest-ca.pem").start()
    bundle = tmp_path / "all-ca.pem"
    bundle.write_text(world.bundle.read_text() + (tmp_path / "ingest-ca.pem").read_text())
    suffix = tmp_path.name[-8:].lower().replace("_", "-").strip("-") or "e2e"
    env = {
        **world.environment(), "REQUESTS_CA_BUNDLE": str(bundle),
        "AUDIT_SINK": "log-analytics", "LOGS_INGESTION_ENDPOINT": ingestion.endpoint, "LOGS_DCR_IMMUTABLE_ID": DCR,
        "AUDIT_SCOPE": "tenant", "AUDIT_EVIDENCE": "true",
        "AUDIT_STORAGE_CONNECTION_STRING": azurite, "AUDIT_EVIDENCE_CONTAINER": f"evidence-{suffix}",
        "AUDIT_SPOOL_CONTAINER": f"spool-{suffix}", "AUDIT_OUT_DIR": str(tmp_path / "out"),
        "AUDIT_PAIRS_FILE": str(demo_path() / "pairs.yaml"), "AUDIT_SCHEDULE": "0 0 */6 * * *",
        "LOGS_ACCESS_TOKEN": "monitor-token",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield world, ingestion, estate
    ingestion.stop()


def test_timer_run_end_to_end(deployment, tmp_path):
    from auditors.pipeline import RunRequest, run_audit

    world, ingestion, estate = deployment
    timer = functions()["acr_pull_audit"].get_user_function()
    timer(TimerRequest(past_due=False))

    landed = ingestion.landed(FINDINGS_STREAM)
    [run] = ingestion.landed(RUNS_STREAM)
    assert run["RunStatus"] == "Succeeded" and run["Source"] == "live" and run["SubscriptionsSeen"] == 6
    assert run["FindingCount"] == len(landed) > 0 and world.arg.stats.throttled == 0
    assert run["Permissions"]["GroupMember.Read.All"] is True and run["Permissions"]["denyAssignments"] is True
    scanned = run_audit(Settings(out_dir=str(tmp_path / "scan"), pairs_file=str(demo_path() / "pairs.yaml")),
                        RunRequest("snapshot", estate))
    expected = [json.loads(line) for line in scanned.out_files[0].open()]
    assert _verdicts(landed) == _verdicts(expected)  # the deployed path finds what the scan of its estate finds
    settings = Settings.from_env()
    archive = EvidenceArchive(Services(settings).store(settings.evidence_container))
    archived = archive.find(run["RunId"])
    assert archived is not None and archive.verify(archived) == []
    assert run["EvidenceLocation"].endswith(archived.prefix) and run["ChainPosition"] == 1


def test_a_broken_dependency_fails_loudly_with_a_run_row_saying_why(deployment, monkeypatch):
    from auditors.pipeline import RunFailed

    _, ingestion, _ = deployment
    monkeypatch.setenv("AZURE_ARM_ENDPOINT", "https://127.0.0.1:9")  # Resource Graph unreachable
    timer = functions()["acr_pull_audit"].get_user_function()
    with pytest.raises(RunFailed, match=r"Resource Graph at https://127\.0\.0\.1:9: it refuses connections"):
        timer(TimerRequest(past_due=True))
    [run] = ingestion.landed(RUNS_STREAM)
    assert run["RunStatus"] == "Failed" and any("it refuses connections" in e for e in run["Errors"])
    assert ingestion.landed(FINDINGS_STREAM) == []


def test_misconfiguration_fails_before_any_work(monkeypatch):
    from auditors.settings import SettingsError

    monkeypatch.setenv("AUDIT_SINK", "log-analytics")
    monkeypatch.delenv("LOGS_INGESTION_ENDPOINT", raising=False)
    monkeypatch.setenv("LOGS_DCR_IMMUTABLE_ID", "wrong")
    timer = functions()["acr_pull_audit"].get_user_function()
    with pytest.raises(SettingsError, match="LOGS_INGESTION_ENDPOINT: required"):
        timer(TimerRequest(past_due=False))


def _verdicts(findings: list[dict]) -> list[tuple]:
    return sorted((f["FindingId"], f["Status"], f["Message"]) for f in findings)
