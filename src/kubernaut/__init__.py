"""kubernaut-py: the remediation execution layer of Kubernaut for Kubernetes."""

__version__ = "0.1.0"
