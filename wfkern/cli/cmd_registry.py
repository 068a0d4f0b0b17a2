"""``wfkern registry``: the per-tenant forget registry of ``wfkern serve`` (an SQLite file): tenants, their API
keys (shown once, stored hashed), their forgotten classes and the audit log."""

from __future__ import annotations

import argparse
import datetime
import json
import os

from wfkern.cli.errors import UserError

__all__ = ["add_parser", "run"]

_UNCHECKED = 100_000  # the class-id bound without --num-classes


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("registry", help="manage the per-tenant forget registry of `wfkern serve`",
                       description="Create the registry, its tenants and their keys; add or remove the classes a "
                                   "tenant has forgotten (each change is one transaction with an audit entry). "
                                   "Keys are printed once and stored hashed.")
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help: str, tenant: bool = False, classes: bool = False) -> argparse.ArgumentParser:
        a = acts.add_parser(name, help=help, description=help)
        a.add_argument("--db", required=True, help="the registry file")
        if tenant:
            a.add_argument("--tenant", required=True, help="tenant id or name")
        if classes:
            a.add_argument("--classes", required=True, metavar="LIST", help="class ids, e.g. 3 or 0,3,5 or 0-4")
            a.add_argument("--reason", default=None, help="why, for the audit log (default: none)")
            a.add_argument("--num-classes", type=int, default=None,
                           help="the served model's class count, to check the ids against (default: ids below 100000)")
        a.set_defaults(run=run)
        return a

    action("init", "create the registry file (if missing) and print a new admin key for the admin endpoints")
    action("create-tenant", "create a tenant and print its API key").add_argument("--name", required=True)
    action("rotate-key", "print a new API key for a tenant; the old one stops working", tenant=True)
    action("forget", "add classes to a tenant's forgotten classes", tenant=True, classes=True)
    action("unforget", "remove classes from a tenant's forgotten classes", tenant=True, classes=True)
    action("list", "list the tenants and their forgotten classes")
    action("audit", "print the audit log (of one tenant with --tenant)").add_argument(
        "--tenant", default=None, help="tenant id or name (default: every tenant)")


def _store(args, create: bool = False):
    from wfkern.serve.registry import SQLiteForgetStore

    if not create and not os.path.isfile(args.db):
        raise UserError(f"--db must be an existing registry file, got {args.db!r}; create it with "
                        "`wfkern registry init --db FILE`")
    return SQLiteForgetStore(args.db, num_classes=getattr(args, "num_classes", None))


def _who() -> str:
    """The audit log's "who" for a change made with this command: cli:<login name>."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _tenant(store, text: str):
    found = store.tenant(int(text)) if text.isdigit() else next((t for t in store.tenants() if t.name == text), None)
    if found is None:
        raise UserError(f"--tenant must be an existing tenant id or name, got {text!r}")
    return found


def run(args: argparse.Namespace) -> int:
    from wfkern.cli._common import parse_class_list

    store = _store(args, create=args.action == "init")
    if args.action == "init":
        print(f"registry {args.db}: admin key (shown once, stored hashed): {store.set_admin_key()}")
    elif args.action == "create-tenant":
        tenant, key = store.create_tenant(args.name, who=_who())
        print(f"tenant {tenant.id} {tenant.name!r}: API key (shown once, stored hashed): {key}")
    elif args.action == "rotate-key":
        tenant = _tenant(store, args.tenant)
        print(f"tenant {tenant.id} {tenant.name!r}: new API key (shown once, stored hashed): "
              f"{store.rotate_key(tenant.id, who=_who())}")
    elif args.action in ("forget", "unforget"):
        tenant = _tenant(store, args.tenant)
        classes = parse_class_list(args.classes, args.num_classes or _UNCHECKED)
        change = store.add_classes if args.action == "forget" else store.remove_classes
        now = change(tenant.id, classes, who=_who(), reason=args.reason)
        print(f"tenant {tenant.id} {tenant.name!r} forgets: {', '.join(map(str, now)) or 'nothing'}")
    elif args.action == "list":
        for t in store.tenants():
            print(f"{t.id:>4}  {t.name:<24} forgets: {', '.join(map(str, store.forgotten(t.id))) or '-'}")
    else:
        tid = _tenant(store, args.tenant).id if args.tenant is not None else None
        for e in store.audit(tid):
            when = datetime.datetime.fromtimestamp(e.at, datetime.timezone.utc).isoformat(timespec="seconds")
            print(json.dumps({**e.to_dict(), "at": when}))
    return 0
