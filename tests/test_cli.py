from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from policies.cli import cli_actor
from serving.cli import main
from store import open_store
from tests.conftest import EXAMPLE, LiveServer


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append(prefix + (name,))
        if isinstance(command, click.Group):
            found += _commands(command, prefix + (name,))
    return found


@pytest.mark.parametrize("path", _commands(main), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    command: click.Command = main
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    assert command.help and command.help.strip()


def test_check_accepts_the_example_and_refuses_a_bad_file(tmp_path: Path) -> None:
    ok = CliRunner().invoke(main, ["check", "--config", str(EXAMPLE)])
    assert ok.exit_code == 0 and "OK — 52 actions" in ok.output
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("cost = 60.0", "cost = 'a lot'"))
    refused = CliRunner().invoke(main, ["check", "--config", str(bad)])
    assert refused.exit_code == 1
    assert "offers.renewal_discount.cost: Input should be a valid number" in refused.output


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("interval_seconds = inf", "joiner.interval_seconds: Input should be a finite number"),
        ("interval_seconds = 1e300", "joiner.interval_seconds: Input should be less than or equal to 604800"),
    ],
)
@pytest.mark.parametrize("command", [["check"], ["worker", "--store", "brein.db"]], ids=lambda c: c[0])
def test_a_config_time_that_is_not_finite_or_too_long_is_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], setting: str, said: str
) -> None:
    """It passed the check, then stopped the server's joiner for good (inf) or ended the worker with
    an OverflowError (1e300)."""
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("[joiner]", f"[joiner]\n{setting}"))
    monkeypatch.chdir(tmp_path)
    refused = CliRunner().invoke(main, [*command, "--config", str(bad)])
    assert refused.exit_code == 1 and said in refused.output, refused.output
    assert not (tmp_path / "brein.db").exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["simulate", "--days", "nan"], "Invalid value for '--days': 'nan' is not a finite number."),  # inf ran forever
        (["simulate", "--last-days", "nan"], "Invalid value for '--last-days': 'nan' is not a finite number."),  # nan shares
        (["simulate", "--days", "60", "--last-days", "90"], "--last-days: 90 days is more than the 60 simulated"),
        (["retention", "run", "--config", str(EXAMPLE), "--days", "nan"], "'--days': 'nan' is not a finite number."),
        (["outcome", "--customer", "c", "--type", "complaint", "--value", "-inf"], "'-inf' is not a finite number."),
        # It closed every open decision at once, for good: their outcomes could no longer be credited.
        (["join", "--config", str(EXAMPLE), "--until", "9999-12-31"], "'--until': 9999-12-31T00:00:00 is ahead of now"),
    ],
)
def test_a_number_option_refuses_what_is_not_a_finite_number_in_its_range(args: list[str], said: str) -> None:
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and said in refused.output, refused.output


@pytest.mark.parametrize("command", [["join"], ["log", "export"], ["retention", "run", "--days", "400"]], ids=" ".join)
@pytest.mark.parametrize("store", ["typo.db", "no-such-folder/brein.db"])
def test_a_command_on_an_existing_store_makes_none_where_there_is_none(tmp_path: Path, command: list[str], store: str) -> None:
    """A mistyped --store made an empty store (and its folder), and `log export` said "exported 0"."""
    refused = CliRunner().invoke(main, [*command, "--config", str(EXAMPLE), "--store", str(tmp_path / store)])
    assert refused.exit_code == 1 and f"no store at {tmp_path / store}: give --store" in refused.output, refused.output
    assert list(tmp_path.iterdir()) == []


def test_an_export_of_an_empty_store_is_an_empty_file(tmp_path: Path) -> None:
    """It said "exported 0 joined examples" and wrote no file, which the next step then did not find."""
    open_store(str(tmp_path / "brein.db")).close()
    exported = CliRunner().invoke(main, ["log", "export", "--config", str(EXAMPLE), "--store", str(tmp_path / "brein.db"),
                                         "-o", str(tmp_path / "log.dsjson")])  # fmt: skip
    assert exported.exit_code == 0 and "exported 0 joined examples" in exported.output, exported.output
    assert (tmp_path / "log.dsjson").read_text() == ""


@pytest.mark.parametrize(
    "command", [["policy", "register", "--kind", "uniform"], ["policy", "train"], ["policy", "tune", "--cut", "2026-06-01"]]
)
def test_an_id_the_registry_refuses_is_refused_before_any_work(command: list[str]) -> None:
    refused = CliRunner().invoke(main, [*command, "--config", str(EXAMPLE), "--store", "/nonexistent/brein.db", "--id", "a b"])
    assert refused.exit_code == 2
    assert "Invalid value for '--id': policy_id: expected 1-64 letters, digits, '_', '-' or '.', got 'a b'" in refused.output


@pytest.mark.parametrize(
    ("extra", "said"),
    [('"--clip_pp", "1"', "unrecognised option '--clip_pp'"), ('"--bag", "2"', "does not match output prediction type")],
    ids=["unknown", "conflicting"],
)
def test_check_refuses_learner_arguments_vw_does_not_take(tmp_path: Path, extra: str, said: str) -> None:
    """Such a config used to pass the check and fail only when a server bootstrapped its champion."""
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('extra_args = ["--clip_p", "0.1", "--elim"]', f"extra_args = [{extra}]"))
    refused = CliRunner().invoke(main, ["check", "--config", str(bad)])
    assert refused.exit_code == 1
    assert "learner: VW does not take --cb_explore_adf" in refused.output and said in refused.output


def test_tour_decide_outcome_activate_explain(live: LiveServer) -> None:
    runner = CliRunner()
    address = ["--address", live.address]
    decided = runner.invoke(main, ["decide", "--customer", "c1", "--channel", "app", "-n", "months_to_contract_end=2", "-c", "plan=basic",
                                   "--consent", "granted", "--at", "2026-05-30T10:00:00", "--json", *address])  # fmt: skip
    assert decided.exit_code == 0, decided.output
    decision = json.loads(decided.output)
    assert decision["policy_id"] == "champion" and decision["ranking"]
    table = runner.invoke(main, ["decide", "--customer", "c2", "--channel", "web", "--at", "2026-05-30T10:00:00", *address])
    assert table.exit_code == 0 and "probability" in table.output
    outcome = runner.invoke(main, ["outcome", "--customer", "c1", "--type", "contract_renewal", "--at", "2026-06-02T10:00:00", *address])
    assert outcome.exit_code == 0 and "contract_renewal worth 240" in outcome.output
    activated = runner.invoke(main, ["activate", decision["decision_id"], "--at", "2026-05-30T10:01:00", *address])
    assert activated.exit_code == 0 and f"activated {decision['decision_id']}" in activated.output
    explained = runner.invoke(main, ["explain", decision["decision_id"], *address])
    assert explained.exit_code == 0 and "Eligible" in explained.output and "months_to_contract_end" in explained.output


def test_client_errors_are_one_line_and_non_zero(live: LiveServer) -> None:
    result = CliRunner().invoke(main, ["decide", "--customer", "c1", "--channel", "fax", "--address", live.address])
    assert result.exit_code == 1
    assert "INVALID_ARGUMENT: channel: unknown touchpoint 'fax'" in result.output
    malformed = CliRunner().invoke(main, ["decide", "--customer", "c1", "--channel", "app", "-n", "tenure", "--address", live.address])
    assert malformed.exit_code == 2 and "expected NAME=VALUE" in malformed.output
    missing = CliRunner().invoke(main, ["explain", "nope", "--address", live.address])
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["decide", "--customer", "Jos\udce9", "--channel", "web"],
         "--customer: not valid UTF-8 (character 4)"),
        (["decide", "--customer", "c", "--channel", "web", "-c", "plan=\udcff"],
         "-c: not valid UTF-8 (character 6)"),
        (["outcome", "--customer", "c", "--type", "renew\udce9"], "--type: not valid UTF-8 (character 6)"),
        (["explain", "d\udce9"], "argument 'd\\udce9': not valid UTF-8 (character 2)"),
        (["forget", "--customer", "\udce9"], "--customer: not valid UTF-8 (character 1)"),
        (["policy", "retire", "m", "--config", "c.toml", "--reason", "caf\udce9"], "--reason: not valid UTF-8 (character 4)"),
        (["--api-key", "brein_\nkey", "explain", "d"],
         "Invalid value for '--api-key': an API key is printable ASCII; character 7 of 10"),
        (["--api-key", "sleutél", "explain", "d"],
         "Invalid value for '--api-key': an API key is printable ASCII; character 6 of 7"),
    ],  # fmt: skip
)
def test_a_client_argument_grpc_cannot_send_is_refused_before_calling(live: LiveServer, args: list[str], said: str) -> None:
    """An argument in another encoding than UTF-8 (it reaches Python as a lone surrogate) ended in a
    UnicodeEncodeError traceback; an API key with a newline or a non-ASCII character in gRPC's
    "INTERNAL: Invalid metadata" and its C-core trace lines."""
    refused = CliRunner().invoke(main, [*args, "--address", live.address])
    assert refused.exit_code == 2 and said in refused.output, refused.output
    assert "sleut" not in refused.output  # the key is a secret


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["serve", "--config", str(EXAMPLE), "--store", "postgresql://[::1"], "store URL 'postgresql://[::1': Invalid IPv6 URL"),
        (["policy", "list", "--config", str(EXAMPLE), "--store", "postgresql://[::1"], "Invalid IPv6 URL"),
        (["retention", "run", "--config", str(EXAMPLE), "--store", "never-made.db", "--days", "1e308"], "0<x<=36525.0"),
    ],
)
def test_a_store_url_no_parser_reads_or_a_retention_past_a_century_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], said: str
) -> None:
    """`serve` with an unclosed IPv6 address ended in a 49-line traceback; `retention run --days 1e308`
    printed a cutoff of -Infinity, which no JSON parser reads."""
    monkeypatch.chdir(tmp_path)
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code != 0 and said in refused.output and "Traceback" not in refused.output, refused.output
    assert not (tmp_path / "never-made.db").exists()


def test_a_login_name_that_is_not_utf8_acts_with_its_bytes_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `policy` command failed for a user whose login name was not UTF-8 (its actor is stored)."""
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "jos\udce9")
    assert cli_actor() == "cli:jos\\xe9"


def test_join_is_refused_while_a_worker_holds_the_lease(store_url: str) -> None:
    """`brein join` ran beside the worker's own joiner: on PostgreSQL both numbered a run alike and one
    failed on its key; and runs made by two joiners at once interleave, which online learning (in the
    order of runs) can pass by. Refused, saying why; joined once the worker is gone."""
    worker = open_store(store_url)
    try:
        assert worker.lease.try_acquire()
        refused = CliRunner().invoke(main, ["join", "--config", str(EXAMPLE), "--store", store_url])
        assert refused.exit_code == 1, refused.output
        assert "a worker holds the store's worker lease and joins it itself, every 2 s" in " ".join(refused.output.split())
        assert "to join by hand, stop the workers first" in " ".join(refused.output.split())
    finally:
        worker.close()
    joined = CliRunner().invoke(main, ["join", "--config", str(EXAMPLE), "--store", store_url, "--json"])
    assert joined.exit_code == 0, joined.output
    standby = open_store(store_url)
    try:
        assert standby.lease.try_acquire()  # `brein join` let the lease go when it ended
    finally:
        standby.close()
