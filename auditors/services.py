"""The factory beside the pipeline: credentials, clients and stores built from settings, each once.

Settings stay plain data; everything that talks to Azure is built here, lazily, so a local scan never
touches storage or credentials it does not need.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path

from auditors.settings import Settings
from auditors.sinks.evidence import EvidenceArchive
from auditors.sinks.spool import Spool
from auditors.sinks.store import BlobStore, LocalStore, ObjectStore
from auditors.sources.credentials import credential

Progress = Callable[[str], None]


class Services:
    def __init__(self, settings: Settings, progress: Progress | None = None, *,
                 connection_verify: str | None = None, clock=None) -> None:
        self.settings = settings
        self.progress = progress or (lambda _m: None)
        self.clock = clock  # tests: the moment a live collection says it was captured at
        self.connection_verify = connection_verify  # tests: the emulators' CA (else REQUESTS_CA_BUNDLE or system)
        self._stores: dict[str, ObjectStore] = {}

    # -- credentials -----------------------------------------------------------------------------------------
    @cached_property
    def arm_credential(self):
        return credential(self.settings.arm_token, "AZURE_ACCESS_TOKEN")

    @cached_property
    def monitor_credential(self):
        return credential(self.settings.monitor_token, "LOGS_ACCESS_TOKEN")

    @cached_property
    def storage_credential(self):
        return credential(self.settings.storage_token, "AUDIT_STORAGE_ACCESS_TOKEN")

    @cached_property
    def keyvault_credential(self):
        return credential(self.settings.keyvault_token, "KEYVAULT_ACCESS_TOKEN")

    @cached_property
    def graph_credential(self):
        return credential(self.settings.graph_token, "GRAPH_ACCESS_TOKEN")

    @cached_property
    def logs_query_credential(self):
        return credential(self.settings.logs_query_token, "LOGS_QUERY_ACCESS_TOKEN")

    # -- storage ---------------------------------------------------------------------------------------------
    def store(self, container: str) -> ObjectStore:
        """Blob container when storage is configured, else a local folder under `local_dir`."""
        if container not in self._stores:
            self._stores[container] = self._new_store(container)
        return self._stores[container]

    def _new_store(self, container: str) -> ObjectStore:
        settings = self.settings
        if settings.storage_connection_string or settings.storage_account_url:
            from azure.storage.blob import BlobServiceClient, ExponentialRetry

            # The storage SDK's default back-off starts at 15 s; storage that is down must not hold a run for
            # minutes (see BlobStore): a refused connection is retried once, a server error three times in ~10 s.
            options = {"retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3,
                                                        random_jitter_range=1, retry_connect=1),
                       "connection_timeout": 10, "read_timeout": 60}
            if settings.storage_connection_string:
                service = BlobServiceClient.from_connection_string(settings.storage_connection_string, **options)
            else:
                service = BlobServiceClient(settings.storage_account_url, credential=self.storage_credential,
                                            **options)
            return BlobStore(service.get_container_client(container))
        return LocalStore(Path(settings.local_dir), container=container)

    @cached_property
    def spool(self) -> Spool:
        return Spool(self.store(self.settings.spool_container), stale_after=self.settings.spool_stale_seconds)

    @cached_property
    def evidence_archive(self) -> EvidenceArchive:
        signer = None
        if self.settings.signing_key_id:
            from auditors.sinks.evidence import KeyVaultSigner

            options = {"connection_verify": self.connection_verify} if self.connection_verify else {}
            signer = KeyVaultSigner(self.settings.signing_key_id, self.keyvault_credential, **options)
        return EvidenceArchive(self.store(self.settings.evidence_container), signer=signer)

    # -- clients ---------------------------------------------------------------------------------------------
    def log_analytics(self, run_id: str = ""):
        """The Logs Ingestion sink; with `run_id`, it writes ahead to the spool (see auditors/sinks/spool.py)."""
        from auditors.sinks.log_analytics import LogAnalyticsSink

        settings = self.settings
        return LogAnalyticsSink(endpoint=settings.ingestion_endpoint, rule_id=settings.dcr_immutable_id,
                                credential=self.monitor_credential, spool=self.spool,
                                stream=settings.findings_stream, workers=settings.upload_workers,
                                audience=settings.monitor_audience, connection_verify=self.connection_verify,
                                run_id=run_id, write_ahead_rows=settings.write_ahead_rows)

    def graph(self):
        from auditors.sources.graph import GraphCollector

        return GraphCollector(self.graph_credential, endpoint=self.settings.graph_endpoint,
                              connection_verify=self.connection_verify, progress=self.progress)

    def deny_assignments(self):
        from auditors.sources.deny_assignments import DenyAssignmentCollector

        return DenyAssignmentCollector(self.arm_credential, endpoint=self.settings.arm_endpoint,
                                       connection_verify=self.connection_verify, progress=self.progress)

    def container_insights(self):
        from auditors.durations import parse_lookback
        from auditors.sources.container_insights import ContainerInsightsCollector

        return ContainerInsightsCollector(self.logs_query_credential, endpoint=self.settings.logs_query_endpoint,
                                          lookback=parse_lookback(self.settings.pull_lookback),
                                          connection_verify=self.connection_verify, progress=self.progress,
                                          now=self.clock)

    def check_arm_credential(self) -> None:
        """Before any live work: a token for Resource Manager, or one line saying how to get one (exit 2)."""
        self.arm_credential.get_token(f"{self.settings.arm_endpoint.rstrip('/')}/.default")

    def resource_graph(self, **options):
        from auditors.sources.resource_graph import ResourceGraphCollector

        options = {"page_size": 1000, "concurrency": 4, **{k: v for k, v in options.items() if v is not None}}
        return ResourceGraphCollector(self.arm_credential, endpoint=self.settings.arm_endpoint,
                                      scope=self.settings.collection_scope, progress=self.progress,
                                      connection_verify=self.connection_verify, **options)
