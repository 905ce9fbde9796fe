"""What the benchmarks share: child processes that report JSON, memory readings, medians and target lines.

Every benchmark prints each figure beside its target with PASS or MISS. Figures that compare two things are
measured in the same run (alternating when repeated), so the ratios hold when the machine's speed drifts.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    """This process's resident memory now (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE / 2**20


def peak_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory of this process (or RUSAGE_CHILDREN: the largest finished child); Linux reports KiB."""
    return resource.getrusage(who).ru_maxrss / 1024


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """`median` or `median (min-max, n runs)`."""
    if len(values) <= 1:
        return fmt.format(median(values))
    return f"{fmt.format(median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))}, {len(values)} runs)"


def run_child(script: Path, args: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `python SCRIPT --child ARGS...` in a fresh interpreter; its last stdout line is a JSON report."""
    done = subprocess.run([sys.executable, str(script), "--child", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"child {args} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])


def report_child(result: dict) -> None:
    """A child's report: one JSON line on stdout."""
    print(json.dumps(result), flush=True)


class Targets:
    """Lines of `figure  value  target  PASS|MISS`, and a tally."""

    def __init__(self) -> None:
        self.missed: list[str] = []
        self.passed = 0

    def line(self, label: str, value: str, target: str, ok: bool | None) -> None:
        verdict = "n/a" if ok is None else ("PASS" if ok else "MISS")
        if ok is False:
            self.missed.append(label)
        elif ok:
            self.passed += 1
        print(f"  {label:<40} {value:<42} target {target:<9} {verdict}")

    def close(self) -> None:
        print(f"\ntargets: {self.passed} PASS, {len(self.missed)} MISS" +
              (f" ({', '.join(self.missed)})" if self.missed else ""))


def header(title: str) -> None:
    print(f"\n== {title} ==")


class EmulatorProcess:
    """`python -m auditors emulate SERVICE ...` as a child process; its endpoint is read from its first line."""

    def __init__(self, service: str, *args: str, ca_out: Path) -> None:
        """Starts it; `ready()` waits for its first line (a large snapshot takes a while to load)."""
        self.service, self.ca = service, ca_out
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.began = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "auditors", "emulate", service, "--port", "0", "--ca-out", str(ca_out), *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self._errors, text=True)
        self.endpoint = ""
        self.startup_seconds = 0.0

    def ready(self) -> EmulatorProcess:
        if not self.endpoint:
            first = self.process.stdout.readline()
            if " on https://" not in first:
                self.process.kill()
                self._errors.seek(0)
                raise RuntimeError(f"{self.service} emulator did not start: {first}"
                                   f"{self._errors.read()[-2000:].decode(errors='replace')}")
            self.endpoint = first.split(" on ", 1)[1].split()[0]
            self.startup_seconds = time.monotonic() - self.began
        return self

    def stats(self) -> dict:
        return get_stats(self.endpoint, self.ca)

    def stop(self) -> dict:
        """SIGTERM; the emulator prints its counters as its last line."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        self._errors.close()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}

    def peak_mib(self) -> float:
        """Resident peak of the emulator process while it runs (VmHWM)."""
        try:
            with open(f"/proc/{self.process.pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")


def get_stats(endpoint: str, ca: Path | str) -> dict:
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(f"{endpoint}/stats", context=context, timeout=30) as answer:
        return json.loads(answer.read())


_MASKS = (
    (re.compile(r"'[^']*'"), "'…'"),
    (re.compile(r"`[^`]*`"), "`…`"),
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<guid>"),
    (re.compile(r"/subscriptions/\S+"), "<id>"),
    (re.compile(r"\b\d+(\.\d+){3}\b"), "<ip>"),
    (re.compile(r"\b\d[\d,]*\b"), "<n>"),
)


def reason_prefix(message: str, words: int = 13) -> str:
    """A message's first words with names, ids and numbers masked, so one cause groups as one reason."""
    for pattern, mask in _MASKS:
        message = pattern.sub(mask, message)
    return " ".join(message.split()[:words])


def unknown_reasons(findings: Path, rule: str = "AKS-ACR-001") -> Counter:
    import orjson

    rule_key, unknown_key = f'"RuleId":"{rule}"'.encode(), b'"Status":"Unknown"'
    reasons: Counter = Counter()
    with findings.open("rb") as handle:
        for line in handle:
            if rule_key in line and unknown_key in line:
                finding = orjson.loads(line)
                if finding.get("RuleId") == rule and finding.get("Status") == "Unknown":
                    reasons[reason_prefix(finding.get("Message", ""))] += 1
    return reasons


def scaled(args, divisor: int) -> dict[str, int]:
    return {name: max(1, round(getattr(args, name) / divisor))
            for name in ("clusters", "registries", "role_assignments", "subscriptions")}


def make_estate(work: Path, sizes: dict[str, int], seed: int) -> Path:
    from synth_estate import generate

    estate = work / f"estate-{sizes['clusters']}c-{sizes['role_assignments']}ra"
    if not (estate / "manifest.json").exists():
        began = time.perf_counter()
        counts = generate(estate, seed=seed, **sizes)
        print(f"generated {sum(counts.values()):,} rows ({', '.join(f'{k} {v:,}' for k, v in sizes.items())}) in "
              f"{time.perf_counter() - began:.1f}s -> {estate}", flush=True)
    return estate
