"""Local HTTPS emulators that speak Azure's wire protocols, for tests and offline demos.

Not part of the deployed Functions app (`.funcignore` leaves this package out); install with
`pip install 'acr-pull-auditor[emulators]'`. Each module that defines `SERVICE`, `HELP`, `add_arguments`
and `build` is a service of `python -m auditors emulate SERVICE` (found by `emulators.cli`, not listed).
"""
