"""Kubernetes API stand-in: `apiserver/` (the server) and `controllers/` (its clients).

Start it with `python -m tools.kube serve ...` (see docs/kube-standin.md)."""
