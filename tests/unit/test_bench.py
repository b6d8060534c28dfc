"""The pure parts of ``kubenet bench``: parsing wrk, iperf3 and /proc/net output captured
from real runs in a lab (tests/unit/data/bench), statistics, figures, summary, table."""

import json
from pathlib import Path

import pytest

from kubenet import bench
from kubenet.bench import (
    Run,
    Settings,
    Stat,
    counter_delta,
    figures,
    format_table,
    paired_ratios,
    parse_duration_ms,
    parse_iperf3,
    parse_proc_net,
    parse_wrk,
    reuse_figures,
    split_sections,
    summary,
    syn_retrans_pct,
)
from kubenet.scale import Point

DATA = Path(__file__).parent / "data" / "bench"


def read(name: str) -> str:
    return (DATA / name).read_text()


# -- wrk ------------------------------------------------------------------------------
@pytest.mark.parametrize("text,ms", [("524.00us", 0.524), ("2.84ms", 2.84), ("1.02s", 1020.0),
                                     ("2.00m", 120_000.0), ("0.00us", 0.0)])
def test_wrk_durations(text, ms):
    assert parse_duration_ms(text) == pytest.approx(ms)


def test_wrk_duration_rejects_other_text():
    with pytest.raises(ValueError):
        parse_duration_ms("fast")


def test_wrk_new_connection_per_request():
    result = parse_wrk(read("wrk-close.txt"))
    assert result.requests == 2405
    assert result.duration_s == pytest.approx(2.07)
    assert result.requests_per_s == pytest.approx(1159.55)
    assert (result.p50_ms, result.p75_ms, result.p90_ms, result.p99_ms) == \
        pytest.approx((4.24, 7.79, 11.79, 36.89))
    assert result.errors == {} and result.non_2xx == 0 and result.error_count == 0


def test_wrk_keepalive_with_microsecond_median():
    result = parse_wrk(read("wrk-keepalive.txt"))
    assert result.requests == 13665
    assert result.requests_per_s == pytest.approx(6799.56)
    assert result.p50_ms == pytest.approx(0.538)
    assert result.p99_ms == pytest.approx(10.98)


def test_wrk_counts_non_2xx_responses_as_errors():
    result = parse_wrk(read("wrk-404.txt"))
    assert result.non_2xx == result.requests == 8689
    assert result.error_count == 8689


def test_wrk_socket_errors():
    result = parse_wrk(read("wrk-errors.txt"))
    assert result.requests == 0
    assert result.errors == {"connect": 0, "read": 4215, "write": 2006, "timeout": 0}
    assert result.error_count == 6221


def test_wrk_that_never_ran_is_an_error_with_its_message():
    with pytest.raises(ValueError, match="Connection refused"):
        parse_wrk(read("wrk-refused.txt"))


def test_wrk_without_latency_distribution_is_refused():
    text = read("wrk-close.txt").replace("Latency Distribution", "Something else")
    with pytest.raises(ValueError, match="--latency"):
        parse_wrk(text)


# -- iperf3 -----------------------------------------------------------------------------
def test_iperf3_receiver_throughput():
    result = parse_iperf3(read("iperf3.json"))
    assert result.bits_per_second == pytest.approx(4493509203.47323)
    assert result.gbit_per_s == pytest.approx(4.4935, rel=1e-4)
    assert result.retransmits == 2
    assert result.seconds == pytest.approx(1.023255)


def test_iperf3_error_is_raised():
    with pytest.raises(ValueError, match="Connection refused"):
        parse_iperf3(read("iperf3-refused.json"))


def test_iperf3_without_json():
    with pytest.raises(ValueError, match="no JSON"):
        parse_iperf3("iperf3: error - unable to connect")


# -- /proc/net counters and the tool script ------------------------------------------------
def test_tool_script_sections_and_counters():
    parts = split_sections(read("tool-script.txt"))
    assert set(parts) == {"before", "out", "after"}
    wrk = parse_wrk(parts["out"])
    before, after = parse_proc_net(parts["before"]), parse_proc_net(parts["after"])
    assert "TcpExt:TCPSynRetrans" in before and "Tcp:ActiveOpens" in before
    assert "Ip:Forwarding" in before and "IpExt:InOctets" in before
    opens = counter_delta(before, after, "Tcp:ActiveOpens")
    # wrk opens one connection per request with Connection: close (plus the last ones)
    assert wrk.requests <= opens <= wrk.requests + 16
    assert counter_delta(before, after, "TcpExt:TCPSynRetrans") == 0


def test_proc_net_pairs_only_matching_lines():
    text = ("Tcp: RtoAlgorithm ActiveOpens\nTcp: 1 42\nUdp: InDatagrams\nUdp: 7\n"
            "TcpExt: SyncookiesSent TCPSynRetrans\nTcpExt: 0 3\n")
    assert parse_proc_net(text) == {"Tcp:RtoAlgorithm": 1, "Tcp:ActiveOpens": 42,
                                    "Udp:InDatagrams": 7, "TcpExt:SyncookiesSent": 0,
                                    "TcpExt:TCPSynRetrans": 3}
    assert counter_delta({}, {"a": 2}, "a") == 2
    assert syn_retrans_pct(38, 100) == 38.0 and syn_retrans_pct(3, 0) == 0.0


# -- statistics --------------------------------------------------------------------------
def test_stat_median_and_spread():
    stat = Stat.of([3.0, 1.0, 2.0, 10.0])
    assert (stat.median, stat.low, stat.high, stat.n) == (2.5, 1.0, 10.0, 4)
    assert stat.spread_pct == pytest.approx(360.0)
    assert Stat.of([]) is None
    assert Stat.of([None, 4]).median == 4.0


def runs_for(mode: str, kind: str, direct: list[float], service: list[float], **kw) -> list[Run]:
    out = []
    for rep, (d, s) in enumerate(zip(direct, service, strict=True)):
        out.append(Run(mode=mode, path="direct", kind=kind, rep=rep, value=d, **kw))
        out.append(Run(mode=mode, path="service", kind=kind, rep=rep, value=s, **kw))
    return out


def sample_runs() -> list[Run]:
    http = {"p50_ms": 1.0, "p99_ms": 5.0, "requests": 4000, "active_opens": 4000}
    runs = runs_for("iptables", "close", [1000, 2000, 1500], [950, 1800, 1500],
                    syn_retrans=0, **http)
    runs += runs_for("userspace", "close", [1000, 1200, 1100], [400, 420, 330],
                     syn_retrans=40, **http)
    runs += runs_for("iptables", "keepalive", [8000, 8000, 8000], [7200, 8000, 7600], **http)
    runs += runs_for("userspace", "keepalive", [8000, 8000, 8000], [4000, 4000, 4000], **http)
    runs += runs_for("nftables", "close", [1000, 2000, 1500], [1000, 1900, 1400],
                     syn_retrans=0, **http)
    runs += runs_for("iptables", "bulk", [4.0, 5.0, 4.5], [4.0, 4.5, 4.5])
    runs += runs_for("userspace", "bulk", [4.0, 5.0, 4.5], [1.0, 1.0, 1.0])
    return runs


def test_ratios_pair_the_runs_of_one_repetition():
    runs = sample_runs()
    assert paired_ratios(runs, "iptables", "close") == pytest.approx([0.95, 0.9, 1.0])
    assert paired_ratios(runs, "nftables", "close") == pytest.approx([1.0, 0.95, 14 / 15])
    assert paired_ratios(runs, "nftables", "bulk") == []
    # A repetition without its partner is left out
    lone = [r for r in runs if not (r.rep == 2 and r.path == "direct")]
    assert paired_ratios(lone, "iptables", "close") == pytest.approx([0.95, 0.9])


def test_figures_have_name_value_unit_settings_for_every_mode():
    runs = sample_runs()
    figs = figures(runs, {"method": {"reps": 3}, "close": {"tool": "wrk"}},
                   up_samples=[0.5, 0.7, 0.6])
    by = {f["name"]: f for f in figs}
    for f in figs:
        assert {"name", "value", "unit", "settings"} <= set(f)
        json.dumps(f)
    assert by["close.requests_per_s.direct"]["value"] == 1200  # all nine direct runs
    assert by["close.requests_per_s.iptables"]["value"] == 1500
    assert by["close.requests_per_s.ratio.iptables"]["value"] == 0.95
    assert by["close.requests_per_s.ratio.iptables"]["unit"] == "x direct"
    assert by["close.requests_per_s.userspace"]["syn_retrans_pct"] == 1.0
    assert by["close.requests_per_s.iptables"]["settings"]["tool"] == "wrk"
    assert by["close.requests_per_s.iptables"]["settings"]["reps"] == 3
    assert by["bulk.throughput.ratio.userspace"]["value"] == pytest.approx(0.2222, rel=1e-3)
    assert by["close.requests_per_s.ratio.nftables"]["value"] == 0.95
    assert "nftables" in by["close.requests_per_s.nftables"]["settings"]["target"]
    # a kind a mode did not run is null, not zero
    assert by["bulk.throughput.nftables"]["value"] is None
    assert not any("note" in f for f in figs)
    assert by["lab.up_article_s"]["value"] == 0.6 and by["lab.up_article_s"]["n"] == 3


def test_summary_is_last_and_holds_the_headline_keys():
    runs = sample_runs()
    points = [Point("iptables", n, sync, 0.1, connect={"last": {"median_us": us}})
              for n, sync, us in ((100, 0.05, 100.0), (10000, 40.0, 400.0))]
    points.append(Point("nftables", 100, 0.04, 0.1, connect={"last": {"median_us": 90.0}}))
    summ = summary(runs, [0.5, 0.7, 0.6], [0.08, 0.06, 0.07], points, quick=True)
    assert summ["up_article_s"] == 0.6 and summ["trace_s"] == 0.07
    assert summ["ratio_iptables_direct"] == 0.95
    assert summ["ratio_userspace_direct"] == 0.35
    assert summ["ratio_nftables_direct"] == 0.95
    assert summ["growth_iptables_10k"] == 4.0 and summ["sync_iptables_10k_s"] == 40.0
    for key in ("growth_nftables_10k", "sync_nftables_10k_s"):
        assert key in summ and summ[key] is None and key in summ["not_measured"]
    assert "growth_iptables_10k" not in summ["not_measured"]
    assert summ["ratio_iptables_direct_bulk"] == 1.0
    assert summ["syn_retrans_pct_max"] == {"direct": 1.0, "iptables": 0.0, "nftables": 0.0,
                                           "userspace": 1.0}
    assert summ["quick"] is True
    json.dumps(summ)


def reuse_runs() -> list[dict]:
    def run(series, path, opens, syn, nat):
        return {"series": series, "path": path, "requests_per_s": opens / 3, "requests": opens,
                "active_opens": opens, "syn_retrans": syn, "paws_timewait": syn,
                "src_nat_direct": nat if path == "direct" else 0,
                "src_nat_service": nat if path == "service" else 0}
    return [run("same-path", "service", 3000, 0, 0), run("same-path", "service", 3000, 0, 0),
            run("direct-first", "direct", 3000, 0, 0),
            run("direct-first", "service", 3000, 90, 512)]


def test_reuse_figures_keep_every_run_in_order():
    figs = reuse_figures(reuse_runs(), {"tool": "wrk"})
    by = {f["name"]: f for f in figs}
    syn = by["reuse.direct-first.syn_retrans_pct.service"]
    assert syn["value"] == 3.0 and syn["unit"] == "%"
    assert syn["server_paws_timewait"] == [90] and syn["conntrack_src_nat"] == [512]
    assert syn["settings"]["order"] == ["direct", "service"]
    assert by["reuse.same-path.requests_per_s.service"]["runs"] == [1000, 1000]
    assert "reuse.same-path.requests_per_s.direct" not in by


def test_table_shows_every_path():
    runs = sample_runs()
    figs = figures(runs, {}, up_samples=[0.6]) + reuse_figures(reuse_runs(), {})
    table = format_table(figs, summary(runs, [0.6]))
    lines = table.splitlines()
    assert "direct (pod IP)" in lines[1] and "nftables" in lines[1] and "userspace" in lines[1]
    row = next(x for x in lines if x.startswith("new connection per request"))
    assert "1,200 [1,000-2,000]" in row and "400 [330-420]" in row
    assert "1,400 [1,000-1,900]" in row and "not measured" not in table
    assert any(x.strip().startswith("ratio to direct") and "0.95x" in x for x in lines)
    assert "kubenet up --scenario article: 0.600" in table
    assert "PR #16344" in table and "userspace 0.36x" in table
    assert "direct-first  service req/s 1,000" in table
    assert "SYN retransmits % 3.0; server PAWS drops 90; node1 rewritten ports 512" in table
    assert table.splitlines()[-1].startswith("summary: up_article_s 0.6")


# -- settings and tool command lines -------------------------------------------------------
def test_settings_full_and_quick_follow_the_method():
    full, quick = Settings.for_run(False), Settings.for_run(True)
    assert full.reps >= 5 and full.reps % 2 == 0  # ABBA: each order as often
    assert full.min_connections >= 2000
    assert quick.reps < full.reps and quick.min_connections < full.min_connections
    assert Settings.for_run(True, reps=4).reps == 4


def test_tool_command_lines():
    b = bench.Bench(Settings.for_run(False), name="bench-test")
    close = b.wrk_argv("close", "http://10.3.241.152:80/", 4)
    assert close == ("wrk -t1 -c8 -d4s --latency --timeout 5s -H 'Connection: close' "
                     "http://10.3.241.152:80/")
    assert "Connection" not in b.wrk_argv("keepalive", "http://x/", 3)
    assert b.iperf_argv("10.0.2.3") == ("iperf3 -c 10.0.2.3 -p 5201 -t 3 -J "
                                        "--connect-timeout 3000 -O 1")
    # up runs, the lab, 3 modes x 6 reps x 2 paths x 3 kinds, the reuse series, trace and
    # diagram, 4 sizes x 2 modes of scale, 3 pod counts
    assert b.steps() == 5 + 1 + 3 * 6 * 2 * 3 + 3 + 6 + 6 + 6 + 2 + 8 + 3


def test_default_out_keeps_quick_runs_apart():
    assert bench.default_out(False).parts[-2:] == ("bench", "results")
    assert bench.default_out(True).parts[-3:] == ("bench", "results", "quick")


def test_plots_are_written_as_png_and_svg(tmp_path):
    pytest.importorskip("matplotlib")
    runs = sample_runs()
    figs = figures(runs, {}, up_samples=[0.6]) + reuse_figures(reuse_runs(), {})
    written = bench.write_plots(figs, reuse_runs(), tmp_path, "test")
    names = sorted(p.name for p in written)
    assert names == ["datapath.png", "datapath.svg", "latency.png", "latency.svg",
                     "port_reuse.png", "port_reuse.svg"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_results_files(tmp_path):
    runs = sample_runs()
    figs = figures(runs, {}, up_samples=[0.6])
    summ = summary(runs, [0.6])
    bench.write_results(tmp_path, [*figs, summ], format_table(figs, summ), "kubenet bench",
                        {"cpu": "AMD EPYC", "cores": 2, "kernel": "6.1"}, 12.0, reuse_runs(),
                        runs)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["name"] == "summary"
    assert len(lines) == len(figs) + 1
    readme = (tmp_path / "README.md").read_text()
    assert "AMD EPYC, 2 cores" in readme and "PAWS" in readme
    assert json.loads((tmp_path / "runs.json").read_text())["runs"][0]["mode"] == "iptables"


def test_progress_without_tqdm_prints_plain_lines(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)
    progress = bench.Progress(2)
    assert progress.bar is None
    progress.step("iptables close direct: 3,000 req/s")
    progress.note("building lab")
    progress.close()
    err = capsys.readouterr().err.splitlines()
    assert err == ["[1/2] iptables close direct: 3,000 req/s", "[1/2] building lab"]


def test_command_line_has_bench():
    from kubenet.cli import build_parser

    args = build_parser().parse_args(["bench", "--json", "--quick", "--out", "/tmp/x"])
    assert args.func.__name__ == "cmd_bench"
    assert (args.json, args.quick, args.out, args.reps, args.no_plots) == \
        (True, True, "/tmp/x", None, False)
