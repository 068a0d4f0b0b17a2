"""The per-tenant forget registry: hashed keys, one transaction per change, an append-only audit log, and the
`wfkern registry` commands."""

from __future__ import annotations

import re
import sqlite3

import pytest

pytest.importorskip("litserve")

from wfkern.cli.main import main  # noqa: E402
from wfkern.serve.registry import SQLiteForgetStore, hash_key  # noqa: E402


def test_keys_authenticate_and_are_stored_hashed_only(tmp_path):
    db = tmp_path / "r.db"
    store = SQLiteForgetStore(str(db), num_classes=10)
    alice, key = store.create_tenant("alice")
    admin = store.set_admin_key()
    assert store.authenticate(key) == alice and store.is_admin(admin)
    assert store.authenticate(admin) is None and not store.is_admin(key)
    for bad in ("", "wfk_1_", key[:-1] + ("A" if key[-1] != "A" else "B"), "wfk_x_abc", f"wfk_99_{key[6:]}"):
        assert store.authenticate(bad) is None
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert key.encode() not in raw and admin.encode() not in raw  # never stored in clear
    rows = sqlite3.connect(db).execute("SELECT key_hash FROM tenants").fetchall()
    assert rows == [(hash_key(key),)]


def test_rotation_retires_the_old_key(tmp_path):
    store = SQLiteForgetStore(str(tmp_path / "r.db"))
    alice, old = store.create_tenant("alice")
    new = store.rotate_key(alice.id)
    assert store.authenticate(old) is None and store.authenticate(new) == alice


def test_classes_change_in_one_transaction_with_their_audit_entry(tmp_path):
    store = SQLiteForgetStore(str(tmp_path / "r.db"), num_classes=10)
    a, _ = store.create_tenant("a")
    b, _ = store.create_tenant("b")
    assert store.add_classes(a.id, [5, 3, 5], reason="request 17") == [3, 5]
    assert store.add_classes(b.id, [1]) == [1]
    assert store.remove_classes(a.id, [5, 9]) == [3]
    assert store.forgotten(a.id) == [3] and store.forgotten(b.id) == [1]
    log = store.audit(a.id)
    assert [(e.action, e.classes, e.reason, e.who) for e in log] == [
        ("created", [], None, "admin"), ("added", [3, 5], "request 17", "admin"), ("removed", [5, 9], None, "admin")]
    assert {e.tenant_id for e in store.audit(b.id)} == {b.id}
    with pytest.raises(ValueError, match=r"class ids \[0, 10\), got 10"):
        store.add_classes(a.id, [2, 10])
    assert store.forgotten(a.id) == [3] and len(store.audit(a.id)) == 3  # a refused change leaves no trace
    with pytest.raises(ValueError, match="existing tenant id, got 42"):
        store.add_classes(42, [1])
    with pytest.raises(ValueError, match="must be unused"):
        store.create_tenant("a")


def test_the_audit_log_is_append_only_and_the_file_is_wal(tmp_path):
    db = tmp_path / "r.db"
    store = SQLiteForgetStore(str(db))
    store.create_tenant("a")
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for sql in ("UPDATE audit SET who = 'x'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(sql)
    assert store.integrity() == "ok"


def test_registry_commands(tmp_path, capsys):
    db = str(tmp_path / "r.db")
    assert main(["registry", "init", "--db", db]) == 0
    admin = re.search(r"(wfk_admin_\S+)", capsys.readouterr().out).group(1)
    assert main(["registry", "create-tenant", "--db", db, "--name", "acme"]) == 0
    key = re.search(r"(wfk_1_\S+)", capsys.readouterr().out).group(1)
    assert main(["registry", "forget", "--db", db, "--tenant", "acme", "--classes", "0-2,7", "--reason", "GDPR",
                 "--num-classes", "10"]) == 0
    assert "forgets: 0, 1, 2, 7" in capsys.readouterr().out
    assert main(["registry", "unforget", "--db", db, "--tenant", "1", "--classes", "1"]) == 0
    capsys.readouterr()
    assert main(["registry", "list", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "acme" in out and "forgets: 0, 2, 7" in out
    assert main(["registry", "audit", "--db", db, "--tenant", "acme"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and '"reason": "GDPR"' in lines[1] and key not in "".join(lines)
    assert all('"who": "cli' in line for line in lines)
    store = SQLiteForgetStore(db)
    assert store.forgotten(1) == [0, 2, 7] and store.is_admin(admin) and store.authenticate(key).name == "acme"
    assert main(["registry", "forget", "--db", db, "--tenant", "nobody", "--classes", "1"]) == 2
    assert "--tenant must be an existing tenant id or name, got 'nobody'" in capsys.readouterr().err
    assert main(["registry", "list", "--db", str(tmp_path / "missing.db")]) == 2
