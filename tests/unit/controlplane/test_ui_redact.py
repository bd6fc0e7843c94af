"""What the dashboard shows of a spec and of event texts: no env value, no URI credential."""

from __future__ import annotations

from agent.controlplane.server.ui.redact import HIDDEN, redact_spec, redact_text


def test_env_values_hidden_uris_stripped_of_credentials() -> None:
    spec = {"id": "d1", "env": {"DB_PASSWORD": "hunter2", "MODE": "fast"},
            "model": {"id": "m1", "uri": "https://alice:pw@host/m.tgz?X-Amz-Signature=abc123"},
            "config": {"mirror": ["s3://key:secret@bucket/x"]}}
    shown = redact_spec(spec)
    text = repr(shown)
    assert shown["env"] == {"DB_PASSWORD": HIDDEN, "MODE": HIDDEN}
    for secret in ("hunter2", "alice", ":pw@", "abc123", "key:secret"):
        assert secret not in text
    assert shown["model"]["uri"].startswith("https://host/m.tgz?X-Amz-Signature=")
    assert spec["env"]["DB_PASSWORD"] == "hunter2"  # the stored spec is left alone


def test_uris_inside_event_messages_are_redacted() -> None:
    message = "fetching https://u:p@h/x?sig=zzz then s3://models/m1/ done"
    assert redact_text(message) == ("fetching https://h/x?sig=<redacted> then s3://models/m1/ "
                                    "done")
