"""What every benchmark records about where it ran."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def git_commit(root: Path = ROOT) -> str | None:
    """HEAD's commit id, read from .git without running git."""
    gitdir = root / ".git"
    try:
        if gitdir.is_file():  # a worktree: "gitdir: <path>"
            gitdir = Path(gitdir.read_text().split(":", 1)[1].strip())
        head = (gitdir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        common = gitdir
        if (gitdir / "commondir").exists():
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        for base in (gitdir, common):
            if (base / ref).exists():
                return (base / ref).read_text().strip()
        for base in (gitdir, common):
            packed = base / "packed-refs"
            if packed.exists():
                for line in packed.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[1] == ref:
                        return parts[0]
    except OSError:
        pass
    return None


def stop_on_termination_signals() -> None:
    """SIGTERM and SIGHUP end a benchmark as Ctrl-C does, so its cleanup
    (brokers, workers) runs."""
    import contextlib
    import signal

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    with contextlib.suppress(AttributeError, ValueError):
        signal.signal(signal.SIGHUP, terminate)
