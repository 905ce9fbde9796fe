"""Secrets never reach logs, rows, locations, archives, reports or exports: one end-to-end run through the real
CLI with a SAS connection string for storage (Azurite) and bearer tokens for Log Analytics, then every output
is searched for every secret (as given and URL-decoded)."""

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import unquote

from tests.helpers import account_sas

DCR = "dcr-" + "ef" * 16
TOKEN = "monitor-token-0123456789-do-not-print"


def _sas_connection(azurite: str) -> tuple[str, list[str]]:
    fields, sas, signature = account_sas(azurite)
    return f"BlobEndpoint={fields['BlobEndpoint']};SharedAccessSignature={sas}", [signature, sas, fields["AccountKey"]]


def test_no_secret_reaches_any_output_of_a_full_run(azurite, tmp_path):
    connection, secrets = _sas_connection(azurite)
    secrets = [s for secret in [*secrets, TOKEN] for s in {secret, unquote(secret)}]
    store = tmp_path / "landed.jsonl"
    emulator = subprocess.Popen([sys.executable, "-m", "auditors", "emulate", "ingestion", "--dcr", DCR, "--ca-out",
                                 str(tmp_path / "ca.pem"), "--store", str(store)], stdout=subprocess.PIPE, text=True)
    try:
        endpoint = emulator.stdout.readline().split(" on ")[1].split(" ")[0]
        suffix = os.urandom(4).hex()
        env = {**os.environ, "AUDIT_SINK": "log-analytics", "LOGS_INGESTION_ENDPOINT": endpoint,
               "LOGS_DCR_IMMUTABLE_ID": DCR, "LOGS_ACCESS_TOKEN": TOKEN, "REQUESTS_CA_BUNDLE": str(tmp_path / "ca.pem"),
               "AUDIT_STORAGE_CONNECTION_STRING": connection, "AUDIT_EVIDENCE_CONTAINER": f"evidence-{suffix}",
               "AUDIT_SPOOL_CONTAINER": f"spool-{suffix}", "AUDIT_SIGNING_KEY_ID": ""}

        def cli(*args):
            return subprocess.run([sys.executable, "-m", "auditors", *args], capture_output=True, text=True, env=env,
                                  timeout=180)

        outputs = []
        scan = cli("scan", "--demo", "--out", str(tmp_path / "out"), "--report", "html", "--report", "md",
                   "--report", "json", "--exemptions", "auditors/demo/exemptions.yaml")
        assert scan.returncode == 0, scan.stderr
        outputs += [("scan", scan.stdout + scan.stderr)]
        run_id = json.loads((tmp_path / "out/run.json").read_text())["RunId"]
        for args in (("evidence", "list"), ("evidence", "verify"),
                     ("evidence", "export", "--out", str(tmp_path / "export.zip"))):
            done = cli(*args)
            assert done.returncode == 0, done.stderr
            outputs.append((" ".join(args), done.stdout + done.stderr))
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    for path in (tmp_path / "out").iterdir():
        outputs.append((str(path), path.read_text(encoding="utf-8", errors="replace")))
    outputs.append(("landed rows", store.read_text()))
    with zipfile.ZipFile(tmp_path / "export.zip") as bundle:
        outputs += [(f"export {name}", bundle.read(name).decode("utf-8", "replace")) for name in bundle.namelist()]
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite)
    for container in (f"evidence-{suffix}", f"spool-{suffix}"):
        client = service.get_container_client(container)
        if not client.exists():
            continue
        for blob in client.list_blobs():
            data = client.download_blob(blob.name).readall()
            data = gzip.decompress(data) if blob.name.endswith(".gz") else data
            outputs.append((f"{container}/{blob.name}", data.decode("utf-8", "replace")))
    assert len(outputs) > 15 and run_id in outputs[0][1]
    leaks = [(where, secret[:12]) for where, text in outputs for secret in secrets if secret in text]
    assert leaks == []
    locations = [r["record"]["EvidenceLocation"] for r in map(json.loads, store.read_text().splitlines())
                 if r["stream"] == "Custom-AcrPullAuditRuns"]
    assert locations and all(loc.startswith("http://127.0.0.1:") and "?" not in loc for loc in locations)
    assert Path(tmp_path / "out/report.html").exists()
