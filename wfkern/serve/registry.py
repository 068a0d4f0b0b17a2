"""The per-tenant forget registry: who may call the server, which classes each tenant has forgotten, and an
append-only audit log of every change. SQLite in WAL mode; every change is one transaction, so a process killed
at any moment leaves every committed change in place and no torn state.

API keys are ``wfk_<tenant id>_<43 random url-safe characters>`` (256 bits from ``secrets``); only their sha256 is
stored (a high-entropy key needs no slow hash), compared with ``hmac.compare_digest``, and never logged. The admin
key is stored the same way, in its own row.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass

__all__ = ["Tenant", "AuditEntry", "ForgetStore", "SQLiteForgetStore", "ADMIN", "hash_key"]

ADMIN = "admin"  # the audit log's "who" for changes made with the admin key or the CLI

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS forgotten (
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    class_id INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, class_id)
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    tenant_id INTEGER NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('added', 'removed', 'created', 'key_rotated')),
    classes TEXT NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS admin (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key_hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def hash_key(key: str) -> str:
    """sha256 hex of an API key."""
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key(tenant_id: int | str) -> str:
    return f"wfk_{tenant_id}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    who: str
    tenant_id: int
    action: str
    classes: list[int]
    reason: str | None

    def to_dict(self) -> dict:
        return {"seq": self.seq, "at": self.at, "who": self.who, "tenant_id": self.tenant_id, "action": self.action,
                "classes": self.classes, "reason": self.reason}


class ForgetStore:
    """What the server needs of a registry (an SQLite file here; another database would implement the same)."""

    def authenticate(self, key: str) -> Tenant | None: ...
    def is_admin(self, key: str) -> bool: ...
    def forgotten(self, tenant_id: int) -> list[int]: ...
    def tenants(self) -> list[Tenant]: ...
    def tenant(self, tenant_id: int) -> Tenant | None: ...
    def create_tenant(self, name: str, who: str = ADMIN) -> tuple[Tenant, str]: ...
    def rotate_key(self, tenant_id: int, who: str = ADMIN) -> str: ...
    def add_classes(self, tenant_id: int, classes: list[int], who: str = ADMIN, reason: str | None = None) -> list[int]: ...
    def remove_classes(self, tenant_id: int, classes: list[int], who: str = ADMIN,
                       reason: str | None = None) -> list[int]: ...
    def audit(self, tenant_id: int | None = None) -> list[AuditEntry]: ...


def _check_name(name) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValueError(f"wfkern.registry: name must be a non-empty string of at most 200 characters, got {name!r}")
    return name.strip()


def _check_classes(classes, num_classes: int | None) -> list[int]:
    if not isinstance(classes, (list, tuple)) or not classes:
        raise ValueError(f"wfkern.registry: classes must be a non-empty list of class ids, got {classes!r}")
    out = set()
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, int) or c < 0 or (num_classes is not None and c >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            raise ValueError(f"wfkern.registry: classes must be class ids {bound}, got {c!r}")
        out.add(c)
    return sorted(out)


class SQLiteForgetStore(ForgetStore):
    """The registry in one SQLite file (WAL mode, ``synchronous=FULL``, one connection per thread).

    Args:
        path: the database file (created with its tables when missing).
        num_classes: when given, class ids are checked against it.
    """

    def __init__(self, path: str, num_classes: int | None = None) -> None:
        self.path = os.fspath(path)
        self.num_classes = num_classes
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"wfkern.registry: path must be in an existing directory, got {self.path!r}")
        self._local = threading.local()
        self._db().executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")  # all tables or none

    # -- connections and transactions --

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return db

    def _write(self):
        store = self

        class _Txn:
            def __enter__(self):
                self.db = store._db()
                self.db.execute("BEGIN IMMEDIATE")
                return self.db

            def __exit__(self, kind, exc, tb):
                self.db.execute("COMMIT" if kind is None else "ROLLBACK")
                return False

        return _Txn()

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @staticmethod
    def _log(db, who: str, tenant_id: int, action: str, classes: list[int], reason: str | None) -> None:
        db.execute("INSERT INTO audit (at, who, tenant_id, action, classes, reason) VALUES (?, ?, ?, ?, ?, ?)",
                   (time.time(), who, tenant_id, action, ",".join(map(str, classes)), reason))

    def _require(self, db, tenant_id) -> None:
        if isinstance(tenant_id, bool) or not isinstance(tenant_id, int) or \
                db.execute("SELECT 1 FROM tenants WHERE id = ?", (tenant_id,)).fetchone() is None:
            raise ValueError(f"wfkern.registry: tenant must be an existing tenant id, got {tenant_id!r}")

    # -- keys --

    def set_admin_key(self) -> str:
        """A new admin key (replacing any earlier one); printed once by the caller, stored hashed."""
        key = f"wfk_admin_{secrets.token_urlsafe(32)}"
        with self._write() as db:
            db.execute("INSERT INTO admin (id, key_hash) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET "
                       "key_hash = excluded.key_hash", (hash_key(key),))
        return key

    def is_admin(self, key: str) -> bool:
        row = self._db().execute("SELECT key_hash FROM admin WHERE id = 1").fetchone()
        return row is not None and hmac.compare_digest(row[0], hash_key(key))

    def authenticate(self, key: str) -> Tenant | None:
        """The tenant whose key this is, else None."""
        parts = key.split("_", 2) if isinstance(key, str) else []
        if len(parts) != 3 or parts[0] != "wfk" or not parts[1].isdigit():
            return None
        row = self._db().execute("SELECT id, name, key_hash FROM tenants WHERE id = ?", (int(parts[1]),)).fetchone()
        if row is None or not hmac.compare_digest(row[2], hash_key(key)):
            return None
        return Tenant(row[0], row[1])

    # -- reads --

    def tenants(self) -> list[Tenant]:
        return [Tenant(*r) for r in self._db().execute("SELECT id, name FROM tenants ORDER BY id")]

    def tenant(self, tenant_id: int) -> Tenant | None:
        row = self._db().execute("SELECT id, name FROM tenants WHERE id = ?", (tenant_id,)).fetchone()
        return Tenant(*row) if row else None

    def forgotten(self, tenant_id: int) -> list[int]:
        rows = self._db().execute("SELECT class_id FROM forgotten WHERE tenant_id = ? ORDER BY class_id", (tenant_id,))
        return [r[0] for r in rows]

    def audit(self, tenant_id: int | None = None) -> list[AuditEntry]:
        sql = "SELECT seq, at, who, tenant_id, action, classes, reason FROM audit"
        rows = self._db().execute(sql + (" WHERE tenant_id = ? ORDER BY seq" if tenant_id is not None else
                                         " ORDER BY seq"), (() if tenant_id is None else (tenant_id,)))
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], [int(c) for c in r[5].split(",") if c], r[6]) for r in rows]

    # -- changes: one transaction each, with its audit entry --

    def create_tenant(self, name: str, who: str = ADMIN) -> tuple[Tenant, str]:
        """A new tenant and its API key (shown once; only its hash is kept)."""
        name = _check_name(name)
        with self._write() as db:
            if db.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                raise ValueError(f"wfkern.registry: name must be unused, got {name!r}, which a tenant has")
            cur = db.execute("INSERT INTO tenants (name, key_hash, created) VALUES (?, '', ?)", (name, time.time()))
            tid = int(cur.lastrowid)
            key = _new_key(tid)
            db.execute("UPDATE tenants SET key_hash = ? WHERE id = ?", (hash_key(key), tid))
            self._log(db, who, tid, "created", [], None)
        return Tenant(tid, name), key

    def rotate_key(self, tenant_id: int, who: str = ADMIN) -> str:
        """A new key for the tenant; the old one stops working at once."""
        key = _new_key(tenant_id)
        with self._write() as db:
            self._require(db, tenant_id)
            db.execute("UPDATE tenants SET key_hash = ? WHERE id = ?", (hash_key(key), tenant_id))
            self._log(db, who, tenant_id, "key_rotated", [], None)
        return key

    def add_classes(self, tenant_id: int, classes: list[int], who: str = ADMIN, reason: str | None = None) -> list[int]:
        """Forget ``classes`` for the tenant; returns its forgotten classes after the change."""
        classes = _check_classes(classes, self.num_classes)
        with self._write() as db:
            self._require(db, tenant_id)
            db.executemany("INSERT OR IGNORE INTO forgotten (tenant_id, class_id) VALUES (?, ?)",
                           [(tenant_id, c) for c in classes])
            self._log(db, who, tenant_id, "added", classes, reason)
            return [r[0] for r in db.execute("SELECT class_id FROM forgotten WHERE tenant_id = ? ORDER BY class_id",
                                             (tenant_id,))]

    def remove_classes(self, tenant_id: int, classes: list[int], who: str = ADMIN,
                       reason: str | None = None) -> list[int]:
        """Stop forgetting ``classes`` for the tenant; returns its forgotten classes after the change."""
        classes = _check_classes(classes, self.num_classes)
        with self._write() as db:
            self._require(db, tenant_id)
            db.executemany("DELETE FROM forgotten WHERE tenant_id = ? AND class_id = ?",
                           [(tenant_id, c) for c in classes])
            self._log(db, who, tenant_id, "removed", classes, reason)
            return [r[0] for r in db.execute("SELECT class_id FROM forgotten WHERE tenant_id = ? ORDER BY class_id",
                                             (tenant_id,))]

    def integrity(self) -> str:
        """``PRAGMA integrity_check``'s answer ("ok" for a sound file)."""
        return self._db().execute("PRAGMA integrity_check").fetchone()[0]
