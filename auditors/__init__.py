"""acr-pull-auditor: can every AKS cluster pull from the registries it uses, and if not, why."""

__version__ = "0.1.0"
