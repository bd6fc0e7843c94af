"""The reference control plane: FastAPI + SQLite, protocol v1 (docs/control-plane-protocol.md).

`db`, `leases` and `store` persist (schema; action queue with leases; environments and
deployments), `app` builds the ASGI app (auth, errors), `agent_api` and
`admin_api` hold the routes, `cli` is `management-agent control-plane ...`,
`client` the admin API client the CLI and tests use.
"""
