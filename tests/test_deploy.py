"""The Procfile is the single list of processes: supervisord and compose run the same commands,
every venue has a collector line, and every command is a real ``liq`` subcommand."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from click.testing import CliRunner

from shared.cli import SUBCOMMANDS, cli
from shared.venues import VENUE_NAMES
from tests.readme import our_redis_session
from writer.migrate import MigrationError, plan

REPO = Path(__file__).resolve().parents[1]


def procfile() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return {name.strip(): cmd.strip() for name, cmd in (line.split(":", 1) for line in lines if line)}


def test_procfile_has_every_process_and_venue() -> None:
    procs = procfile()
    assert {"collect-binance", "collect-bybit", "detect", "aggregate", "write"} <= set(procs)
    collected = {shlex.split(cmd)[2] for name, cmd in procs.items() if name.startswith("collect-")}
    assert collected == set(VENUE_NAMES)
    for cmd in procs.values():
        argv = shlex.split(cmd)
        assert argv[0] == "liq" and argv[1] in SUBCOMMANDS


def test_supervisord_runs_exactly_the_procfile() -> None:
    text = (REPO / "deploy" / "supervisord.conf").read_text()
    programs = dict(re.findall(r"\[program:([^\]]+)\]\ncommand=(.+)", text))
    assert programs == procfile()


def test_compose_runs_every_procfile_command() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    commands = {" ".join(["liq", *re.findall(r'"([^"]+)"', m)])
                for m in re.findall(r"command: \[([^\]]+)\]", text)}
    for name, cmd in procfile().items():
        if name == "detect":
            assert any(c.startswith("liq detect --shards") for c in commands)
        else:
            assert cmd in commands, name
    assert "image: redis:7" in text and "timescale/timescaledb" in text


def test_compose_keeps_redis_and_the_data_dir_on_named_volumes() -> None:
    """Redis's append-only file and LIQ_DATA_DIR (the collectors' spools) outlive a container."""
    text = (REPO / "docker-compose.yml").read_text()
    data_dir = re.search(r"LIQ_DATA_DIR=(\S+)", (REPO / "Dockerfile").read_text())
    assert data_dir is not None
    app = text.split("x-app: &app", 1)[1].split("\nservices:", 1)[0]
    assert f"volumes: [liqdata:{data_dir.group(1)}]" in app
    redis_service = text.split("  redis:\n", 1)[1].split("\n\n", 1)[0]
    assert '"--appendonly", "yes"' in redis_service and "volumes: [redisdata:/data]" in redis_service
    declared = text.split("\nvolumes:\n", 1)[1].split()
    assert {"tsdata:", "redisdata:", "liqdata:"} <= set(declared)


def test_every_subcommand_loads_and_has_help() -> None:
    runner = CliRunner()
    for name in SUBCOMMANDS:
        result = runner.invoke(cli, [name, "--help"], catch_exceptions=False)
        assert result.exit_code == 0, (name, result.output)


def test_env_example_lists_every_setting() -> None:
    import msgspec

    from aggregator.cli import AggregatorSettings
    from collectors.cli import CollectorSettings
    from detector.config import DetectorSettings
    from shared.settings import env_name
    from writer.config import WriterSettings

    text = (REPO / ".env.example").read_text()
    for cls in (AggregatorSettings, CollectorSettings, DetectorSettings, WriterSettings):
        for field in msgspec.structs.fields(cls):
            assert f"{env_name(field.name)}=" in text, env_name(field.name)


def test_default_metrics_ports_never_collide() -> None:
    """``liq up`` runs every process on one host: each default Prometheus port is its own, and so
    are the spare ports of a consumer scaled out on that host."""
    from aggregator.cli import METRICS_PORT as AGGREGATOR
    from collectors.cli import METRICS_PORT_BASE
    from detector.config import METRICS_PORT as DETECTOR
    from shared.metrics import SPARE_PORTS
    from writer.cli import METRICS_PORT as WRITER

    consumers = [port + k for port in (DETECTOR, AGGREGATOR, WRITER) for k in range(SPARE_PORTS + 1)]
    ports = [METRICS_PORT_BASE + k for k in range(len(VENUE_NAMES))] + consumers
    assert len(set(ports)) == len(ports) == len(VENUE_NAMES) + 3 * (SPARE_PORTS + 1)
    assert max(ports[:len(VENUE_NAMES)]) < METRICS_PORT_BASE + 99


def _exposed_metric_names() -> set[str]:
    """Every series name the processes can expose (a counter ``x`` is ``x_total``, …)."""
    from prometheus_client import REGISTRY

    import shared.backlog
    import shared.metrics

    assert shared.backlog.STREAM_LAG is not None
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    return {family.name + suffix for family in REGISTRY.collect() if family.name.startswith("liq_")
            for suffix in suffixes.get(family.type, [""])}


def test_the_dashboard_asks_only_for_metrics_the_processes_expose() -> None:
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/liq.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bliq_[a-z_]+", expr)}
    exposed = _exposed_metric_names()
    assert used - exposed == set(), f"the dashboard asks for metrics nothing exposes: {used - exposed}"
    for must in ("liq_stream_lag", "liq_cascade_alert_seconds_bucket", "liq_venue_connected"):
        assert must in used


def test_prometheus_scrapes_every_process_on_its_port() -> None:
    from aggregator.cli import METRICS_PORT as AGGREGATOR
    from collectors import VENUES
    from collectors.cli import METRICS_PORT_BASE
    from detector.config import METRICS_PORT as DETECTOR
    from writer.cli import METRICS_PORT as WRITER

    scrape = (REPO / "deploy/prometheus.yml").read_text()
    compose = (REPO / "docker-compose.yml").read_text()
    collectors = re.findall(r'^  (collect-[a-z-]+): \{ <<: \*app, command: \["collect", "([a-z_]+)"\] \}',
                            compose, re.M)
    assert len(collectors) == len(VENUES)
    for service, venue in collectors:
        assert f"- {service}:{METRICS_PORT_BASE + list(VENUES).index(venue)}\n" in scrape, service
    detectors = re.findall(r"^  (detect-\d+):", compose, re.M)
    assert f"names: [{', '.join(detectors)}], type: A, port: {DETECTOR}" in scrape
    assert f"names: [aggregate], type: A, port: {AGGREGATOR}" in scrape
    assert f"names: [write], type: A, port: {WRITER}" in scrape
    for mounted in re.findall(r"\./(deploy/[\w./-]+?)(?::|\s|$)", compose):
        assert (REPO / mounted).exists(), mounted


def test_bootstrap_installs_the_programs_the_readme_finds_the_servers_with() -> None:
    """The README's redis-cli and psql lines read the servers' URLs from ``.liq/up.json`` with
    ``$(jq …)``: like the servers (whose packages bring redis-cli and psql), jq is installed by
    ``scripts/bootstrap`` with apt when it is missing."""
    shell, _ = our_redis_session()
    helpers = {word.removeprefix("$(").split()[0] for args in shell for word in args if word.startswith("$(")}
    assert helpers == {"jq"}
    bootstrap = (REPO / "scripts" / "bootstrap").read_text()
    for program in helpers:
        assert f"command -v {program} >/dev/null 2>&1 || apt_missing+=({program})" in bootstrap


def _readme_settings() -> dict[str, str]:
    """Each variable of the README's settings table, with its documented default (a row
    ``| `A` / `B` | 1 / 2 | … |`` documents A=1 and B=2)."""
    section = (REPO / "README.md").read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, str] = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        names = re.findall(r"`(LIQ_[A-Z0-9_]+)`", cells[0]) if len(cells) >= 3 else []
        defaults = [d.strip().strip("`") for d in cells[1].split(" / ")] if names else []
        for k, name in enumerate(names):
            documented[name] = defaults[k] if len(defaults) == len(names) else cells[1]
    return documented


def test_readme_documents_every_setting_with_its_default() -> None:
    import msgspec

    from aggregator.cli import AggregatorSettings
    from collectors.cli import CollectorSettings
    from detector.config import DetectorSettings
    from shared.settings import env_name
    from writer.config import WriterSettings

    documented = _readme_settings()
    for cls in (AggregatorSettings, CollectorSettings, DetectorSettings, WriterSettings):
        instance = cls()
        for field in msgspec.structs.fields(cls):
            name = env_name(field.name)
            assert name in documented, f"{name} is read but not in the README's settings table"
            default = getattr(instance, field.name)
            if isinstance(default, int | float) and re.fullmatch(r"[0-9.]+", documented[name]):
                assert float(documented[name]) == default, (name, documented[name], default)


def test_readme_gives_the_servers_that_a_process_run_alone_uses() -> None:
    """``liq collect``, ``detect``, ``aggregate``, ``write`` and ``migrate`` do not look for
    ``liq up``'s servers: without the variables they use these defaults, which the table says."""
    from shared.settings import CommonSettings

    documented = _readme_settings()
    assert documented["LIQ_REDIS_URL"] == CommonSettings().redis_url == "redis://127.0.0.1:6379/0"
    assert CommonSettings().pg_dsn == ""
    assert documented["LIQ_PG_DSN"].startswith("none (")


def test_the_list_of_setting_names_is_every_settings_field() -> None:
    """``SETTING_NAMES`` is what an unknown ``LIQ_*`` variable (a typo) is checked against."""
    import msgspec

    from aggregator.cli import AggregatorSettings
    from collectors.cli import CollectorSettings
    from detector.config import DetectorSettings
    from shared.settings import SETTING_NAMES, env_name
    from writer.config import WriterSettings

    classes = (AggregatorSettings, CollectorSettings, DetectorSettings, WriterSettings)
    fields = {env_name(f.name) for cls in classes for f in msgspec.structs.fields(cls)}
    assert fields == SETTING_NAMES


def test_the_liquidations_panel_counts_liquidations_and_the_new_series_are_shown() -> None:
    """liq_events_in_total{component="collector"} counts frames (pongs, acks, frames of several
    liquidations): the liquidations per venue are what the collectors publish."""
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/liq.json").read_text())
    panels = {panel["title"]: [t["expr"] for t in panel["targets"]] for panel in dashboard["panels"]}
    liquidations = [exprs for title, exprs in panels.items() if title.startswith("Liquidations received")]
    assert liquidations == [['sum by (sink) (rate(liq_events_out_total{component="collector"}[1m]))']]
    used = " ".join(e for exprs in panels.values() for e in exprs)
    for series in ("liq_collector_publish_seconds_bucket", "liq_events_dropped_total",
                   'liq_events_in_total{component="collector"}'):
        assert series in used, series


def test_an_installed_wheel_carries_the_migrations_the_writer_plans(tmp_path: Path) -> None:
    """``pip install .`` (not editable, as an image or a user would) must bring ``sql/``, as
    ``writer/sql`` (a top-level ``sql`` package would clash with PyPI's python-sql): the writer
    finds its migrations there, and there were none in an installed copy."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {p.split(".")[0] for p in setuptools["packages"]} | set(setuptools["package-dir"].values())
    for folder in sorted(folders):  # what the build reads, as pyproject.toml lists it
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                    str(source)], check=True, capture_output=True, cwd=tmp_path, timeout=120)
    [wheel] = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, cwd=tmp_path, timeout=120)
    probe = ("import json, writer.migrate as m; print(json.dumps([m.__file__, "
             "sorted(p.name for p in m.SQL_DIR.iterdir()), [x.filename for x in m.plan('native')]]))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=60).stdout
    module_file, installed, planned = json.loads(out)
    assert Path(module_file).is_relative_to(site)  # the installed copy, not the repository
    assert not (site / "sql").exists() and (site / "writer" / "sql").is_dir()
    assert installed == sorted(p.name for p in (REPO / "sql").glob("*.sql"))
    assert planned == [m.filename for m in plan("native", sql_dir=REPO / "sql")]


def test_a_missing_migrations_folder_is_an_error_not_an_empty_plan(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match=r"no migrations in .*nowhere"):
        plan("native", sql_dir=tmp_path / "nowhere")


def test_the_image_build_context_leaves_out_the_virtualenv_and_keeps_what_the_dockerfile_copies() -> None:
    """Without .dockerignore every compose build sent .venv (about 300 MB) and .liq to the daemon."""
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".liq", ".git", "tests", ".env"} <= ignored, ".env holds the DSN's password"
    copied = {part for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")
              for part in line.split()[1:-1]}
    assert copied == {"pyproject.toml", "constraints.txt", "README.md", "shared", "collectors", "detector",
                      "aggregator", "writer", "sql"}
    assert not [(path, pattern) for path in copied for pattern in ignored if fnmatch(path, pattern)]
