"""kubenet: Kubernetes Services built for real on your own Linux kernel."""

from .tiers import check as doctor
from .errors import KubenetError
from .lab import ExecResult, Lab

__all__ = ["Lab", "ExecResult", "KubenetError", "doctor"]
__version__ = "0.1.0"
