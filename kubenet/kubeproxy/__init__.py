"""Pure re-implementations of what kube-proxy writes to the kernel (no side effects here)."""
