"""A git working copy for GitOps output: one commit per action, pushed without force.

The filesystem plugin writes rendered manifests into the working copy and
calls `commit()`. With a remote configured, the commit is pushed; a rejected
push (someone else pushed first) is answered by fetching and rebasing our
commit on top, or, when the rebase conflicts, by resetting to the remote
branch and letting the caller re-render, then pushing again. Force-pushing
is never done. Credentials (a token for https remotes, an SSH key) reach git
through the environment of the git process only, never its arguments, so
they cannot show up in `ps`, logs or error messages.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from agent.errors import PluginError
from agent.logs import register_secret, scrub

log = logging.getLogger(__name__)

PUSH_ATTEMPTS = 4
_USERINFO = re.compile(r"(https?://)[^/@\s]+@")  # credentials in an http(s) URL
_ASKPASS = "#!/bin/sh\ncase \"$1\" in Username*) echo \"${GIT_USERNAME:-x-access-token}\";;" \
           " *) echo \"$GIT_TOKEN\";; esac\n"


class GitRepository:
    """The working copy at `root`, optionally tracking `remote`/`branch`."""

    def __init__(self, root: Path, branch: str, remote: str | None, author: tuple[str, str],
                 token: str | None = None, ssh_key: Path | None = None) -> None:
        self.root = root
        self.branch = branch
        self.remote = remote
        # for messages: a token written into the remote URL (https://user:token@host/...)
        # must not reach an exception, a result or a log line
        self.remote_shown = _USERINFO.sub(r"\1***@", remote) if remote else None
        self._env = {**os.environ, "GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1],
                     "GIT_COMMITTER_NAME": author[0], "GIT_COMMITTER_EMAIL": author[1],
                     "GIT_TERMINAL_PROMPT": "0"}
        if token:
            register_secret(token)
            askpass = Path(tempfile.mkdtemp(prefix="mgmt-agent-git-")) / "askpass"
            askpass.write_text(_ASKPASS)
            askpass.chmod(stat.S_IRWXU)
            self._env.update(GIT_ASKPASS=str(askpass), GIT_TOKEN=token)
        if ssh_key:
            self._env["GIT_SSH_COMMAND"] = (
                f"ssh -i {shlex.quote(str(ssh_key))} -o IdentitiesOnly=yes "
                "-o StrictHostKeyChecking=accept-new")
        self._prepare()

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["git", "-C", str(self.root), *args], capture_output=True,
                              text=True, env=self._env, check=False)
        if check and done.returncode != 0:
            raise PluginError(f"git {args[0]} failed in {self.root}: "
                              f"{self._clean(done.stderr.strip() or done.stdout.strip())}")
        return done

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        lock = self.root / ".git" / "index.lock"
        if lock.exists():  # left by a process killed mid-commit; we are the only writer
            log.warning("removing stale %s", lock)
            lock.unlink()
        if not (self.root / ".git").exists():
            self.run("init", "-q", "-b", self.branch)
        if self.remote is None:
            return
        remotes = self.run("remote").stdout.split()
        if "origin" not in remotes:
            self.run("remote", "add", "origin", self.remote)
        else:
            self.run("remote", "set-url", "origin", self.remote)
        if self._fetch() and not self.run("rev-parse", "--verify", "-q", "HEAD",
                                           check=False).stdout:
            self.run("reset", "-q", "--hard", f"origin/{self.branch}")

    def _fetch(self) -> bool:
        """Fetch the branch; False when the remote does not have it yet (a new repository)."""
        done = self.run("fetch", "-q", "origin", self.branch, check=False)
        if done.returncode == 0:
            return True
        if "couldn't find remote ref" in done.stderr.lower():
            return False
        raise PluginError(f"git fetch from {self.remote_shown} failed: "
                          f"{self._clean(done.stderr.strip())}")

    def _clean(self, text: str) -> str:
        """git's output without registered secrets or credentials written into URLs."""
        return _USERINFO.sub(r"\1***@", scrub(text))

    def head(self) -> str | None:
        done = self.run("rev-parse", "--verify", "-q", "HEAD", check=False)
        return done.stdout.strip() or None

    def commit(self, message: str, rewrite: Callable[[], None]) -> str | None:
        """Commit what `rewrite()` wrote (and push it); the new commit id, None if no change.

        `rewrite` is called again after a conflicting remote change was taken over,
        so our rendering lands on top of the remote state.
        """
        rewrite()
        committed = self._commit_all(message)
        if self.remote is None or (committed is None and not self._ahead()):
            return committed
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            pushed = self.run("push", "-q", "origin", f"HEAD:refs/heads/{self.branch}",
                              check=False)
            if pushed.returncode == 0:
                return self.head()
            if "rejected" not in pushed.stderr and "fetch first" not in pushed.stderr:
                raise PluginError(f"git push to {self.remote_shown} failed: "
                                  f"{self._clean(pushed.stderr.strip())}")
            log.info("push rejected (attempt %d): the remote moved; rebasing", attempt)
            self._fetch()
            rebased = self.run("rebase", "-q", f"origin/{self.branch}", check=False)
            if rebased.returncode != 0:
                self.run("rebase", "--abort", check=False)
                self.run("reset", "-q", "--hard", f"origin/{self.branch}")
                rewrite()
                self._commit_all(message)
        raise PluginError(f"git push to {self.remote_shown} kept being rejected after "
                          f"{PUSH_ATTEMPTS} attempts; will retry on the next delivery")

    def _commit_all(self, message: str) -> str | None:
        self.run("add", "-A")
        if not self.run("status", "--porcelain").stdout.strip():
            return None
        self.run("commit", "-q", "-m", message)
        return self.head()

    def _ahead(self) -> bool:
        """True when local commits have not reached the remote (a push failed earlier)."""
        done = self.run("rev-list", "--count", f"origin/{self.branch}..HEAD", check=False)
        if done.returncode != 0:
            return self.head() is not None
        return done.stdout.strip() not in ("", "0")
