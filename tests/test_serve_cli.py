"""`wfkern serve` refuses what it cannot serve with one line (exit status 2) before anything starts, and warns
loudly when it serves without keys."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("litserve")

from _serve_helpers import make_model  # noqa: E402

from wfkern.cli.main import main  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("serve_cli"))


def one_line_error(capsys, argv: list[str], words: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("wfkern serve: error: ") and words in last, err
    return err


def test_bad_invocations_are_one_line_errors(files, tmp_path, capsys):
    ckpt, filters = map(str, files)
    base = ["serve", "--checkpoint", ckpt, "--gates", filters]
    one_line_error(capsys, base, "--registry must be given")
    one_line_error(capsys, base + ["--registry", str(tmp_path / "none.db")], "--registry must be an existing")
    one_line_error(capsys, ["serve", "--checkpoint", ckpt, "--no-auth"], "gates must be given for mode 'wf'")
    one_line_error(capsys, ["serve", "--checkpoint", ckpt, "--gates", str(tmp_path / "f"), "--no-auth"],
                   "gates must be an existing file")
    one_line_error(capsys, ["serve", "--checkpoint", str(tmp_path / "m"), "--no-auth"], "--checkpoint must be")
    one_line_error(capsys, base + ["--no-auth", "--class-names", "a,b"], "class_names must be 10 distinct")
    one_line_error(capsys, base + ["--no-auth", "--max-images", "0"], "--max-images must be >= 1, got 0")


def test_no_auth_warns_loudly_and_a_busy_port_is_one_line(files, capsys):
    ckpt, filters = map(str, files)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = one_line_error(capsys, ["serve", "--checkpoint", ckpt, "--gates", filters, "--no-auth", "--port",
                                      str(port)], f"got {port}, which is in use")
    assert "WARNING: wfkern serve runs with --no-auth: ANY client" in err


def test_serve_sits_at_the_command_lines_level():
    """wfkern.serve imports only patch / models / train / data (and what they rest on); only the CLI imports it."""
    import ast
    from pathlib import Path

    import wfkern

    package = Path(wfkern.__file__).parent
    allowed = {"serve", "patch", "models", "train", "data", "layers", "ops", "_atomic", "_utils"}
    bad = []
    for path in package.rglob("*.py"):
        group = path.relative_to(package).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                parts = name.split(".")
                if parts[0] != "wfkern":
                    continue
                target = parts[1] if len(parts) > 1 else "(top level)"
                if group == "serve" and target not in allowed:
                    bad.append(f"{path.relative_to(package)} imports wfkern.{target}")
                if target == "serve" and group not in ("serve", "cli"):
                    bad.append(f"{path.relative_to(package)} imports wfkern.serve")
    assert not bad, bad


def test_build_app_from_python(files):
    """wfkern.serve.build_app: the FastAPI app of API v1 (LitServe's own routes replaced), before any worker runs."""
    from fastapi.testclient import TestClient

    import wfkern.serve

    ckpt, filters = map(str, files)
    server = wfkern.serve.build_app(ckpt, filters, no_auth=True, max_batch_size=4, class_names=list("abcdefghij"))
    paths = {getattr(r, "path", None) for r in server.app.routes}
    assert {"/v1/predict", "/v1/classes", "/healthz", "/metrics", "/"} <= paths
    assert not paths & {"/predict", "/health", "/info", "/v1/_worker"}
    client = TestClient(server.app)  # no lifespan: no worker, so nothing is predicted here
    body = client.get("/v1/classes").json()
    assert [c["name"] for c in body["classes"]] == list("abcdefghij") and body["mode"] == "wf"
    assert client.get("/healthz").status_code == 503  # no model worker yet
    answer = client.post("/v1/predict", json={"images": [{"array": [[0.0] * 8] * 8}], "forget": ["z"]})
    assert answer.status_code == 422 and "class names of the model (a, b, c" in answer.json()["error"]["message"]
    assert "wfkern serve" in client.get("/").text
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 1, got 0"):
        wfkern.serve.build_app(ckpt, filters, no_auth=True, max_batch_size=0)
