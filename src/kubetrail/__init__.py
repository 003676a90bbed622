"""kubetrail: collect Kubernetes audit events, keep them safely, answer who did what."""

__version__ = "0.1.0"
