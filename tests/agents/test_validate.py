"""The agents' checks, run before a resource is written (issue #10: values checked at add/set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.validate import check_agent_properties


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"check_tcp": "nonsense"}, "'nonsense' is not host:port"),
        ({"check_tcp": "127.0.0.1:70000"}, "is not host:port"),
        ({"stop_timeout": "-5"}, "must be >= 0"),
        ({"stop_timeout": "soon"}, "is not a number of seconds"),
        ({"cwd": "/nonexistent/dir"}, "no directory '/nonexistent/dir'"),
        ({"cwd": "relative"}, "not an absolute path"),
        ({"env": "1BAD=x"}, "'1BAD=x' is not KEY=VALUE"),
        ({"cmd": "  "}, "'cmd' is empty"),
    ],
)
def test_proc_values_the_agent_would_refuse_are_refused_up_front(props: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_agent_properties("proc", props)


def test_good_proc_values_pass(tmp_path: Path) -> None:
    check_agent_properties(
        "proc",
        {"cmd": "sleep 1", "check_tcp": "127.0.0.1:8080", "stop_timeout": "2.5", "cwd": str(tmp_path),
         "env": "A=1 B='two words'"},
    )  # fmt: skip


def test_ocf_agent_must_exist_and_params_parse(tmp_path: Path) -> None:
    root = tmp_path / "ocf"
    agent = root / "resource.d" / "heartbeat" / "Dummy"
    agent.parent.mkdir(parents=True)
    agent.write_text("#!/bin/sh\nexit 0\n")
    agent.chmod(0o755)
    check_agent_properties("ocf", {"agent": "heartbeat:Dummy", "params": "state=/tmp/x"}, ocf_root=root)
    with pytest.raises(ValueError, match="no OCF agent heartbeat:NoSuch"):
        check_agent_properties("ocf", {"agent": "heartbeat:NoSuch"}, ocf_root=root)
    with pytest.raises(ValueError, match="is not provider:type"):
        check_agent_properties("ocf", {"agent": "Dummy"}, ocf_root=root)
    with pytest.raises(ValueError, match="must be >= 0"):
        check_agent_properties("ocf", {"monitor_timeout": "-1"}, ocf_root=root)


def test_types_without_an_agent_here_pass() -> None:
    check_agent_properties("fa", {"anything": "goes"})


def test_ct_values_the_agent_would_refuse_are_refused_up_front(tmp_path: Path) -> None:
    check_agent_properties("ct", {"hostname": "web1", "health": "none", "stop_timeout": "5", "rootfs": "/"})
    with pytest.raises(ValueError, match="property 'rootfs': no directory"):
        check_agent_properties("ct", {"rootfs": str(tmp_path / "nosuch")})
    with pytest.raises(ValueError, match="has no /bin/sh"):
        check_agent_properties("ct", {"rootfs": str(tmp_path)})
    with pytest.raises(ValueError, match="is not an absolute path"):
        check_agent_properties("ct", {"rootfs": "rel/dir"})
    with pytest.raises(ValueError, match="is not a host name"):
        check_agent_properties("ct", {"hostname": "-bad-"})
    with pytest.raises(ValueError, match="is not one of guest, none"):
        check_agent_properties("ct", {"health": "ping"})
    with pytest.raises(ValueError, match="must be >= 0"):
        check_agent_properties("ct", {"stop_timeout": "-1"})
