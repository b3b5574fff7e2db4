"""A moto S3 server on loopback for tests of object-store runs (never a cloud endpoint).

Import the ``s3`` fixture into a test module (``from tests.curation.moto_s3 import s3``); it is
module-scoped, so each module that uses it starts its own server. The sample corpus is uploaded to
``s3://corpus/sample/`` and an empty ``runs`` bucket is created.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import SAMPLE

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """A moto S3 server on loopback; the environment points every client (and Ray worker) at it."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start")
            time.sleep(0.2)
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=url)
    import fsspec
    import s3fs

    # fsspec caches filesystem instances by their arguments, not by the endpoint taken from the environment:
    # without this, a module using this fixture after another one talks to the previous (stopped) server.
    s3fs.S3FileSystem.clear_instance_cache()

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("corpus")
    fs.mkdir("runs")
    fs.put(str(SAMPLE) + "/", "corpus/sample/", recursive=True)
    try:
        yield fs
    finally:
        proc.kill()
        proc.wait()
        s3fs.S3FileSystem.clear_instance_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
