"""`evidence list | export | verify`: what the CLI does with the evidence archive.

`auditors.cli` parses the arguments and calls `run(args, archive, settings=...)`; `add_arguments` adds this
module's own options to the `export` and `verify` subcommands. Exit codes: 0 intact (or listed, exported),
1 problems found (verify; export also says so when a run it bundled has problems), 2 unusable input (an invalid
run id, no run matching, `--out` a folder, the workspace or the key vault unusable).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from auditors.settings import Settings
from auditors.sinks.evidence import (
    ArchivedRun,
    EvidenceArchive,
    InvalidRunId,
    KeyVaultSignatureChecker,
    SignatureChecker,
    SignatureCheckUnavailable,
    WorkspaceAnchor,
    WorkspaceQueryFailed,
)
from auditors.sinks.store import UnsafeObjectName

EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT = 0, 1, 2
# A run row is written when the run ends; a run that started late in the day ends on the next.
ROW_LAG = timedelta(days=2)


def add_arguments(export: argparse.ArgumentParser, verify: argparse.ArgumentParser) -> None:
    """The options this module reads beyond --from, --to, --run and --out."""
    for action in (export, verify):
        action.add_argument("--signing-key", metavar="KEY_ID",
                            help="trusted Key Vault key id whose signatures are checked (default AUDIT_SIGNING_KEY_ID)")
    verify.add_argument("--workspace", metavar="WORKSPACE_ID",
                        help="Log Analytics workspace (customerId) holding the runs table: every manifest must match "
                             "the ManifestSha256 its run row recorded (endpoint AUDIT_LOGS_QUERY_ENDPOINT)")
    verify.add_argument("--require-signature", action="store_true",
                        help="every run must be signed (default: only runs after the first signed one of a chain)")


def run(args: argparse.Namespace, archive: EvidenceArchive, *, settings: Settings | None = None,
        logs_client=None, keyvault_credential=None, keyvault_options: dict | None = None,
        stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """One `evidence` action. `logs_client` (a LogsQueryClient) is built from the settings and
    `keyvault_credential` is DefaultAzureCredential when not given; `keyvault_options` go to CryptographyClient
    (tests: connection_verify)."""
    command = _Command(args, archive, settings or Settings(), logs_client, keyvault_credential,
                       keyvault_options or {}, stdout or sys.stdout, stderr or sys.stderr)
    try:
        return command.run()
    except (InvalidRunId, UnsafeObjectName, IsADirectoryError, WorkspaceQueryFailed,
            SignatureCheckUnavailable) as exc:
        command.error(str(exc))
        return EXIT_BAD_INPUT


class _Command:
    def __init__(self, args, archive, settings, logs_client, keyvault_credential, keyvault_options, stdout,
                 stderr) -> None:
        self.args, self.archive, self.settings = args, archive, settings
        self.logs_client, self.keyvault_credential = logs_client, keyvault_credential
        self.keyvault_options = keyvault_options
        self.stdout, self.stderr = stdout, stderr
        self.run_id = getattr(args, "run", None)
        self.date_from: date | None = getattr(args, "date_from", None)
        self.date_to: date | None = getattr(args, "date_to", None)

    def say(self, text: str) -> None:
        print(text, file=self.stdout)

    def error(self, text: str) -> None:
        print(f"error: {text}", file=self.stderr)

    def note(self, text: str) -> None:
        print(f"note: {text}", file=self.stderr)

    def run(self) -> int:
        action = self.args.action
        if action == "export" and Path(self.args.out).is_dir():
            raise IsADirectoryError(f"--out {self.args.out} is a folder; give a file name such as "
                                    f"{Path(self.args.out) / 'evidence.zip'}")
        runs = self.selected()
        if runs is None:
            return EXIT_BAD_INPUT
        if action == "list":
            return self.list(runs)
        if action == "export":
            return self.export(runs)
        return self.verify(runs)

    def selected(self) -> list[ArchivedRun] | None:
        if self.run_id:
            found = self.archive.find(self.run_id)
            if found is None:
                self.error(f"run {self.run_id} is not in {self.archive.store.location()}")
                return None
            return [found]
        return self.archive.runs(self.date_from, self.date_to)

    def list(self, runs: list[ArchivedRun]) -> int:
        self.say(f"{'created (UTC)':<20}  {'run id':<36}  {'status':<10}  {'chain':>5}  {'scope':<24}  location")
        for run in runs:
            loaded = self.archive.load_manifest(run)
            document = loaded.document
            status = str(document.get("runStatus") or "") if loaded.readable else "(manifest unreadable)"
            created = str(document.get("createdAt") or f"{run.day}") if loaded.readable else f"{run.day}"
            position = loaded.position if loaded.position is not None else "-"
            self.say(f"{created:<20}  {run.run_id:<36}  {status:<10}  {position:>5}  {loaded.scope or '-':<24}  "
                     f"{self.archive.store.location(run.prefix)}")
        print(f"{len(runs)} run(s) in {self.archive.store.location()}", file=self.stderr)
        return EXIT_OK

    def export(self, runs: list[ArchivedRun]) -> int:
        if not runs:
            self.error("no archived runs match")
            return EXIT_BAD_INPUT
        path = self.archive.export(runs, Path(self.args.out), checker=self.checker())
        self.say(f"wrote {path} ({len(runs)} run(s))")
        damaged = [run.run_id for run in runs if self.archive.verify(run)]
        if damaged:
            self.error(f"{len(damaged)} exported run(s) have integrity problems (see verify.txt in the zip): "
                       f"{', '.join(damaged[:10])}")
            return EXIT_PROBLEMS
        return EXIT_OK

    def verify(self, runs: list[ArchivedRun]) -> int:
        workspace = getattr(self.args, "workspace", None)
        if not runs and not workspace:
            self.error("no archived runs match")
            return EXIT_BAD_INPUT
        anchor = self.anchor(workspace, runs) if workspace else None
        result = self.archive.verify_all(runs, checker=self.checker(), anchor=anchor,
                                         require_signature=bool(getattr(self.args, "require_signature", False)),
                                         date_from=self.date_from, date_to=self.date_to,
                                         single_run=bool(self.run_id))
        if anchor is not None:
            self._note_unanchored(runs, anchor)
        if not runs and not result.problems:
            self.error("no archived runs and no run rows match")
            return EXIT_BAD_INPUT
        for note in result.notes:
            self.note(note)
        for problem in result.problems:
            self.error(problem)
        problems = result.problems
        self.say(f"verified {len(runs)} run(s): "
                 + (f"FAILED, {len(problems)} problem(s)" if problems else "intact"))
        return EXIT_PROBLEMS if problems else EXIT_OK

    def anchor(self, workspace: str, runs: list[ArchivedRun]) -> WorkspaceAnchor:
        """The run rows of the days examined (and a little after: a row is written when its run ends)."""
        first = self.date_from or (runs[0].day if self.run_id and runs else None)
        last = self.date_to or (runs[-1].day if self.run_id and runs else None)
        start = datetime.combine(first, datetime.min.time(), UTC) if first else None
        end = datetime.combine(last, datetime.min.time(), UTC) + ROW_LAG if last else None
        if start is not None and end is None:
            end = datetime.now(UTC) + timedelta(hours=1)
        if end is not None and start is None:
            start = datetime(2000, 1, 1, tzinfo=UTC)
        return WorkspaceAnchor.query(self.logs_client or self._logs_client(), workspace, start, end)

    def _note_unanchored(self, runs: list[ArchivedRun], anchor: WorkspaceAnchor) -> None:
        """Runs older than the oldest run row cannot be anchored: the workspace's retention is shorter than the
        archive's. Their absence from the runs table is reported as a problem by verify; this says why."""
        starts = [row.started for rows in anchor.rows.values() for row in rows if row.started is not None]
        if starts:
            oldest = min(starts).date()
            older = [run for run in runs if run.day < oldest]
            if older:
                self.note(f"{len(older)} run(s) started before the oldest run row in the workspace ({oldest}); "
                          "if that is the workspace's retention, they cannot be anchored there")

    def _logs_client(self):
        from azure.monitor.query import LogsQueryClient

        from auditors.sources.credentials import credential

        return LogsQueryClient(credential(self.settings.logs_query_token), endpoint=self.settings.logs_query_endpoint)

    def checker(self) -> SignatureChecker | None:
        key_id = getattr(self.args, "signing_key", None) or self.settings.signing_key_id
        if not key_id:
            return None
        if urlsplit(key_id).scheme != "https" or "/keys/" not in key_id:
            raise SignatureCheckUnavailable(f"--signing-key {key_id[:200]!r} is not a Key Vault key id "
                                            "(https://<vault>/keys/<name>[/<version>])")
        credential = self.keyvault_credential
        if credential is None:
            from auditors.sources.credentials import credential as default_credential

            credential = default_credential("")
        return KeyVaultSignatureChecker(key_id, credential, **self.keyvault_options)
