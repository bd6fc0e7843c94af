"""Generate the Helm chart's agent config from the agent's own settings (`tools/gen-chart`).

The pydantic `Settings` are the one source: each setting's values key, its JSON schema
(type, bounds, enum, description with unit) and the values -> config-file mapping the
chart's templates apply are derived from it; `mapping.py` holds only the exceptions.
The chart README is generated from the `# --` comments of values.yaml.
"""
