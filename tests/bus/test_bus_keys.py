"""Key generation, loading and the `python -m bus.keys` command."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq.auth

from bus.errors import KeyFileError
from bus.keys import CurveKeys, generate, main


def test_generate_writes_private_secret_and_zmq_compatible_files(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        pub, sec = generate(tmp_path, "a")
    finally:
        os.umask(old)
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    public, secret = zmq.auth.load_certificate(sec)
    assert secret is not None and zmq.auth.load_certificate(pub) == (public, None)
    keys = CurveKeys.load(tmp_path, "a")
    assert (keys.public, keys.secret) == (public, secret)
    assert secret.decode() not in repr(keys)
    with pytest.raises(KeyFileError, match="exists"):
        generate(tmp_path, "a")
    generate(tmp_path, "a", force=True)
    assert CurveKeys.load(tmp_path, "a").public != public


def test_load_refuses_unsafe_or_missing_keys(tmp_path: Path) -> None:
    _, sec = generate(tmp_path, "a")
    generate(tmp_path, "b")
    assert CurveKeys.load(tmp_path, "a", ["a", "b"]).name_of(CurveKeys.load(tmp_path, "b").public) == "b"
    with pytest.raises(KeyFileError, match="missing public key"):
        CurveKeys.load(tmp_path, "a", ["a", "b", "c"])
    with pytest.raises(KeyFileError):
        CurveKeys.load(tmp_path, "zz")
    os.chmod(sec, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        CurveKeys.load(tmp_path, "a")
    os.chmod(sec, 0o600)
    (tmp_path / "b.key").write_text("garbage\n")
    with pytest.raises(KeyFileError, match="no public-key"):
        CurveKeys.load(tmp_path, "a")
    with pytest.raises(KeyFileError):
        CurveKeys.load(tmp_path, "a").public_of("nobody")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gen", str(tmp_path), "n1", "n2"]) == 0
    assert main(["gen", str(tmp_path), "n1"]) == 1
    assert main(["show", str(tmp_path), "n2"]) == 0
    out = capsys.readouterr()
    assert CurveKeys.load(tmp_path, "n2").public.decode() in out.out
    assert "exists" in out.err
    proc = subprocess.run(
        [sys.executable, "-m", "bus.keys", "gen", str(tmp_path), "../evil"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1 and "invalid node name" in proc.stderr
    assert not (tmp_path.parent / "evil.key").exists()
