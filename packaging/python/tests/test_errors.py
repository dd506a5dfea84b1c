"""Each failure raises its exception, decided by the stream's error kind."""
import pytest

import receptord


def run(pdd, **kw):
    return receptord.run(private_data_dir=pdd, playbook="test.yml", quiet=True, **kw)


def test_unknown_node_lists_the_known_nodes(mesh, pdd):
    with pytest.raises(receptord.UnknownNodeError) as e:
        run(pdd, via_receptor="node9", receptor_peer=mesh)
    assert "node9" in str(e.value)
    assert {"node1", "node2", "node3", "node4"} <= set(e.value.known_nodes)


def test_unreachable_peer(pdd, tmp_path):
    # A port that was just free: nothing listens there.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(receptord.PeerUnreachableError):
        run(pdd, via_receptor="node2", receptor_peer=f"receptor://127.0.0.1:{port}")


def test_refused_archive(mesh, pdd):
    with pytest.raises(receptord.ArchiveRefusedError) as e:
        run(pdd, via_receptor="node4", receptor_peer=mesh)
    assert isinstance(e.value, receptord.JobRefusedError)


def test_refused_signature(mesh, pdd):
    with pytest.raises(receptord.SignatureRefusedError):
        run(pdd, via_receptor="node3", receptor_peer=mesh)


def test_bad_private_data_dir(tmp_path):
    with pytest.raises(receptord.BadOptionsError):
        run(str(tmp_path / "missing"), via_receptor="node2")


def test_unsupported_option_is_refused_before_anything_runs(pdd):
    with pytest.raises(receptord.BadOptionsError):
        run(pdd, via_receptor="node2", process_isolation=True)


def test_hostile_stream_from_a_wrong_binary(pdd, monkeypatch, tmp_path):
    fake = tmp_path / "receptor"
    fake.write_text("#!/bin/sh\necho 'not json'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("RECEPTORD_BIN", str(fake))
    with pytest.raises(receptord.ReceptordError) as e:
        run(pdd, via_receptor="node2")
    assert e.value.kind == "stream"
