"""Installing the site: atomic write, backup, sites-enabled link, real ``nginx -t`` with
rollback, reload — all inside a tmp prefix, never /etc/nginx."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import requests

from nginxgen.build import render
from nginxgen.cli import main
from nginxgen.deploy import DeployError, Nginx, enable_site, install, write_atomic


def _etc(ng, tmp_path: Path) -> tuple[Path, Nginx]:
    """A Debian-like layout under tmp: prefix/nginx.conf including sites-enabled/*."""
    etc = tmp_path / "etc-nginx"
    for sub in ("sites-available", "sites-enabled", "logs", "temp"):
        (etc / sub).mkdir(parents=True, exist_ok=True)
    (etc / "nginx.conf").write_text(ng.wrapper_conf(etc, str(etc / "sites-enabled" / "*")))
    return etc, Nginx(ng.NGINX, str(etc), str(etc / "nginx.conf"))


def test_write_atomic_keeps_a_backup(tmp_path: Path):
    dest = tmp_path / "sites-available" / "qwen3-prod"
    assert write_atomic(dest, "one\n") is None
    backup = write_atomic(dest, "two\n")
    assert dest.read_text() == "two\n" and backup.read_text() == "one\n"
    assert oct(dest.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in dest.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_enable_links_sites_enabled(tmp_path: Path):
    dest = tmp_path / "sites-available" / "qwen3-prod"
    write_atomic(dest, "x\n")
    link, created = enable_site(dest)
    assert created and link == tmp_path / "sites-enabled" / "qwen3-prod"
    assert os.readlink(link) == str(dest.resolve())
    assert enable_site(dest) == (link, False)
    (tmp_path / "sites-enabled" / "other").write_text("real file")
    other = tmp_path / "sites-available" / "other"
    write_atomic(other, "y\n")
    with pytest.raises(DeployError):
        enable_site(other)


@pytest.mark.integration
def test_install_tests_and_rolls_back(ng, tmp_path: Path):
    ng.need_tool(ng.NGINX, "nginx")
    etc, nginx = _etc(ng, tmp_path)
    dest = etc / "sites-available" / "qwen3-prod"
    good = render(ng.edge_spec(tmp_path))
    res = install(good, dest, enable=True, test=True, nginx=nginx)
    assert "test is successful" in res.test_output and res.link is not None
    broken = good.replace(str(tmp_path / "tls" / "cert.pem"), "/nonexistent/cert.pem")
    with pytest.raises(DeployError, match="cannot load certificate"):
        install(broken, dest, enable=True, test=True, nginx=nginx)
    assert dest.read_text() == good  # previous site restored
    assert (etc / "sites-enabled" / "qwen3-prod").is_symlink()


@pytest.mark.integration
def test_failed_first_install_leaves_nothing_enabled(ng, tmp_path: Path):
    ng.need_tool(ng.NGINX, "nginx")
    etc, nginx = _etc(ng, tmp_path)
    dest = etc / "sites-available" / "qwen3-prod"
    broken = render(ng.edge_spec(tmp_path)).replace("server_tokens off;", "server_tokens maybe;")
    with pytest.raises(DeployError):
        install(broken, dest, enable=True, test=True, nginx=nginx)
    assert not dest.exists() and not (etc / "sites-enabled" / "qwen3-prod").exists()


@pytest.mark.integration
def test_cli_write_test_reload(ng, tmp_path: Path, capsys, ui_stub, gateway_stub):
    """`nginxgen write --enable --test --reload` against a running nginx in a tmp prefix."""
    ng.need_tool(ng.NGINX, "nginx")
    etc, nginx = _etc(ng, tmp_path)
    files = ng.issue_certs(tmp_path / "tls")
    (tmp_path / "acme").mkdir()
    http_port, https_port = ng.free_port(), ng.free_port()
    common = [
        "--server-name", "ai.example.test",
        "--ssl-cert", files.cert, "--ssl-key", files.key,
        "--ui", ui_stub.addr, "--gateway", gateway_stub.addr,
        "--http-port", str(http_port), "--https-port", str(https_port),
        "--listen-address", "127.0.0.1",
        "--acme-root", str(tmp_path / "acme"),
        "--access-log", str(tmp_path / "access.log"),
        "--dest", str(etc / "sites-available" / "qwen3-prod"),
        "--nginx", ng.NGINX, "--nginx-prefix", str(etc), "--nginx-conf", str(etc / "nginx.conf"),
    ]  # fmt: skip
    assert main(["write", *common, "--enable", "--test"]) == 0
    assert "test is successful" in capsys.readouterr().out
    proc = subprocess.Popen(nginx.cmd(), stderr=subprocess.DEVNULL)
    try:
        ng.wait_port(https_port, proc)
        ca = str(tmp_path / "tls" / "ca.pem")
        r = requests.get(f"https://127.0.0.1:{https_port}/v1/models", verify=ca, timeout=10)
        assert r.status_code == 200 and r.headers["content-length"]
        assert "x-frame-options" in r.headers
        # Change the policy and reload the running nginx through the CLI.
        assert main(["write", *common, "--no-rate-limit", "--test", "--reload"]) == 0
        out = capsys.readouterr().out
        assert "reloaded (" in out and "previous kept as" in out
        assert (etc / "sites-available" / "qwen3-prod.bak").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_show_with_gateway_config_warns(tmp_path: Path, capsys):
    gw = tmp_path / "gateway.yaml"
    gw.write_text("listen: ':18800'\nrequest: {max_body_bytes: 2097152}\n")
    assert main(["show", "--server-name", "a.example", "--gateway-config", str(gw)]) == 0
    cap = capsys.readouterr()
    assert "server 127.0.0.1:18800;" in cap.out and "client_max_body_size 2m;" in cap.out
    assert "trusted_proxies" in cap.err


def test_cli_site_yaml(tmp_path: Path, capsys):
    site = tmp_path / "site.yaml"
    site.write_text(
        "server_name: [ai.example.com, chat.example.com]\nui: ['127.0.0.1:3000']\n"
        "nginx_version: '1.27.0'\nheaders: {referrer_policy: no-referrer}\n"
    )
    assert main(["show", "--site", str(site), "--https-port", "8443"]) == 0
    out = capsys.readouterr().out
    assert "server_name ai.example.com chat.example.com;" in out and "http2 on;" in out
    assert "server 127.0.0.1:3000;" in out and "Referrer-Policy no-referrer" in out
    assert "https://$host:8443$request_uri" in out


def test_cli_reports_bad_input(capsys):
    assert main(["show", "--server-name", "a.example", "--ui", "nope"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


@pytest.mark.integration
def test_site_nginx_does_not_read_is_refused(ng, tmp_path: Path, capsys):
    """nginx -t passes on the main config alone: a site written where nginx.conf does not
    look must fail loudly, not report success for a file nginx never read."""
    ng.need_tool(ng.NGINX, "nginx")
    etc, nginx = _etc(ng, tmp_path)
    elsewhere = tmp_path / "elsewhere" / "sites-available" / "qwen3-prod"
    site = render(ng.edge_spec(tmp_path)).replace(str(tmp_path / "tls" / "cert.pem"), "/no/cert")
    with pytest.raises(DeployError, match="never reads") as e:
        install(site, elsewhere, enable=True, test=True, nginx=nginx)
    assert str(etc / "nginx.conf") in str(e.value) and "sites-enabled" in str(e.value)
    assert not elsewhere.exists()  # rolled back, link too
    assert not (elsewhere.parent.parent / "sites-enabled" / "qwen3-prod").exists()
    argv = ["write", "--server-name", "a.example", "--dest", str(elsewhere), "--test"]
    argv += [
        "--nginx",
        ng.NGINX,
        "--nginx-prefix",
        str(etc),
        "--nginx-conf",
        str(etc / "nginx.conf"),
    ]
    assert main(argv) == 1
    assert "never reads" in capsys.readouterr().err
    # the same site where nginx.conf looks is read, and its missing certificate is found
    with pytest.raises(DeployError, match="cert"):
        install(site, etc / "sites-available" / "qwen3-prod", enable=True, test=True, nginx=nginx)
