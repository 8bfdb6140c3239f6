"""pipeline.serving.launch: the demo in a child process, ready when it answers, gone after the block."""

from __future__ import annotations

import socket

import httpx
import pytest

from pipeline.serving import launch


def test_free_port_is_bindable():
    port = launch.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.slow
def test_demo_answers_inside_the_block_and_is_stopped_after_it(artifacts):
    with launch.demo(artifacts) as running:
        assert httpx.get(running.url + "/").status_code == 200
        assert running.process.poll() is None
        assert running.ready_s > 0 and launch.SERVING in running.output()
    assert running.process.poll() is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(running.url + "/", timeout=2.0)


def test_a_demo_that_exits_is_one_error_quoting_its_output(tmp_path):
    with pytest.raises(launch.DemoFailed, match=r"exited with code 2 before answering:\n(.|\n)*--no-such-option"):
        with launch.demo(tmp_path, timeout=60, args=("--no-such-option",)):
            pass
