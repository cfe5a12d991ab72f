"""`running_app` with real processes on 127.0.0.1: the demo shop, its fixes, and every way to fail."""

from __future__ import annotations

import socket
import sys
import textwrap
from pathlib import Path

import httpx2
import pytest

from molar_mcp.demo import demo_scenario, fix_diff
from molar_mcp.demo.config import demo_app_config
from molar_mcp.replay.apps import AppConfig, AppStartError, DiffDoesNotApply, running_app
from molar_mcp.replay.runner import RunResult, run_scenario

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for its reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def is_empty(directory: Path) -> bool:
    return not any(directory.iterdir())


def accepts_connections(base_url: str) -> bool:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) == 0


async def run_demo(slug: str, diffs: list[tuple[str, str]], workdir: Path) -> tuple[RunResult, str]:
    async with (
        running_app(demo_app_config(), diffs, workdir=workdir) as base_url,
        httpx2.AsyncClient(base_url=base_url, timeout=10) as client,
    ):
        result = await run_scenario(demo_scenario(slug), client)
    return result, base_url


async def test_the_buggy_shop_fails_checkout_coupon_at_step_6_in_a_real_process(tmp_path: Path) -> None:
    result, base_url = await run_demo("checkout-coupon", [], tmp_path)

    assert base_url.startswith("http://127.0.0.1:")
    assert result.status == "failed"
    assert result.failure_signature == "step-6: expect json $.total_cents == 4500"
    assert not accepts_connections(base_url)
    assert is_empty(tmp_path)


async def test_the_coupon_fix_makes_checkout_coupon_pass(tmp_path: Path) -> None:
    result, _ = await run_demo("checkout-coupon", [("app.py", fix_diff("coupon-multiplier"))], tmp_path)
    assert result.status == "passed", result.failure_signature
    assert is_empty(tmp_path)


async def test_the_buggy_shop_answers_the_webhook_with_404_and_fails_the_upgrade(tmp_path: Path) -> None:
    result, _ = await run_demo("billing-upgrade-webhook", [], tmp_path)
    webhook = next(e for e in result.events if e.kind == "network.response" and e.step_id == "5")
    assert webhook.payload["status"] == 404
    assert result.failure_signature == "step-7: expect url /billing?upgraded=true"


async def test_the_webhook_fix_makes_the_billing_upgrade_pass(tmp_path: Path) -> None:
    result, _ = await run_demo("billing-upgrade-webhook", [("app.py", fix_diff("webhook-route"))], tmp_path)
    assert result.status == "passed", result.failure_signature


async def test_both_fixes_apply_one_after_the_other(tmp_path: Path) -> None:
    fixes = [("app.py", fix_diff("coupon-multiplier")), ("app.py", fix_diff("webhook-route"))]
    async with (
        running_app(demo_app_config(), fixes, workdir=tmp_path) as base_url,
        httpx2.AsyncClient(base_url=base_url, timeout=10) as client,
    ):
        coupon = await run_scenario(demo_scenario("checkout-coupon"), client)
        upgrade = await run_scenario(demo_scenario("billing-upgrade-webhook"), client)
    assert (coupon.status, upgrade.status) == ("passed", "passed")


async def test_a_diff_that_does_not_apply_names_the_hunk_and_leaves_nothing_behind(tmp_path: Path) -> None:
    stale = fix_diff("coupon-multiplier").replace(
        "     subtotal = sum(line", "     subtotal = sum(item"
    )  # a context line the source does not have

    with pytest.raises(DiffDoesNotApply) as caught:
        async with running_app(demo_app_config(), [("app.py", stale)], workdir=tmp_path):
            pytest.fail("the app must not start")

    assert caught.value.file == "app.py"
    assert caught.value.hunk is not None
    assert caught.value.hunk.startswith("@@ -67,7 +67,7 @@")
    assert str(caught.value).startswith("app.py: hunk @@ -67,7 +67,7 @@ of app.py does not apply")
    assert is_empty(tmp_path)


async def test_a_diff_of_a_file_the_app_lacks_is_refused(tmp_path: Path) -> None:
    diff = fix_diff("webhook-route").replace("a/app.py", "a/server.py").replace("b/app.py", "b/server.py")
    with pytest.raises(DiffDoesNotApply, match=r"server\.py does not apply: the file is not in the source"):
        async with running_app(demo_app_config(), [("server.py", diff)], workdir=tmp_path):
            pytest.fail("the app must not start")
    assert is_empty(tmp_path)


def script_app(tmp_path: Path, name: str, code: str, **env: str) -> AppConfig:
    source = tmp_path / f"{name}-src"
    source.mkdir()
    (source / "server.py").write_text(textwrap.dedent(code), encoding="utf-8")
    return AppConfig(
        name=name,
        source_dir=source,
        start_command=[sys.executable, "server.py", "{port}"],
        health_path="/healthz",
        env=env,
    )


async def test_an_app_that_exits_at_once_fails_with_its_log_tail_and_leaves_nothing(tmp_path: Path) -> None:
    config = script_app(
        tmp_path,
        "crashy",
        """
        import sys
        print("loading settings from config.toml")
        print("fatal: DATABASE_URL is not set", file=sys.stderr)
        sys.exit(3)
        """,
    )
    workdir = tmp_path / "work"
    workdir.mkdir()

    with pytest.raises(AppStartError) as caught:
        async with running_app(config, workdir=workdir):
            pytest.fail("the app must not be reported as running")

    assert caught.value.exit_code == 3
    assert caught.value.log_tail == "loading settings from config.toml\nfatal: DATABASE_URL is not set"
    assert "crashy exited with code 3" in str(caught.value)
    assert is_empty(workdir)


async def test_an_app_that_never_gets_healthy_times_out_and_is_killed(tmp_path: Path) -> None:
    config = script_app(
        tmp_path,
        "unhealthy",
        """
        import os, sys
        from http.server import BaseHTTPRequestHandler, HTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(503)
                self.end_headers()

        with open(os.environ["PID_FILE"], "w") as f:
            f.write(str(os.getpid()))
        HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
        """,
        PID_FILE=str(tmp_path / "server.pid"),
    )
    workdir = tmp_path / "work"
    workdir.mkdir()

    with pytest.raises(AppStartError) as caught:
        async with running_app(config, workdir=workdir, startup_timeout_s=0.5):
            pytest.fail("the app must not be reported as running")

    assert "did not answer" in str(caught.value)
    assert "within 0.5 s" in str(caught.value)
    assert '"GET /healthz HTTP/1.1" 503' in caught.value.log_tail
    assert not alive(int((tmp_path / "server.pid").read_text()))
    assert is_empty(workdir)


async def test_leaving_the_block_by_an_exception_kills_the_whole_process_group(tmp_path: Path) -> None:
    config = script_app(
        tmp_path,
        "forking",
        """
        import os, subprocess, sys
        from http.server import BaseHTTPRequestHandler, HTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.end_headers()

        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(os.environ["PID_FILE"], "w") as f:
            f.write(f"{os.getpid()} {worker.pid}")
        HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
        """,
        PID_FILE=str(tmp_path / "pids"),
    )
    workdir = tmp_path / "work"
    workdir.mkdir()

    pids: list[int] = []

    async def give_up_while_running() -> str:
        async with running_app(config, workdir=workdir) as base_url:
            pids.extend(map(int, (tmp_path / "pids").read_text().split()))
            assert all(alive(pid) for pid in pids)
            raise RuntimeError(f"the test gives up on {base_url}")

    with pytest.raises(RuntimeError, match="the test gives up") as caught:
        await give_up_while_running()

    server, worker = pids
    base_url = str(caught.value).rsplit(" ", 1)[1]
    assert not alive(server)
    assert not alive(worker)
    assert not accepts_connections(base_url)
    assert is_empty(workdir)


async def test_a_start_command_that_does_not_exist_raises_app_start_error(tmp_path: Path) -> None:
    source, workdir = tmp_path / "ghost-src", tmp_path / "work"
    source.mkdir()
    workdir.mkdir()
    config = AppConfig(name="ghost", source_dir=source, start_command=["/nonexistent/molar-app", "{port}"])
    with pytest.raises(AppStartError, match="cannot run '/nonexistent/molar-app'"):
        async with running_app(config, workdir=workdir):
            pytest.fail("the app must not start")
    assert is_empty(workdir)


def test_a_start_command_must_say_where_the_port_goes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must contain \\{port\\}"):
        AppConfig(name="x", source_dir=tmp_path, start_command=["python", "app.py"])
