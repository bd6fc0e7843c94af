"""How the CLI prints one event: what its details measure, and no control codes off a terminal."""

from __future__ import annotations

import io

from agent.controlplane.server.progress import Printer, event_line, result_line


def test_transfer_and_rollout_details_are_shown() -> None:
    pushed = event_line({"time": "2026-12-05T02:14:03Z", "level": "info", "message": "pushing",
                         "details": {"bytes_processed": 512 << 20, "bytes_total": 1024 << 20}})
    assert pushed == "02:14:03  INFO     pushing  [50%, 512.0 MiB of 1.0 GiB]"
    layer = event_line({"message": "model layer 50% (512 MiB of 1024 MiB)", "level": "info",
                        "details": {"bytes_processed": 512 << 20, "bytes_total": 1024 << 20}})
    assert "50%" not in layer.split("[")[1]  # the message says it already
    rollout = event_line({"message": "rollout: 1/2 updated", "level": "warning",
                          "details": {"ready_replicas": 1, "replicas": 2}})
    assert rollout.endswith("WARNING  rollout: 1/2 updated  [pods ready 1/2]")


def test_result_line_names_outcome_url_and_message() -> None:
    line = result_line({"type": "deployment_start", "deployment_id": "d1", "result": {
        "status": "failing", "state": "errored", "data": {"message": "image not found"}}})
    assert line == "deployment_start d1: failing/errored - image not found"


def test_status_line_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    pipe, tty = io.StringIO(), Tty()
    for out in (pipe, tty):
        printer = Printer(out)
        printer.status("waiting 1s")
        printer.line("event")
        printer.done()
    assert pipe.getvalue() == "event\n"
    assert tty.getvalue() == "\r\x1b[Kwaiting 1s\r\x1b[Kevent\n"
