"""Where a run's rows come from: a snapshot on disk, the embedded demo, or live collection, into an Inventory.

Also capture (live rows into a replayable snapshot folder) and the recorder that keeps the rows a run
evaluated for the evidence archive.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import hashlib
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from auditors import __version__
from auditors.forking import Claims, Forked, WorkerFailed
from auditors.model import (
    T_GRAPH_APPLICATION,
    T_GRAPH_GROUP,
    T_GRAPH_SERVICE_PRINCIPAL,
    T_ROLE_ASSIGNMENT,
    Gap,
    Inventory,
    RoleAssignmentShare,
)
from auditors.sources.snapshot import (
    ID_LESS_TYPES,
    STREAMED_SUFFIXES,
    LoadReport,
    SnapshotError,
    iter_snapshot,
    json_lines_range,
    line_starts,
    normalise_row,
    snapshot_files,
    unnumbered_rows_of_range,
)

Progress = Callable[[str], None]
MANIFEST = "manifest.json"


def demo_path() -> Path:
    """The embedded demo estate (a directory of Resource Graph rows shipped in the package)."""
    return Path(str(resources.files("auditors") / "demo"))


@dataclass
class Loaded:
    """The inventory and how it was obtained."""

    inventory: Inventory
    load: LoadReport | None = None  # snapshot and demo input
    coverage: Any = None  # resource_graph.Coverage for live collection
    sources: dict[str, Any] = field(default_factory=dict)  # coverage of the sources beyond Resource Graph

    def coverage_dict(self) -> dict:
        """For the run record and a captured snapshot's manifest."""
        base = self.coverage.as_dict() if self.coverage is not None else {
            "rows": self.load.rows if self.load else None, "gaps": [g.to_dict() for g in self.inventory.gaps]}
        if self.sources:
            base["sources"] = {name: c if isinstance(c, dict) else c.as_dict() for name, c in self.sources.items()}
        base["permissions"] = dict(self.inventory.permissions)
        return base


def read_manifest(snapshot: str | Path) -> dict | None:
    path = Path(snapshot)
    manifest = path / MANIFEST if path.is_dir() else None
    if manifest is None or not manifest.exists():
        return None
    try:
        document = orjson.loads(manifest.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SnapshotError(f"{manifest}: unreadable manifest: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("coverage", {}), dict):
        raise SnapshotError(f"{manifest}: unreadable manifest: expected an object with a `coverage` object")
    return document


def capture_time(manifest: dict | None) -> str:
    """When a captured snapshot's data was taken (verdicts that depend on time are made for this moment)."""
    if not manifest:
        return ""
    sources = (manifest.get("coverage") or {}).get("sources") or {}
    insights = sources.get("containerInsights") if isinstance(sources, dict) else None
    moment = manifest.get("capturedAt") or (insights or {}).get("capturedAt") or manifest.get("finishedAt") or ""
    return moment if isinstance(moment, str) else ""


def load_snapshot(snapshot: str | Path, progress: Progress, row_filter=None, processes: int = 1) -> Loaded:
    """The snapshot's rows into an inventory. With `processes` > 1 (and no `row_filter`), large JSON Lines files
    are read in parallel: other processes read shares of them (see `_SharedFile`)."""
    load = LoadReport()
    progress(f"reading snapshot {snapshot}")
    manifest = read_manifest(snapshot)  # read first: a malformed manifest stops the run before any work
    inventory = Inventory()
    splits: dict[Path, _SharedFile] = {}
    try:
        if processes > 1 and row_filter is None:
            unshared = _share_large_files(snapshot, inventory, processes, splits)
            if unshared:
                progress(unshared)
        if splits:
            progress(f"reading {', '.join(f.name for f in splits)} in {processes} processes")
        rows = iter_snapshot(snapshot, load, splits)
        inventory.add_rows(row_filter(rows) if row_filter else rows, progress=progress)
    finally:
        for split in splits.values():
            split.stop()
            for failure in split.failures:
                progress(f"{failure}: its pieces were read by the run's own process")
    inventory.finish()
    progress("rows per table: " + ", ".join(f"{table} {count:,}" for table, count in sorted(load.tables.items())))
    if manifest:  # a captured snapshot carries what its collection missed, and when it was taken
        coverage = manifest.get("coverage") or {}
        try:
            inventory.gaps += [Gap.from_dict(g) for g in coverage.get("gaps") or []]
            apply_sources(inventory, coverage.get("sources") or {}, coverage.get("permissions") or {})
        except (AttributeError, TypeError, ValueError) as exc:
            raise SnapshotError(f"{Path(snapshot) / MANIFEST}: unreadable manifest: coverage: {exc}") from None
        if coverage.get("managementGroupRoleData"):
            inventory.tenant_scope_authorization = True
        inventory.captured_at = capture_time(manifest) or inventory.captured_at
    for note in (load.skipped + inventory.notes)[:5]:
        progress(f"skipped: {note}")
    if len(load.skipped) + len(inventory.notes) > 5:
        progress(f"... {len(load.skipped) + len(inventory.notes) - 5} more skipped rows")
    return Loaded(inventory, load=load)


# A JSON Lines file this large is read by several processes (a tenant's role assignments: most of a snapshot).
SHARED_FILE_BYTES = 64 * 1024 * 1024
# Pieces of it per process: they are taken as the processes go (`Claims`), so that all finish within a piece of
# each other whatever else each has to read.
PIECES_PER_PROCESS = 16


def _share_large_files(snapshot: str | Path, inventory: Inventory, processes: int,
                       splits: dict[Path, _SharedFile]) -> str:
    """Start the workers of the largest JSON Lines file of role assignments, into `splits` (so the caller stops
    them whatever fails). Only role assignments are read by workers: on another file they would hand every share
    back; and one file only, so that no more than `processes` run. Returns why it could not be shared, or ''."""
    sizes = {f: f.stat().st_size for f in snapshot_files(Path(snapshot))}
    large = sorted((f for f, size in sizes.items() if f.suffix.lower() in STREAMED_SUFFIXES
                    and size >= SHARED_FILE_BYTES), key=sizes.__getitem__, reverse=True)
    file = next((f for f in large if _starts_with_role_assignments(f)), None)
    if file is not None:
        try:
            splits[file] = _SharedFile(file, inventory, line_starts(file, PIECES_PER_PROCESS * processes),
                                       processes - 1)
        except OSError as exc:  # no folder for the workers' pieces, or no process to be had: one process reads it
            return f"{file.name} is read in one process: {exc.strerror or exc}"
    return ""


def _starts_with_role_assignments(file: Path) -> bool:
    try:
        with file.open("rb") as handle:
            first = next((line for line in handle if line.strip()), b"")
        row = orjson.loads(first.removeprefix(b"\xef\xbb\xbf"))
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(row, dict) and isinstance(row.get("type"), str) and row["type"].lower() == T_ROLE_ASSIGNMENT


class _SharedFile:
    """One large JSON Lines file cut into pieces at line starts, taken as the processes go (`Claims`): this
    process reads pieces from the start of the file when it gets there (after the files before it), forked
    workers read pieces from its end. A worker turns role assignment rows into what the inventory keeps of them
    (`RoleAssignmentShare`), which this process takes in at the place of the piece, in order. From the first piece
    no worker delivered (one with another row, a row the loader would skip, an error, or a worker that died),
    this process reads the file itself, so rows, messages and line numbers are what one process reading the file
    makes."""

    def __init__(self, file: Path, inventory: Inventory, offsets: list[int], workers: int) -> None:
        self.file, self.inventory, self.offsets = file, inventory, offsets
        # The workers leave each piece's share in a file here and send its name: through the pipe itself a share
        # would wait, and hold its worker up, until this process is between two pieces of its own.
        self.folder = Path(tempfile.mkdtemp(prefix="acr-audit-load-"))
        self.claims = Claims(len(offsets) - 1)
        self.workers: list[Forked] = []
        # piece -> its share and the role assignments made from it here (None: the run reads the piece itself)
        self.received: dict[int, tuple[RoleAssignmentShare, list] | None] = {}
        self.failures: list[str] = []  # workers that failed or died (their pieces are read here)
        try:
            for number in range(1, workers + 1):
                self.workers.append(Forked.start(partial(_read_pieces, file, offsets, self.claims, self.folder),
                                                 f"reading {file.name} (worker {number} of {workers})", sends=True))
        except BaseException:  # a fork failed: no worker is left behind (and the file is read in one process)
            self.stop()
            raise

    def head_lengths(self) -> Iterator[int]:
        while True:
            self._receive()  # between pieces: the workers' pieces so far, so that few are left for the end
            piece = self.claims.from_front()
            if piece is None:
                return
            yield self.offsets[piece + 1] - self.offsets[piece]

    def _receive(self, worker_ended: bool = False) -> None:
        for worker in self.workers:
            if worker_ended:
                try:
                    worker.result()
                except WorkerFailed as exc:  # died (out of memory, killed): its pieces are read here
                    self.failures.append(str(exc))
            for piece, left in worker.received():
                # A piece this process took too, at the same moment, is not read back (`stop` removes its file).
                share = _take_share(left) if left and piece >= self.claims.mine else None
                if share is None:  # read here
                    self.received[piece] = None
                    continue
                made = Inventory.role_assignments_of(share)
                share.assignments = []  # kept once: as made
                self.received[piece] = (share, made)

    def rest(self) -> tuple[Iterable[tuple[Any, Any]], dict[str, int]]:
        self._receive(worker_ended=True)
        self.stop()
        taken: dict[str, int] = {}
        for piece in range(self.claims.mine, len(self.offsets) - 1):
            received = self.received.pop(piece, None)
            if received is None:  # read here, from this piece to the end, in order
                return json_lines_range(self.file, self.offsets[piece], self.offsets[-1]), taken
            share, made = received
            self.inventory.absorb_role_assignments(share, made)
            taken[T_ROLE_ASSIGNMENT] = taken.get(T_ROLE_ASSIGNMENT, 0) + share.rows
        return (), taken

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []
        self.claims.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _take_share(path: str) -> RoleAssignmentShare | None:
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError):  # cannot be read back (the disk): the run reads the piece
        return None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _read_pieces(file: Path, offsets: list[int], claims: Claims, folder: Path, send: Callable[[Any], None]) -> None:
    """In a worker: pieces from the end of the file, each read by `_read_share` and handed over as soon as it is
    (its share left in a file in `folder`; '' when the run must read the piece itself)."""
    gc.disable()  # a short-lived process: nothing to collect
    while (piece := claims.from_back()) is not None:
        share = _read_share(file, offsets[piece], offsets[piece + 1])
        left = ""
        if share is not None:
            left = str(folder / f"piece-{piece}")
            with open(left, "wb") as handle:
                pickle.dump(share, handle, protocol=pickle.HIGHEST_PROTOCOL)
        send((piece, left))


def _read_share(file: Path, start: int, stop: int) -> RoleAssignmentShare | None:
    """In a worker: the role assignments of one range; None when the range holds anything else (a row of another
    type, a row the loader skips, unusable input), which the run's process then reads itself."""
    part, report = Inventory(), LoadReport()
    try:
        for row in unnumbered_rows_of_range(file, start, stop, report):
            if row["type"] != T_ROLE_ASSIGNMENT:
                return None
            part.add(row)
    except SnapshotError:
        return None
    return None if report.skipped or part.notes else part.role_assignment_share()


def collect_live(collector, progress: Progress, row_filter=None, beyond=None) -> Loaded:
    """Rows go straight from Resource Graph pages into the inventory (through `row_filter`, if given); then
    `beyond` (a BeyondResourceGraph) asks Microsoft Graph, Resource Manager and Container Insights what Resource
    Graph cannot show."""
    inventory = Inventory()

    def sink(query, rows: list[dict]) -> None:
        for row in row_filter(rows) if row_filter else rows:
            declared = row.get("type")
            if isinstance(declared, str) and declared.lower().startswith(ID_LESS_TYPES):
                inventory.add({**row, "type": declared.lower()})  # not Resource Graph rows: keep their columns
                continue
            normalised = normalise_row(row)
            if normalised.get("id") and normalised["type"]:
                inventory.add(normalised)

    progress(f"collecting from Resource Graph ({collector.scope.describe()})")
    coverage = collector.collect(sink)
    inventory.finish()
    inventory.gaps += list(coverage.gaps)
    inventory.tenant_scope_authorization = coverage.authorization_above_subscriptions
    progress(coverage.summary_line())
    for gap in coverage.gaps:
        progress(f"missing: {gap.query}: {gap.reason}")
    for note in coverage.partial:
        progress(f"partial: {note}")
    loaded = Loaded(inventory, coverage=coverage)
    if beyond is not None and coverage.subscriptions_seen:
        loaded.sources = beyond.collect(inventory, lambda name, rows: sink(None, rows), progress)
        inventory.finish()
    return loaded


@dataclass(frozen=True)
class FollowUps:
    """What to ask beyond Resource Graph, decided from the inventory."""

    groups: list[str]  # groups holding a pull-granting role over a registry, or named in a deny assignment
    app_ids: list[str]  # service-principal clusters' appIds
    deny_scopes: list[str]  # subscriptions holding registries
    workspaces: dict[str, list[str]]  # Container Insights workspace -> its clusters


def plan_follow_ups(inventory: Inventory) -> FollowUps:
    from auditors.rbac import RoleResolver

    resolver = RoleResolver(inventory)
    over_registries: set[str] = set()
    for registry in inventory.registries.values():
        over_registries.update(scope for scope, _ in inventory.ancestor_scopes(registry.id)[0])
    groups = {a.principal_id for scope in over_registries for a in inventory.group_assignments_by_scope.get(scope, ())
              if resolver.grants(a.role_guid, "LegacyRegistryPermissions") is not False
              or resolver.grants(a.role_guid, "AbacRepositoryPermissions")}
    for denies in inventory.deny_assignments_by_scope.values():
        for deny in denies:
            groups.update(deny.groups)
    app_ids = {c.service_principal_client_id.lower() for c in inventory.clusters.values()
               if c.identity_kind == "service-principal"}
    subscriptions = {r.subscription_id for r in inventory.registries.values() if r.subscription_id}
    workspaces: dict[str, list[str]] = {}
    for cluster in inventory.clusters.values():
        if cluster.insights_workspace:
            workspaces.setdefault(cluster.insights_workspace, []).append(cluster.id)
    deny_scopes = [f"/subscriptions/{subscription}" for subscription in sorted(subscriptions)]
    return FollowUps(sorted(groups - {""}), sorted(app_ids - {""}), deny_scopes, workspaces)


class BeyondResourceGraph:
    """Deny assignments (Resource Manager), then Microsoft Graph (groups, including those deny assignments name,
    and service principals), then Container Insights (observed pulls): each optional, each recorded in the
    coverage; a source that is not permitted leaves its verdicts Unknown with a message that says so."""

    def __init__(self, services, *, deny: bool = True, graph: bool = True, insights: bool = True) -> None:
        self.services, self.deny, self.graph, self.insights = services, deny, graph, insights

    def collect(self, inventory: Inventory, add_rows: Callable[[str, list[dict]], None],
                progress: Progress) -> dict[str, Any]:
        from azure.core.exceptions import ClientAuthenticationError

        sources: dict[str, Any] = {}
        plan = plan_follow_ups(inventory)
        steps = ((self.deny, "denyAssignments", self._deny), (self.graph, "microsoftGraph", self._graph),
                 (self.insights, "containerInsights", self._insights))
        for enabled, name, step in steps:
            if not enabled:
                continue
            try:
                sources[name] = step(inventory, plan_follow_ups(inventory) if name == "microsoftGraph" else plan,
                                     add_rows, progress)
            except ClientAuthenticationError as exc:  # this source's credential is refused: note it, go on
                reason = f"{name}: the credential was rejected: {str(exc).splitlines()[0][:300]}"
                progress(f"skipped: {reason}")
                sources[name] = {"skipped": reason}
                inventory.permissions[name] = False
        apply_sources(inventory, {n: c if isinstance(c, dict) else c.as_dict() for n, c in sources.items()}, {})
        return sources

    def _deny(self, inventory: Inventory, plan: FollowUps, add_rows, progress: Progress):
        coverage = self.services.deny_assignments().collect(plan.deny_scopes, lambda rows: add_rows("deny", rows))
        progress(coverage.summary_line())
        return coverage

    def _graph(self, inventory: Inventory, plan: FollowUps, add_rows, progress: Progress):
        coverage = self.services.graph().collect(plan.groups, plan.app_ids, add_rows)
        progress(coverage.summary_line())
        return coverage

    def _insights(self, inventory: Inventory, plan: FollowUps, add_rows, progress: Progress):
        from auditors.sources.container_insights import WorkspaceTarget

        targets = [WorkspaceTarget(workspace, "", tuple(clusters)) for workspace, clusters in plan.workspaces.items()]
        coverage = self.services.container_insights().collect(targets, add_rows)
        progress(coverage.summary_line())
        return coverage


def apply_sources(inventory: Inventory, sources: dict[str, dict], permissions: dict) -> None:
    """What a coverage record says about the sources beyond Resource Graph, onto the inventory: permissions,
    whether deny assignments were listed, when observed pulls were captured, and their gaps."""
    inventory.permissions.update({k: v for k, v in permissions.items() if isinstance(k, str)})
    graph = sources.get("microsoftGraph") or {}
    inventory.permissions.update(graph.get("permissions") or {})
    for reason in (graph.get("gaps") or []) + ([graph["skipped"]] if graph.get("skipped") else []):
        inventory.gaps.append(Gap("microsoft_graph", (T_GRAPH_GROUP, T_GRAPH_SERVICE_PRINCIPAL, T_GRAPH_APPLICATION),
                                  frozenset(), str(reason)))
    deny = sources.get("denyAssignments") or {}
    if deny and "skipped" not in deny:
        inventory.deny_listed = True
        gaps = [Gap.from_dict(g) for g in deny.get("gaps") or []]
        forbidden = bool(gaps) and all("denyAssignments/read" in g.reason for g in gaps) and not deny.get("rows")
        inventory.permissions.setdefault("denyAssignments", not forbidden)
        inventory.gaps += gaps
    insights = sources.get("containerInsights") or {}
    if insights and "skipped" not in insights:
        inventory.permissions.setdefault("containerInsights", True)
        inventory.captured_at = insights.get("capturedAt") or inventory.captured_at
        inventory.gaps += [Gap.from_dict(g) for g in insights.get("gaps") or []]


class RowRecorder:
    """Gzip JSON Lines copy of every row the run evaluates, for the evidence archive (streamed)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "snapshot.jsonl.gz"
        self._handle = gzip.open(self.path, "wb", compresslevel=6)  # noqa: SIM115  (closed by close())

    def rows(self, rows: Iterable[dict]) -> Iterator[dict]:
        for row in rows:
            self._handle.write(orjson.dumps(row, default=str) + b"\n")
            yield row

    def close(self) -> None:
        self._handle.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# Files of a captured snapshot for the sources beyond Resource Graph.
FOLLOW_UP_FILES = {"deny": "deny_assignments", "groups": "microsoft_graph", "serviceprincipals": "microsoft_graph",
                   "applications": "microsoft_graph", "containerinsights/kubeevents": "container_insights",
                   "containerinsights/containerinventory": "container_insights"}


def capture_snapshot(collector, out_dir: str | Path, progress: Progress | None = None, beyond=None) -> dict:
    """Collect live and write one JSON Lines file per query (and per source beyond Resource Graph) plus a
    manifest with hashes and coverage, for offline replay."""
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    handles: dict[str, Any] = {}
    counts: dict[str, int] = {}
    planning = Inventory()  # what the follow-up sources are asked is decided from the rows themselves

    def write(name: str, rows: list[dict]) -> None:
        handle = handles.get(name)
        if handle is None:
            handle = handles[name] = (out / f"{name}.jsonl").open("wb")
            counts[name] = 0
        handle.write(b"".join(orjson.dumps(row, default=str) + b"\n" for row in rows))
        counts[name] += len(rows)

    def sink(query, rows: list[dict]) -> None:
        write(query.name, rows)
        for row in rows:
            normalised = normalise_row(row)
            if normalised.get("id") and normalised["type"]:
                planning.add(normalised)

    started = _now()
    say(f"collecting from Resource Graph ({collector.scope.describe()}) into {out}")
    sources: dict[str, Any] = {}
    try:
        coverage = collector.collect(sink)
        planning.finish()
        planning.tenant_scope_authorization = coverage.authorization_above_subscriptions
        if beyond is not None and coverage.subscriptions_seen:
            def add(name: str, rows: list[dict]) -> None:
                if rows:
                    write(FOLLOW_UP_FILES.get(name) or FOLLOW_UP_FILES.get(str(rows[0].get("type")), name), rows)
                for row in rows:
                    declared = str(row.get("type", "")).lower()
                    planning.add({**row, "type": declared} if declared.startswith(ID_LESS_TYPES) else
                                 normalise_row(row))

            sources = beyond.collect(planning, add, say)
    finally:
        for handle in handles.values():
            handle.close()
    from auditors.sources.kql import collector_queries

    files = []
    for name in sorted(counts):
        path = out / f"{name}.jsonl"
        files.append({"path": path.name, "rows": counts[name], "bytes": path.stat().st_size,
                      "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    manifest = {
        "tool": "acr-pull-auditor", "toolVersion": __version__, "kind": "resource-graph-snapshot",
        "startedAt": started, "finishedAt": _now(),
        "capturedAt": getattr(sources.get("containerInsights"), "as_dict", dict)().get("capturedAt") or started,
        "scope": collector.scope.describe(),
        "endpoint": collector.endpoint,
        "queries": {name: {"table": q.table, "text": q.text, "rows": counts.get(name, 0)}
                    for name, q in collector_queries().items()},
        "files": files, "coverage": Loaded(planning, coverage=coverage, sources=sources).coverage_dict(),
    }
    (out / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    say(coverage.summary_line())
    return manifest
