"""Shared fixtures: Azurite (Blob Storage emulator from npm) on 127.0.0.1, started once per session."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_azurite(workspace: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    """Start Azurite's blob service on a free 127.0.0.1 port and wait until it accepts connections; skipped
    where Azurite is not installed (`npm ci`), except in CI, which requires it."""
    if not AZURITE.exists() or not shutil.which("node"):
        if os.environ.get("CI_REQUIRE_AZURITE"):
            pytest.fail("Azurite is required in CI but node_modules/.bin/azurite-blob is missing")
        pytest.skip("Azurite is not installed (run `npm ci`)")
    port = _free_port()
    process = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(workspace),
         "--silent", "--skipApiVersionCheck", "--disableTelemetry", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, port
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"Azurite exited: {process.stderr.read().decode()[:500]}")
            time.sleep(0.2)
    process.kill()
    pytest.fail("Azurite did not start within 30 s")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """Connection string of a running Azurite blob service (shared key, plain HTTP)."""
    process, port = _start_azurite(tmp_path_factory.mktemp("azurite"))
    yield (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
           f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    _stop(process)


@pytest.fixture(scope="session")
def azurite_oauth(tmp_path_factory):
    """Azurite over HTTPS with OAuth: (blob service URL, CA file, a bearer token it accepts). This is the path
    the deployed app takes (a token credential, no shared key)."""
    import base64
    import json

    import trustme

    folder = tmp_path_factory.mktemp("azurite-oauth")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    certificate.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    certificate.private_key_pem.write_to_path(str(folder / "key.pem"))
    authority.cert_pem.write_to_path(str(folder / "ca.pem"))
    process, port = _start_azurite(folder / "data", "--oauth", "basic", "--cert", str(folder / "cert.pem"),
                                   "--key", str(folder / "key.pem"))

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    now = int(time.time())
    token = ".".join([part({"alg": "RS256", "typ": "JWT"}), part({
        "aud": "https://storage.azure.com", "iss": "https://sts.windows.net/72f988bf-0000-0000-0000-000000000000/",
        "nbf": now - 60, "iat": now - 60, "exp": now + 3600, "oid": "00000000-0000-0000-0000-0000000000aa"}),
        "c2lnbmF0dXJl"])
    yield f"https://127.0.0.1:{port}/devstoreaccount1", str(folder / "ca.pem"), token
    _stop(process)


class EmulatedAzure:
    """Resource Graph (with the Resource Manager deny listing), Microsoft Graph and the Log Analytics query API,
    each an HTTPS emulator serving one snapshot folder; one CA bundle trusts all three."""

    def __init__(self, snapshot, folder: Path, **arg_options) -> None:
        from emulators.arg import ResourceGraphEmulator
        from emulators.graph import GraphEmulator
        from emulators.logs import LogsQueryEmulator

        arg_options.setdefault("quota", (1000, 5.0))
        self.arg = ResourceGraphEmulator(snapshot, ca_out=folder / "arg.pem", **arg_options).start()
        self.graph = GraphEmulator(snapshot, ca_out=folder / "graph.pem").start()
        self.logs = LogsQueryEmulator(snapshot, ca_out=folder / "logs.pem").start()
        self.bundle = folder / "ca-bundle.pem"
        self.bundle.write_text("".join((folder / f"{n}.pem").read_text() for n in ("arg", "graph", "logs")))

    def settings(self, **overrides):
        """Settings of a live run against the emulators (static tokens, as on a laptop)."""
        from auditors.settings import Settings

        values = {"arm_endpoint": self.arg.endpoint, "graph_endpoint": self.graph.endpoint,
                  "logs_query_endpoint": self.logs.endpoint, "arm_token": "arm-token", "graph_token": "graph-token",
                  "logs_query_token": "logs-token", **overrides}
        return Settings(**values)

    def environment(self) -> dict[str, str]:
        return {"AZURE_ARM_ENDPOINT": self.arg.endpoint, "AUDIT_GRAPH_ENDPOINT": self.graph.endpoint,
                "AUDIT_LOGS_QUERY_ENDPOINT": self.logs.endpoint, "AZURE_ACCESS_TOKEN": "arm-token",
                "GRAPH_ACCESS_TOKEN": "graph-token", "LOGS_QUERY_ACCESS_TOKEN": "logs-token",
                "REQUESTS_CA_BUNDLE": str(self.bundle)}

    def stop(self) -> None:
        for emulator in (self.arg, self.graph, self.logs):
            emulator.stop()


@pytest.fixture
def emulated_azure(tmp_path):
    started = []

    def start(snapshot, **arg_options) -> EmulatedAzure:
        world = EmulatedAzure(snapshot, tmp_path, **arg_options)
        started.append(world)
        return world

    yield start
    for world in started:
        world.stop()
