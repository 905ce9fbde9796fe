"""`python -m auditors emulate SERVICE …` (also `python -m emulators SERVICE …`): one emulator in the foreground.

Services are discovered: every module of this package that defines `SERVICE`, `HELP`, `add_arguments(parser)`
and `build(args)`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import pkgutil
import signal
import sys
import threading
from types import ModuleType

import emulators


def services() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(emulators.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"emulators.{info.name}")
        if all(hasattr(module, name) for name in ("SERVICE", "HELP", "add_arguments", "build")):
            found[module.SERVICE] = module
    return dict(sorted(found.items()))


def parser(prog: str = "python -m auditors emulate") -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=prog, description="Local HTTPS emulators of Azure services on 127.0.0.1.")
    commands = top.add_subparsers(dest="service", required=True)
    for name, module in services().items():
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        sub.add_argument("--port", type=int, default=0, help="port (default: any free port, printed)")
        sub.add_argument("--ca-out", metavar="FILE", help="write the emulator's CA certificate (PEM) here")
        module.add_arguments(sub)
    return top


def main(argv: list[str] | None = None, prog: str = "python -m auditors emulate") -> int:
    args = parser(prog).parse_args(argv)
    try:
        emulator = services()[args.service].build(args)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        emulator.start()
    except OSError as exc:
        print(f"error: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        print(f"{args.service} emulator on {emulator.endpoint} (CA: {emulator.ca_path or 'not written'}); "
              "Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    finally:
        emulator.stop()
    print(json.dumps({"emulator": args.service, **emulator.stats.as_dict()}), flush=True)
    return 0
