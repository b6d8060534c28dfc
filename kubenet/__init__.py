"""kubenet: Kubernetes Services built for real on your own Linux kernel."""

from .errors import KubenetError
from .lab import ExecResult, Lab
from .tiers import check as doctor

__all__ = ["Lab", "ExecResult", "KubenetError", "doctor"]
__version__ = "0.1.0"
