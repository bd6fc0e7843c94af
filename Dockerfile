# The management-agent image: the agent and its dependencies on a Python 3.11 base.
#
# The build context is build/agent-image/, prepared by tools/build-agent-image: the
# agent wheel and its dependencies installed into site/ (pip --target) plus the
# `management-agent` launcher. The image therefore needs no pip, no compiler and no
# network at build time: any Debian bookworm base with python3.11 works, e.g. the
# project's harness base image (debootstrap minbase + python3).
#
#   tools/build-agent-image --push REGISTRY/management-agent:TAG   # your registry (README)
#   tools/build-agent-image                      # harness base -> harness registry (tests)
#   tools/build-agent-image --context-only && \
#     docker build -f Dockerfile -t management-agent:dev build/agent-image
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG VERSION=dev
LABEL org.opencontainers.image.title="management-agent" \
      org.opencontainers.image.description="Deploys ML models to Kubernetes on orders from a control plane" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# Read-only root filesystem in the chart: no bytecode writes, HOME on the /tmp emptyDir.
ENV PYTHONPATH=/opt/management-agent/site \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

COPY site/ /opt/management-agent/site/
COPY management-agent /usr/local/bin/management-agent

# A numeric non-root user (no passwd entry needed): runAsNonRoot can verify it,
# OpenShift's restricted SCC may replace it with a UID of its range.
USER 10001:0
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/management-agent"]
CMD ["run"]
