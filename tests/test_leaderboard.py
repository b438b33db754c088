"""Leaderboard tables, markdown, HTML page and plots from hand-made result records."""
from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from wsbench.leaderboard import Stat, build_tables, config_labels, generate_leaderboard, version_key
from wsbench.leaderboard.html_page import page_counts
from wsbench.leaderboard.markdown import format_stat, render_markdown, table_grid
from wsbench.results import ResultRecord, append_records

RECON_HIB = {"acc_orig": True, "acc_recon": True, "acc_drop": False, "size_bytes": False}


def make(**overrides) -> ResultRecord:
    fields = dict(
        task="property_prediction", task_version=1, zoo="cnn_zoo", zoo_version="1", split="test", method="dwsnet",
        method_config={"lr": 0.001}, preset="quick", seed=0, metrics={"tau": 0.5, "mse": 1.0},
        higher_is_better={"tau": True, "mse": False}, status="ok", reason=None, n_train=10, n_eval=5, n_params=1000,
        wall_s=2.0, device="cpu (2 cores)", versions={"wsbench": "0.1.0"}, git_commit="abc",
        date="2025-01-01T00:00:00+00:00", command="run_bench.py run --method dwsnet", extra={},
    )
    fields.update(overrides)
    return ResultRecord.create(**fields)


def recon(method: str, member: str, acc: float, nbytes: float, seed: int = 0, **extra) -> ResultRecord:
    return make(task="reconstruction", zoo="cifar10_resnet", method=method, seed=seed, method_config=extra.pop("cfg", {}),
                metrics={"acc_orig": 91.0, "acc_recon": acc, "acc_drop": 91.0 - acc, "size_bytes": nbytes},
                higher_is_better=RECON_HIB, member=member, extra=extra, command=f"run_bench.py run --method {method}")


def sample_records() -> list[ResultRecord]:
    """A bit of everything: seeds, reconstruction curves, tau, INR accuracy, older and n/a records."""
    recs = [make(method=m, seed=s, metrics={"tau": base + 0.01 * s, "mse": 1 - base}) for m, base in
            (("dwsnet", 0.8), ("mlp", 0.4)) for s in range(3)]
    recs += [recon("nern", "resnet20", 85 + h / 64, 400 * h, cfg={"hidden": h}) for h in (32, 64, 128)]
    recs += [recon("magnitude_prune", "resnet20", 60 + 50 * b, 1e6 * b, label=f"magnitude_prune@{b:g}") for b in (0.1, 0.5)]
    recs += [recon("quantize", "resnet56", 80 + b, 2e5 * b, label=f"quantize@{b}") for b in (4, 8)]
    recs.append(make(task="reconstruction", zoo="cifar10_resnet", method="dwsnet", status="not_applicable",
                     reason="dwsnet is an encoder", metrics={}, higher_is_better={}))
    recs += [make(task="inr_classification", zoo="mnist_inr", method=m, seed=s, metrics={"accuracy": a + s / 100},
                  higher_is_better={"accuracy": True}) for m, a in (("dwsnet", 0.85), ("sne", 0.7)) for s in range(2)]
    recs.append(make(task_version=0, metrics={"tau": 0.99, "mse": 0.0}))
    return recs


def only_table(records):
    tables = build_tables(records)
    assert len(tables) == 1
    return tables[0]


def test_mean_std_over_seeds_and_seed_count():
    table = only_table([make(seed=s, metrics={"tau": v, "mse": 1.0}) for s, v in enumerate((0.80, 0.82, 0.84))])
    row = table.rows[0]
    assert row.seeds == (0, 1, 2)
    assert row.metrics["tau"].mean == pytest.approx(0.82)
    assert row.metrics["tau"].std == pytest.approx(0.02)  # sample std (ddof=1)
    cells = [c.text for c in table_grid(table).rows[0]]
    assert "0.820 ± 0.020" in cells and "3" in cells
    single = only_table([make(metrics={"tau": 0.5, "mse": 1.0})]).rows[0]
    assert single.metrics["tau"].std is None and format_stat(single.metrics["tau"]) == "0.500"


def test_rerun_seed_counts_once_with_newest_record():
    old = make(seed=0, metrics={"tau": 0.1, "mse": 1.0}, date="2025-01-01T00:00:00+00:00")
    new = make(seed=0, metrics={"tau": 0.3, "mse": 1.0}, date="2025-02-01T00:00:00+00:00")
    for order in ([old, new], [new, old]):
        row = only_table(order).rows[0]
        assert row.seeds == (0,) and row.metrics["tau"].mean == pytest.approx(0.3)


def test_best_marked_by_direction_ties_and_all_equal():
    hib = {"tau": True, "mse": False, "same": True}
    recs = [make(method=m, metrics={"tau": tau, "mse": mse, "same": 1.0}, higher_is_better=hib)
            for m, tau, mse in (("a", 0.9, 2.0), ("b", 0.5, 1.0), ("c", 0.9, 3.0))]
    table = only_table(recs)
    names = [r.method for r in table.rows]
    best = {m: {names[i] for i in idx} for m, idx in table.best().items()}
    assert best == {"tau": {"a", "c"}, "mse": {"b"}, "same": set()}
    md = render_markdown([table], [], "results", 3)
    assert "**0.900**" in md and "**1.00**" in md and "**3.00**" not in md and "**1.000**" not in md


def test_best_compared_within_each_member():
    recs = [recon("nern", "r20", 80.0, 100.0), recon("prune", "r20", 70.0, 100.0),
            recon("nern", "r56", 60.0, 100.0), recon("prune", "r56", 65.0, 100.0)]
    table = only_table(recs)
    best = {(table.rows[i].member, table.rows[i].method) for i in table.best()["acc_recon"]}
    assert best == {("r20", "nern"), ("r56", "prune")}
    assert table.best()["acc_orig"] == set()  # the same original network everywhere


def test_older_versions_are_listed_apart():
    recs = [make(task_version=2, metrics={"tau": 0.5, "mse": 1.0}), make(task_version=1, metrics={"tau": 0.9, "mse": 0.1}),
            make(task_version=2, zoo_version="1.9", metrics={"tau": 0.7, "mse": 1.0})]
    recs.append(make(task_version=2, zoo_version="1.10", metrics={"tau": 0.6, "mse": 1.0}))
    table = only_table(recs)
    assert (table.task_version, table.zoo_version) == (2, "1.10")  # 1.10 is newer than 1.9
    assert [r.metrics["tau"].mean for r in table.rows] == [pytest.approx(0.6)]
    assert sorted(r.metrics["tau"].mean for r in table.older_rows) == pytest.approx([0.5, 0.7, 0.9])
    assert table.best()["tau"] == set()  # one current row: nothing to compare
    md = render_markdown([table], [], "results", len(recs))
    current, older = md.split("### Older versions")
    assert "0.600" in current and "0.900" not in current and "0.900" in older and "**" not in older.split("<details>")[0]
    assert version_key("2") > version_key("1.10") > version_key("1.9")


def test_not_applicable_listed_with_reason():
    table = only_table([make(method="dwsnet"), make(method="nern", status="not_applicable", reason="NeRN reconstructs only",
                                                    metrics={}, higher_is_better={})])
    assert [r.status for r in table.rows] == ["ok", "not_applicable"]
    na = [c.text for c in table_grid(table).rows[1]]
    assert na.count("n/a") == 2 and "not applicable: NeRN reconstructs only" in na
    assert table.best()["tau"] == set()  # n/a rows never compete


def test_config_labels_from_label_diff_or_hash():
    recs = [make(method="nern", method_config={"hidden": h, "lr": 0.1}) for h in (32, 64)]
    recs.append(make(method="prune", method_config={"budgets": [0.1, 0.5]}, variant="prune@0.1"))
    recs.append(make(method="dwsnet", method_config={"x": 1}))
    recs += [make(method="big", method_config={"a_long_option_name": i, "another_long_option_name": i, "third": i}) for i in (1, 2)]
    labels = [config_labels(recs)[r.record_id] for r in recs]
    assert labels[:4] == ["hidden=32", "hidden=64", "prune@0.1", ""]
    assert re.fullmatch(r"config [0-9a-f]{8}", labels[4]) and labels[4] != labels[5]


def test_markdown_escapes_table_breaking_text():
    table = only_table([make(method="a", variant="x|y", command="cmd --a | tee log")])
    lines = [ln for ln in render_markdown([table], [], "results", 1).splitlines() if ln.startswith("| ")]
    assert len({len(re.findall(r"(?<!\\)\|", ln)) for ln in lines}) == 1  # every line has the same columns
    assert "x\\|y" in lines[-1]


def test_preset_descriptions_from_the_records_are_listed_under_the_table():
    old = make(preset="quick", extra={"preset_description": "old words"}, date="2025-01-01T00:00:00+00:00")
    new = make(preset="quick", seed=1, extra={"preset_description": "CPU schedule | 6,000 steps"},
               date="2025-02-01T00:00:00+00:00")
    paper = make(method="b", preset="paper", extra={"preset_description": "the paper's configuration"})
    same_name = make(method="b", preset="quick", extra={"preset_description": "b's own quick schedule"})
    bare = make(method="c", preset="cpu")  # a record made before descriptions were recorded
    text = render_markdown([only_table([old, new, paper, same_name, bare])], [], "results", 5)
    notes = text[text.index("Presets:\n"):].splitlines()
    assert notes[2:5] == ["- `b/paper`: the paper's configuration", "- `b/quick`: b's own quick schedule",
                          "- `dwsnet/quick`: CPU schedule \\| 6,000 steps"]
    assert "old words" not in text and "`cpu`:" not in text  # the newest description; none invented


def write_results(path: Path, records: list[ResultRecord]) -> Path:
    append_records(path, records)
    return path


EXPECTED_FILES = ["README.md", "index.html", "plots/accuracy_inr-classification-mnist-inr.png",
                  "plots/reconstruction_size_reconstruction-cifar10-resnet.png",
                  "plots/tau_property-prediction-cnn-zoo.png"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """sample_records() generated once into a folder: (folder, relative path -> bytes)."""
    out = tmp_path_factory.mktemp("leaderboard")
    files = generate_leaderboard(write_results(out / "results", sample_records()), out)
    return out, {p.relative_to(out).as_posix(): p.read_bytes() for p in files}


def test_regeneration_is_byte_identical(generated):
    out, first = generated
    assert sorted(first) == EXPECTED_FILES
    again = generate_leaderboard(out / "results", out)
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in again} == first
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_output_does_not_depend_on_record_order():
    recs = sample_records()
    forward, backward = build_tables(recs), build_tables(list(reversed(recs)))
    assert forward == backward
    assert render_markdown(forward, [], "results", 1) == render_markdown(backward, [], "results", 1)


def test_page_is_self_contained_and_plots_decode(generated):
    out, files = generated
    page = files["index.html"].decode("utf-8")
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "@import" not in page
    assert page_counts(page) == (4, 3, 3)  # 3 boards + 1 older table, 3 plots
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == 3
    for uri in uris:
        image = Image.open(io.BytesIO(base64.b64decode(uri)))
        image.load()
        assert image.width > 300 and image.height > 200
        assert base64.b64decode(uri) in files.values()  # the same bytes as plots/*.png
        assert "Software" not in image.info
    md = files["README.md"].decode("utf-8")
    for name in EXPECTED_FILES[2:]:
        assert f"]({name})" in md
    assert "run_bench.py run --method nern" in md and "<details>" in md and "not applicable: dwsnet is an encoder" in md


def test_stale_plots_are_removed(tmp_path):
    results = write_results(tmp_path / "results", [make(), make(task="inr_classification", metrics={"accuracy": 0.5},
                                                            higher_is_better={"accuracy": True})])
    generate_leaderboard(results, tmp_path)  # a leaderboard of two tables, two plots
    assert len(list((tmp_path / "plots").iterdir())) == 2
    (results / "inr_classification.jsonl").unlink()
    generate_leaderboard(results, tmp_path)  # the table is gone: so is its plot
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["tau_property-prediction-cnn-zoo.png"]


def test_performance_and_parity_reports_are_linked_with_their_figures(tmp_path):
    results = write_results(tmp_path / "results", [make()])
    (tmp_path / "perf").mkdir()
    (tmp_path / "perf" / "scale_cpu.md").write_text("# Scale curves: time and memory\n\nbody\n")
    (tmp_path / "perf" / "scale_cpu.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "perf" / "cpu.md").write_text("no heading\n")
    (tmp_path / "parity").mkdir()
    (tmp_path / "parity" / "x.md").write_text("# X parity\n")
    generate_leaderboard(results, tmp_path)
    md, page = (tmp_path / "README.md").read_text(), (tmp_path / "index.html").read_text()
    assert "- [cpu](perf/cpu.md)" in md and "- [Scale curves: time and memory](perf/scale_cpu.md)" in md
    assert "![Scale curves: time and memory](perf/scale_cpu.png)" in md and "- [Performance](#performance)" in md
    assert "- [X parity](parity/x.md)" in md
    assert 'href="perf/scale_cpu.md"' in page and 'src="perf/scale_cpu.png"' in page
    assert page_counts(page)[1] == 1  # the figure is not counted as a leaderboard plot
    assert (tmp_path / "perf" / "scale_cpu.md").read_text().startswith("# Scale")  # never touched


@pytest.mark.parametrize("create_dir", [True, False])
def test_empty_results_give_a_page_that_says_so(tmp_path, create_dir):
    if not create_dir:  # a missing folder is a typo, not "no records": refused, nothing written
        from wsbench.errors import DataError

        with pytest.raises(DataError, match="not a folder of result records"):
            generate_leaderboard(tmp_path / "results", tmp_path)
        assert not list(tmp_path.iterdir())
        return
    (tmp_path / "results").mkdir()
    written = generate_leaderboard(tmp_path / "results", tmp_path)
    assert sorted(p.name for p in written) == ["README.md", "index.html"]
    assert "No result records yet" in (tmp_path / "README.md").read_text(encoding="utf-8")
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert 'id="empty"' in page and page_counts(page) == (0, 0, 0)


def test_format_stat():
    assert format_stat(Stat(91.234, 0.4123, 3)) == "91.23 ± 0.41"
    assert format_stat(Stat(270000.0, 0.0, 2), integer=True) == "270,000"
    assert format_stat(Stat(0.00123, 0.0001, 2)) == "0.00123 ± 0.0001"
    assert format_stat(Stat(-0.5, None, 1)) == "-0.500"


def test_plot_choice_and_zoo_variants_apart():
    from wsbench.leaderboard.plots import make_plots

    recs = [make(method=m, metrics={"test_acc_tau": t, "test_acc_r2": t / 2}, higher_is_better={"test_acc_tau": True,
            "test_acc_r2": True}, zoo_variant=v) for m, t in (("a", 0.5), ("b", 0.7)) for v in ("full", "tiny")]
    tables = build_tables(recs)
    assert [(t.zoo_variant, t.title) for t in tables] == [("full", "property_prediction · cnn_zoo"),
                                                          ("tiny", "property_prediction · cnn_zoo [tiny]")]
    plots = make_plots(tables)  # tau bars only: test_acc_* are not classification accuracies
    assert [p.filename for p in plots] == ["tau_property-prediction-cnn-zoo-full.png",
                                           "tau_property-prediction-cnn-zoo-tiny.png"]


def test_a_column_shares_its_decimals():
    table = only_table([make(method=m, metrics={"tau": v, "mse": 1.0}) for m, v in (("a", 66.2), ("b", 0.5), ("c", 0.0))])
    grid = table_grid(table)
    col = [h.text for h in grid.headers].index("tau ↑")
    assert [row[col].text for row in grid.rows] == ["66.20", "0.50", "0.00"]
    assert [row[col].bold for row in grid.rows] == [True, False, False]


def test_rows_scored_on_different_item_counts_are_kept_apart_and_labelled():
    recs = [make(seed=s, n_eval=n, metrics={"tau": 0.5 + s / 100, "mse": 1.0}) for n in (2000, 10000) for s in range(2)]
    table = only_table(recs)
    assert sorted(r.n_eval for r in table.rows) == [2000, 10000] and all(len(r.seeds) == 2 for r in table.rows)
    grid = table_grid(table)
    col = [c.text for c in grid.headers].index("Scored")
    assert sorted(row[col].text for row in grid.rows) == ["10,000", "2,000"]
    same = table_grid(only_table([make(seed=s) for s in range(2)]))
    assert "Scored" not in [c.text for c in same.headers]  # shown only where rows differ


def test_not_applicable_rows_do_not_add_a_scored_column():
    recs = [make(seed=s, n_eval=9) for s in range(2)]
    recs.append(make(method="mlp", status="not_applicable", reason="cannot read d4w32", metrics={},
                     higher_is_better={}, n_eval=0))
    assert "Scored" not in [c.text for c in table_grid(only_table(recs)).headers]


def test_records_on_a_zoo_version_older_than_its_card_are_flagged_stale():
    import wsbench.builtins  # noqa: F401  (registers the zoo cards)
    from wsbench.registry import ZOOS

    card_v = ZOOS.get("siren_mnist").version
    old = only_table([make(task="inr_classification", zoo="siren_mnist", zoo_version="1.0", metrics={"accuracy": 0.2},
                           higher_is_better={"accuracy": True})])
    assert old.card_version == card_v and old.stale
    assert f"STALE: the zoo card is now v{card_v}" in render_markdown([old], [], "results", 1)
    now = only_table([make(task="inr_classification", zoo="siren_mnist", zoo_version=card_v, metrics={"accuracy": 0.2},
                           higher_is_better={"accuracy": True})])
    assert not now.stale and "STALE" not in render_markdown([now], [], "results", 1)
    assert only_table([make(zoo="no_such_card")]).card_version is None


def test_title_names_the_entry_question_when_it_is_not_the_task_name():
    from dataclasses import replace

    table = build_tables([make()])[0]
    assert replace(table, benchmark="gen_gap_prediction-cnn_zoo").title.startswith("gen_gap_prediction · ")
    assert replace(table, benchmark=f"{table.task}-cnn_zoo").title == replace(table, benchmark=None).title


def test_runs_on_a_subset_of_the_zoo_get_their_own_rows():
    """A zoo-size study (task.max_train) is not merged into the full-zoo row; a record without the
    option counts as the full zoo."""
    recs = [make(seed=s, task_config={"max_train": n} if n is not None else {}, metrics={"tau": t, "mse": 1.0})
            for s in (0, 1) for n, t in ((None, 0.7), (100, 0.6))]
    (table,) = build_tables(recs)
    assert sorted((row.config, row.metrics["tau"].mean) for row in table.rows) == [
        ("task.max_train=0", pytest.approx(0.7)), ("task.max_train=100", pytest.approx(0.6))]


def transfer(method: str, train: str, scored: str, tau: float, seed: int = 0) -> ResultRecord:
    return make(task="cross_dataset", zoo=train, method=method, seed=seed, member=scored,
                metrics={"tau": tau, "r2": tau / 2}, higher_is_better={"tau": True, "r2": True},
                task_config={"eval_zoo": ["small_cnn_a", "small_cnn_b"]}, command=f"run_bench.py run --method {method}")


def test_transfer_matrix_rows_train_zoos_columns_eval_zoos_and_counts_wins(tmp_path):
    from wsbench.leaderboard.matrix import build_matrices
    from wsbench.leaderboard.markdown import matrix_grid

    taus = {("sne", "small_cnn_a"): (0.9, 0.30), ("sne", "small_cnn_b"): (0.50, 0.8),
            ("statnn", "small_cnn_a"): (0.8, 0.40), ("statnn", "small_cnn_b"): (0.20, 0.8)}
    recs = [transfer(m, train, scored, tau + seed / 100, seed) for (m, train), row in taus.items()
            for scored, tau in zip(("small_cnn_a", "small_cnn_b"), row) for seed in range(2)]
    recs.append(make(seed=5))  # another task: no matrix
    (matrix,) = build_matrices(build_tables(recs))
    assert matrix.zoos == ("small_cnn_a", "small_cnn_b") and matrix.short_names["small_cnn_b"] == "b"
    assert [(r.train_zoo, r.method) for r in matrix.rows] == [("small_cnn_a", "sne"), ("small_cnn_a", "statnn"),
                                                             ("small_cnn_b", "sne"), ("small_cnn_b", "statnn")]
    assert matrix.rows[0].cells["small_cnn_b"].mean == pytest.approx(0.305) and matrix.rows[0].cells["small_cnn_b"].n == 2
    # statnn wins a -> b (0.40 > 0.30), sne wins b -> a (0.50 > 0.20); the diagonal ties at b are not bold
    assert matrix.transfer_wins() == {"sne": (1, 2), "statnn": (1, 2)}
    grid = matrix_grid(matrix)
    assert [c.text for c in grid.headers][-2:] == ["→ a", "→ b"]
    bold = {(row[0].text, row[1].text, j) for row in grid.rows for j, c in enumerate(row) if c.bold}
    assert bold == {("a", "sne", 3), ("a", "statnn", 4), ("b", "sne", 3)}

    append_records(tmp_path / "results", recs)
    generate_leaderboard(tmp_path / "results", tmp_path / "board")
    readme = (tmp_path / "board" / "README.md").read_text(encoding="utf-8")
    assert "## cross_dataset matrix · full zoos" in readme and "sne 1 of 2, statnn 1 of 2" in readme
    page = (tmp_path / "board" / "index.html").read_text(encoding="utf-8")
    assert 'id="matrix-cross-dataset-full"' in page and "table class=\"leaderboard matrix\"" in page


def test_transfer_matrix_skips_records_without_an_eval_zoo_member():
    from wsbench.leaderboard.matrix import build_matrices

    recs = [transfer("sne", "small_cnn_a", "small_cnn_b", 0.3)]
    recs.append(make(task="cross_dataset", zoo="small_cnn_a", method="mlp", metrics={"tau": 0.2},
                     higher_is_better={"tau": True}))  # an older record: its eval zoo only in extra
    (matrix,) = build_matrices(build_tables(recs))
    assert [r.method for r in matrix.rows] == ["sne"]
    assert build_matrices(build_tables([make()])) == []
