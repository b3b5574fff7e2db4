"""Main-text extraction from HTML, each page in a worker process that is killed when it overruns.

A time limit inside the reading process cannot stop every runaway extraction: a signal alarm is only
handled between Python bytecodes, so a parser looping in C (resiliparse takes 9 s on 20,000 nested
``<div>``s, trafilatura 18 s on 100,000 paragraphs; both measured) would hold the whole task. So pages
go to a child process (this module run as a script) over a pipe, one at a time; when the answer
is not back within the time limit the child is killed (SIGKILL), the page is reported as timed out,
and the next page starts a fresh child. A child that dies (a crash, the OOM killer: its
``oom_score_adj`` is raised so it goes first) loses only its page. The child also dies with its parent.

Extractors:
  ``resiliparse``: ``extract_plain_text(main_content=True)``, without alt texts, bullets or comments;
  ``trafilatura``: ``extract(favor_precision=True, include_comments=False, deduplicate=False)``;
  deduplication stays off because its cache spans pages, which would make a page's text depend on the
  pages read before it in the same process (and so on retries and task order).
"""

from __future__ import annotations

import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

EXTRACTORS = ("resiliparse", "trafilatura")
#: Seconds a new worker may take to import its extractor and answer (not counted against any page).
START_TIMEOUT_S = 120.0
_LEN = struct.Struct(">I")
_MAX_MESSAGE = (1 << 32) - 1


class ExtractionFailed(Exception):
    """The extractor raised, overran its time, or its process died; ``str()`` says which."""


def extract_text(html: str, extractor: str) -> str:
    """Main text of one page, in this process (the worker's body; tests and benchmarks call it too)."""
    if extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        text = extract_plain_text(html, main_content=True, alt_texts=False, list_bullets=False, comments=False)
    elif extractor == "trafilatura":
        import trafilatura

        text = trafilatura.extract(html, favor_precision=True, include_comments=False, deduplicate=False) or ""
    else:
        text = _resolve(extractor)(html)
    return text.strip()


def _resolve(name: str) -> Callable[[str], str]:
    """``module:function``: an extractor given by import path (tests use this for pathological ones)."""
    import importlib

    module, sep, func = name.partition(":")
    if not sep:
        raise ValueError(f"unknown extractor {name!r}; expected one of {EXTRACTORS} or module:function")
    return getattr(importlib.import_module(module), func)


class SandboxedExtractor:
    """Extracts pages in a worker process, each within ``timeout_s`` seconds. Use as a context manager."""

    def __init__(self, extractor: str, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.extractor = extractor
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0  # worker processes started (the first, and one after each kill or death)

    def __enter__(self) -> SandboxedExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def extract(self, html: str) -> str:
        """Main text of ``html``; raises :class:`ExtractionFailed` naming the cause."""
        proc = self._worker()
        data = html.encode("utf-8", "surrogatepass")
        if len(data) > _MAX_MESSAGE:
            raise ExtractionFailed(f"page of {len(data)} bytes is too large to extract")
        deadline = time.monotonic() + self.timeout_s
        try:
            _write(proc.stdin, _LEN.pack(len(data)) + data)  # type: ignore[arg-type]
            status, body = _read_message(proc.stdout, deadline)  # type: ignore[arg-type]
        except TimeoutError:
            self._kill()
            raise ExtractionFailed(f"extraction timed out after {self.timeout_s:g} s; its process was killed") \
                from None
        except (OSError, EOFError):
            code = self._kill()
            raise ExtractionFailed(f"the extractor process died ({_exit_reason(code)})") from None
        text = body.decode("utf-8", "surrogatepass")
        if status == b"e":
            raise ExtractionFailed(f"extractor error: {text}")
        return text

    def close(self) -> None:
        """Stop the worker: closing its input ends it; kill it if it does not go at once."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _worker(self) -> subprocess.Popen[bytes]:
        if self.proc is not None:
            return self.proc
        root = str(Path(__file__).resolve().parents[2])  # a module:function extractor imports from this checkout
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        # This file run as a script, not ``-m curation.io.extract``: importing the curation package would
        # add 0.4 s to every start (and a start follows every kill). run_path leaves sys.path alone, so no
        # sibling module can shadow a standard one.
        code = f"import runpy; runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')"
        proc = subprocess.Popen([sys.executable, "-c", code, self.extractor],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.proc = proc
        self.starts += 1
        try:
            status, body = _read_message(proc.stdout, time.monotonic() + START_TIMEOUT_S)  # type: ignore[arg-type]
        except (TimeoutError, OSError, EOFError):
            code = self._kill()
            raise RuntimeError(f"the {self.extractor} extraction worker did not start "
                               f"({_exit_reason(code)})") from None
        if status != b"r":
            self._kill()
            raise RuntimeError(f"the {self.extractor} extraction worker failed to start: "
                               f"{body.decode(errors='replace')}")
        return proc

    def _kill(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        proc.kill()
        code = proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()  # type: ignore[union-attr]
            except OSError:
                pass
        return code


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _write(pipe: IO[bytes], data: bytes) -> None:
    pipe.write(data)
    pipe.flush()


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    parts: list[bytes] = []
    while n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        part = os.read(fd, min(n, 1 << 20))
        if not part:
            raise EOFError
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def _read_message(pipe: IO[bytes], deadline: float | None) -> tuple[bytes, bytes]:
    """One ``status byte + length + body`` message; raw fd reads so that select() sees every byte."""
    fd = pipe.fileno()
    head = _read_exact(fd, 1 + _LEN.size, deadline)
    return head[:1], _read_exact(fd, _LEN.unpack(head[1:])[0], deadline)


def _serve(extractor: str) -> None:
    """The worker: answers each page with ``o`` (text) or ``e`` (the error), until its input closes."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a library printing to stdout must not corrupt the protocol
    _die_with_parent()
    try:
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as fh:
            fh.write("1000\n")  # under memory pressure the kernel kills this worker, not the reader
    except OSError:
        pass

    def send(status: bytes, body: str) -> None:
        data = body.encode("utf-8", "surrogatepass")
        out.write(status + _LEN.pack(len(data)) + data)
        out.flush()

    try:
        extract_text("<html><body><p>warm up</p></body></html>", extractor)  # imports the extractor once
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the task
        send(b"f", f"{type(exc).__name__}: {exc}")
        return
    send(b"r", "")
    stdin = sys.stdin.buffer.fileno()
    while True:
        try:
            head = _read_exact(stdin, _LEN.size, None)
        except EOFError:
            return
        html = _read_exact(stdin, _LEN.unpack(head)[0], None).decode("utf-8", "surrogatepass")
        try:
            send(b"o", extract_text(html, extractor))
        except Exception as exc:  # noqa: BLE001 - one page's failure is reported, the worker goes on
            send(b"e", f"{type(exc).__name__}: {str(exc)[:500]}")


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so a runaway page cannot outlive the run."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    _serve(sys.argv[1])
