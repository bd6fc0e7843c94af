"""`management-agent fetch-model URI DEST`: download a model into a directory.

This is what the storage-initializer init container of a prediction pod and
the build-context init container of a Kaniko job run. Credentials come from a
mounted secret (`--credentials-dir`, one file per key), the environment
(AWS_*, GOOGLE_APPLICATION_CREDENTIALS, MLFLOW_*) or the pod's identity (IRSA,
Workload Identity). Prints the model digest on stdout. Exit codes: 0 fetched,
1 fetch error (message on stderr, never a secret), 2 bad configuration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.errors import AgentError, ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", nargs="?", help="model URI: s3://, gs://, http(s)://, oci://, "
                        "file://, pvc://, models:/ (or --uri-from-env)")
    parser.add_argument("dest", type=Path, help="directory to create or fill")
    parser.add_argument("--uri-from-env", metavar="VAR",
                        help="read the URI from this environment variable (a pod reads it from "
                        "a Secret: a URI may carry user info or a signed query)")
    parser.add_argument("--credentials-dir", type=Path, metavar="DIR",
                        help="a mounted secret: one file per key (any supported format)")
    parser.add_argument("--annotation", dest="annotations", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a secret annotation, e.g. machinelearning.seldon.io/s3-endpoint=h:p")
    parser.add_argument("--digest", metavar="sha256:HEX",
                        help="fail unless the model has this digest")
    parser.add_argument("--ca-bundle", type=Path, metavar="PATH",
                        help="PEM file of extra CAs for the download")
    parser.add_argument("--no-unpack", action="store_true",
                        help="keep a .tar/.tgz/.zip model as the archive file")
    parser.add_argument("-c", "--config", type=Path, help="agent YAML config (artifacts section)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a setting, e.g. "
                        "--set artifacts.s3_endpoint_url=http://minio:9000")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        default="INFO")


def main(args: argparse.Namespace) -> int:
    import logging

    from agent.artifacts import fetch_model
    from agent.artifacts.credentials import read_credentials_dir, register_credentials
    from agent.config import LoggingSettings, load_settings
    from agent.logs import configure_logging, redact_uri, scrub

    configure_logging(LoggingSettings(level=args.log_level))  # scrubs registered secrets
    logging.getLogger("google").setLevel(logging.WARNING)
    try:
        uri = _uri(args)
        settings = load_settings(args.config, overrides=list(args.overrides)).artifacts
        if args.ca_bundle is not None:
            if not args.ca_bundle.is_file():
                raise ConfigError(f"--ca-bundle {args.ca_bundle} is not a readable file")
            settings = settings.model_copy(update={"ca_bundle": args.ca_bundle})
        annotations: dict[str, str] = {}
        for item in args.annotations:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--annotation {item!r}: expected KEY=VALUE")
            annotations[key] = value
        credentials = (read_credentials_dir(args.credentials_dir)
                       if args.credentials_dir is not None else None)
        register_credentials(credentials)
        digest = fetch_model(
            uri, args.dest, settings, credentials, expected_digest=args.digest,
            annotations=annotations or None, unpack=False if args.no_unpack else None,
        )
    except ConfigError as exc:
        print(f"management-agent fetch-model: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:
        print(scrub(f"management-agent fetch-model: error: {exc}"), file=sys.stderr)
        return 1
    except OSError as exc:
        print(scrub(f"management-agent fetch-model: error: {redact_uri(uri)}: {exc}"),
              file=sys.stderr)
        return 1
    print(digest)
    return 0


def _uri(args: argparse.Namespace) -> str:
    """The URI from the argument or the environment variable; exactly one of them."""
    import os

    if (args.uri is None) == (args.uri_from_env is None):
        raise ConfigError("give the model URI either as an argument or with --uri-from-env VAR")
    if args.uri is not None:
        return str(args.uri)
    uri = os.environ.get(args.uri_from_env, "").strip()
    if not uri:
        raise ConfigError(f"--uri-from-env {args.uri_from_env}: the variable is empty or unset")
    return uri
