from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import redis

from waitroom.devtools.embedded_redis import EmbeddedRedis, find_server_binary
from waitroom.errors import EmbeddedRedisError


def test_fixture_server_is_real(redis_sync: redis.Redis) -> None:
    info = redis_sync.info("server")
    assert "redis_version" in info
    redis_sync.set("k", "v")
    assert redis_sync.get("k") == b"v"
    # Lua is what the queue relies on: prove the server runs scripts.
    assert redis_sync.eval("return redis.call('INCR', KEYS[1])", 1, "n") == 1


def test_binary_is_found() -> None:
    assert os.access(find_server_binary(), os.X_OK)


def test_stop_with_save_keeps_data_and_without_loses_it() -> None:
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        client.set("place", "42")
        client.close()
        server.stop(save=True)
        assert not server.ping()
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.get("place") == b"42"
        client.close()
        server.stop(save=False)
        (server.workdir / "dump.rdb").unlink(missing_ok=True)
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.get("place") is None
        client.close()


def test_tcp_port_mode() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with EmbeddedRedis(port=port) as server:
        assert server.url == f"redis://127.0.0.1:{port}/0"
        assert redis.Redis.from_url(server.url).ping()


def test_bad_binary_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(EmbeddedRedisError, match="exited with 3"):
        EmbeddedRedis(binary=fake).start(timeout=3)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_with_a_killed_parent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from waitroom.devtools.embedded_redis import EmbeddedRedis
        server = EmbeddedRedis(workdir=Path({str(tmp_path)!r})).start()
        print(server.process.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(child_pid, signal.SIGKILL)
    pytest.fail("the embedded server outlived its killed parent")
