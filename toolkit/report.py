"""The claims report: every claim of ``CLAIMS.md``, one verdict table, from results only.

``toolkit report`` reads ``results/<experiment>/<profile>/`` (verdicts, summary and
meta.json) for every experiment and writes ``results/REPORT.md`` and
``results/REPORT.html`` (the same content, figures shown inline). Nothing is trained
and nothing time-dependent is written, so the same results give the same bytes.

A claim's row is its one pre-declared primary test (:mod:`toolkit.claimtests`): the
estimate with its 95% CI, seeds used of planned, the raw and Holm-adjusted p-value
(the primaries of all experiments are one family) and the verdict the adjusted p-value
decides, with the figure that shows it. Secondary rows are exploratory and never vote;
checks (deterministic computations) are shown apart, without intervals. A claim no
experiment has results for says ``not run``; a claim the claims file marks
not-testable says so. Then one section per experiment: provenance (profile, seeds,
commit, machine, wall time), its primary, secondary and check rows, and the figures. Result folders named ``<profile>-<tag>`` beside ``<profile>`` (the
same command on other hardware, e.g. ``default-h200``) are compared with
:mod:`toolkit.compare` in a section of their own.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from toolkit import claimtests, runner, spec
from toolkit import compare as cmp
from toolkit.results import ResultsError, ResultsFolder, atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent
CLAIMS_FILE = ROOT / "CLAIMS.md"
CLAIM_ROW = re.compile(r"^\| (C\d\d) \| (.*?) \| (.*) \|$")


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    hypothesis: str

    @property
    def testable(self) -> bool:
        return not self.hypothesis.lower().startswith("not-testable")


def read_claims(path: Path | str = CLAIMS_FILE) -> list[Claim]:
    """The claims table of ``CLAIMS.md`` (rows ``| Cnn | statement | hypothesis |``)."""
    claims = []
    for line in Path(path).read_text().splitlines():
        match = CLAIM_ROW.match(line.strip())
        if match:
            claims.append(Claim(*match.groups()))
    if not claims:
        raise ValueError(f"{path}: no claim rows (| C01 | ... | ... |) found")
    return claims


# ----- a tiny document model rendered to both Markdown and HTML -------------------
@dataclass
class Doc:
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("t", header, rows))

    def images(self, items: list[tuple[str, str]]) -> None:
        self.blocks.append(("i", items))

    def markdown(self) -> str:
        out = []
        for block in self.blocks:
            if block[0] == "h":
                out.append("#" * block[1] + " " + block[2])
            elif block[0] == "p":
                out.append(block[1])
            elif block[0] == "t":
                header, rows = block[1], block[2]
                lines = [_md_row(header), "|" + "|".join("---" for _ in header) + "|"]
                out.append("\n".join(lines + [_md_row(r) for r in rows]))
            else:
                out.append("\n".join(f"![{alt}]({src})" for alt, src in block[1]))
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [
            "<!DOCTYPE html>",
            '<html><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
            "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;"
            "padding:3px 6px;vertical-align:top}img{max-width:520px;margin:4px}</style>",
            "</head><body>",
        ]
        for block in self.blocks:
            if block[0] == "h":
                out.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
            elif block[0] == "p":
                out.append(f"<p>{_inline(block[1])}</p>")
            elif block[0] == "t":
                head = "".join(f"<th>{_inline(c)}</th>" for c in block[1])
                body = "".join(
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                    for row in block[2]
                )
                out.append(f"<table><tr>{head}</tr>{body}</table>")
            else:
                out.append(
                    "<div>"
                    + "".join(
                        f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'
                        for alt, src in block[1]
                    )
                    + "</div>"
                )
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _inline(text: str) -> str:
    """The Markdown subset used here (`code`, **bold**, [link](href)) as HTML."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text)


# ----- gathering results ---------------------------------------------------------
@dataclass
class ExperimentResults:
    experiment: spec.Experiment
    folder: ResultsFolder
    verdicts: pd.DataFrame
    figures: list[Path]


def _num(x: float) -> str:
    return "—" if pd.isna(x) else f"{x:.3g}"


def _p(x: float) -> str:
    if pd.isna(x):
        return "—"
    return "< 1e-4" if x < 1e-4 else f"{x:.2g}"


def gather(results: Path, profile: str) -> list[ExperimentResults]:
    found = []
    for name in spec.experiment_names():
        folder = ResultsFolder(results / name / profile)
        if not (folder.path / "verdicts.csv").exists():
            continue
        verdicts = folder.verdicts()
        for column in ("condition", "reason", "excluded"):
            if column in verdicts:
                verdicts[column] = verdicts[column].astype(object).fillna("").astype(str)
        fig_dir = results.parent / "paper_figures" / name / profile
        figures = sorted(fig_dir.glob("*.png"))
        found.append(ExperimentResults(spec.load(name), folder, verdicts, figures))
    adjusted = claimtests.adjust_family({f.experiment.name: f.verdicts for f in found})
    for f in found:
        f.verdicts = adjusted[f.experiment.name]
    return found


def _provenance(found: ExperimentResults) -> list[str]:
    meta = found.folder.meta()
    invocations = meta.get("invocations") or [{}]
    last = invocations[-1]
    summary = found.folder.summary()
    # the invocations that trained runs made the numbers (a re-analysis trains none)
    trained = [i for i in invocations if i.get("new_runs")]
    source = trained[-1] if trained else last
    walls = [i["wall_s"] for i in trained if "wall_s" in i]
    wall = sum(walls) if walls else last.get("wall_s")
    profile, seeds = meta.get("profile", "default"), int(meta.get("seeds", 10))
    cohorts = runner.group_cohorts(runner.plan_runs(found.experiment, profile, seeds, {}))
    return [
        f"`{found.experiment.name}`",
        str(meta.get("profile", "")),
        str(meta.get("seeds", "")),
        str(len(summary)),
        str(len(cohorts)),
        f"{meta.get('device_kind', '')} ({meta.get('backend', '')}, jax "
        f"{meta.get('versions', {}).get('jax', '')})",
        str(source.get("git_commit", "unknown"))[:12],
        "—" if wall is None else f"{wall:.0f} s",
    ]


def _link(path: Path, base: Path) -> str:
    return Path(_relative(path, base)).as_posix()


def _relative(path: Path, base: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), base.resolve())


CLAIM_HEADER = [
    "id",
    "the article says",
    "primary test",
    "estimate [95% CI] (n used/planned)",
    "p (Holm)",
    "verdict",
    "figure",
]


def claim_rows(
    claims: list[Claim], found: list[ExperimentResults], link_base: Path, anchors: bool = True
) -> list[list[str]]:
    """One row per claim: its primary test (experiment, statistic, estimate with CI and
    seeds used/planned, raw and Holm-adjusted p, verdict) and the figure that shows it
    (relative to ``link_base``; experiment names link to their report sections when
    ``anchors``)."""
    rows = []
    for claim in claims:
        if not claim.testable:
            rows.append([claim.id, claim.statement, "—", "—", "—", "not-testable", "—"])
            continue
        hits = [
            (f, r)
            for f in found
            for r in f.verdicts[
                (f.verdicts["claim_id"] == claim.id) & (f.verdicts["role"] == "primary")
            ].itertuples()
        ]
        if not hits:
            rows.append([claim.id, claim.statement, "—", "—", "—", "not run", "—"])
            continue
        f, row = hits[0]
        name = f.experiment.name
        where = f"[`{name}`](#{name})" if anchors else f"`{name}`"
        test = f"{where}: {row.statistic}" + (f" ({row.condition})" if row.condition else "")
        if row.kind == "exact":
            number, p = f"{_num(row.estimate)} (exact computation)", "— (exact)"
        else:
            number = (
                f"{_num(row.estimate)} [{_num(row.ci_low)}, {_num(row.ci_high)}] "
                f"({row.n_seeds}/{row.n_planned})"
            )
            p = f"{_p(row.p_value)} ({_p(row.p_holm)})"
        verdict = _verdict_text(row)
        figure = _claim_figure(f, claim.id)
        link = f"[figure]({_link(figure, link_base)})" if figure else "—"
        rows.append([claim.id, claim.statement, test, number, p, verdict, link])
    return rows


def build(results: Path | str = "results", profile: str = "default") -> Doc:
    results = Path(results)
    claims = read_claims()
    found = gather(results, profile)
    doc = Doc()
    doc.heading(1, "How neural networks learn: the claims, tested")
    doc.para(
        f"Generated by `toolkit report --profile {profile}` from the CSVs under "
        f"`{results.name}/` (no training). Each claim is decided by one pre-declared "
        "primary test. Verdicts, for a smallest effect of interest m declared with its "
        "reason: `supported` when the 95% CI over seeds lies beyond m on the predicted "
        "side, `contradicted` when it lies on the other side of zero, else `inconclusive` "
        "(with the seeds an 80%-power calculation says would settle it, or the reason: "
        "too few seeds or levels, a zero-width interval, or a real effect smaller than m); "
        "equivalence "
        "claims use TOST (the 90% CI inside ±m). The twenty primaries are one family: "
        "their p-values are Holm-adjusted at α = 0.05 and the adjusted p decides. "
        "Intervals: t over per-seed values (means, paired differences, log-ratios, "
        "slopes, per-seed Kendall τ), Clopper–Pearson for fractions of seeds, a "
        "studentized bootstrap over seeds otherwise. Diverged runs and runs that did "
        "not reach the comparison point are excluded and counted (n used/planned). "
        "Secondary rows in the experiment sections are exploratory and never vote; "
        "checks are deterministic computations, shown without intervals."
    )
    doc.heading(2, "Claims")
    doc.table(CLAIM_HEADER, claim_rows(claims, found, results))

    doc.heading(2, "Provenance")
    doc.para(
        "Commit: the code that trained the runs (the last invocation that trained any). "
        "Wall: the training invocations' wall time as recorded, on a machine that may "
        "have been shared (times measured alone are in `benchmarks/README.md`)."
    )
    doc.table(
        ["experiment", "profile", "seeds", "runs", "cohorts", "machine", "commit", "wall (as run)"],
        [_provenance(f) for f in found],
    )
    _hardware_section(doc, results, profile, found)
    if profile == "default":
        _scale_section(doc, claims, found, gather(results, "paper"))
    for f in found:
        _experiment_section(doc, f, results)
    return doc


def _claim_figure(found: ExperimentResults, claim_id: str) -> Path | None:
    """The experiment's ``CLAIM_FIGURES[claim]`` figure, else its first figure."""
    names = getattr(found.experiment.module, "CLAIM_FIGURES", {})
    if claim_id in names:
        wanted = [p for p in found.figures if p.stem == names[claim_id]]
        if wanted:
            return wanted[0]
    return found.figures[0] if found.figures else None


def _experiment_section(doc: Doc, found: ExperimentResults, results: Path) -> None:
    name = found.experiment.name
    doc.heading(2, name)
    doc.para(
        f"{found.experiment.summary_line} Claims: {', '.join(found.experiment.claims)}. "
        f"Command: `toolkit run {name} --seeds {found.folder.meta().get('seeds', 10)}`."
    )
    verdicts = found.verdicts
    for role, title in (
        ("primary", "Primary tests (decide the claims)"),
        ("secondary", "Secondary tests (exploratory, never vote)"),
    ):
        part = verdicts[verdicts["role"] == role]
        if part.empty:
            continue
        doc.para(f"**{title}**")
        doc.table(
            [
                "claim",
                "condition",
                "statistic",
                "estimate",
                "95% CI",
                "n used/planned",
                "p (Holm)",
                "verdict",
                "smallest effect (why)",
                "finding",
            ],
            [
                [
                    r.claim_id,
                    r.condition,
                    r.statistic,
                    _num(r.estimate),
                    f"[{_num(r.ci_low)}, {_num(r.ci_high)}]",
                    f"{r.n_seeds}/{r.n_planned}" + (f" ({r.excluded})" if r.excluded else ""),
                    _p(r.p_value) + (f" ({_p(r.p_holm)})" if role == "primary" else ""),
                    _verdict_text(r),
                    f"{r.direction} {_num(r.smallest_effect)} ({r.effect_reason})",
                    str(r.finding),
                ]
                for r in part.itertuples()
            ],
        )
    checks = verdicts[verdicts["role"] == "check"]
    if not checks.empty:
        doc.para("**Checks (deterministic computations, no interval)**")
        doc.table(
            ["claim", "condition", "statistic", "value", "verdict", "bound (why)", "finding"],
            [
                [
                    r.claim_id,
                    r.condition,
                    r.statistic,
                    _num(r.estimate),
                    r.verdict,
                    f"{r.direction} {_num(r.smallest_effect)} ({r.effect_reason})",
                    str(r.finding),
                ]
                for r in checks.itertuples()
            ],
        )
    if found.figures:
        doc.images([(p.stem, _link(p, results)) for p in found.figures])


def _verdict_text(row) -> str:
    if row.verdict != "inconclusive":
        return row.verdict
    if row.reason:
        return f"inconclusive: {row.reason}"
    if pd.notna(row.seeds_needed):
        return f"inconclusive (~{int(row.seeds_needed):,} seeds for 80% power)"
    return "inconclusive"


def _primary(found: list[ExperimentResults], claim_id: str):
    """(experiment results, row) of a claim's primary test, or None."""
    for f in found:
        rows = f.verdicts[(f.verdicts["claim_id"] == claim_id) & (f.verdicts["role"] == "primary")]
        for row in rows.itertuples():
            return f, row
    return None


def _estimate_text(row) -> str:
    if row.kind == "exact":
        return f"{_num(row.estimate)} (exact)"
    return f"{_num(row.estimate)} [{_num(row.ci_low)}, {_num(row.ci_high)}] ({row.n_seeds})"


def _scale_section(doc: Doc, claims: list[Claim], default: list, paper: list) -> None:
    """Each claim's primary under the ``default`` profile beside the ``paper`` profile
    (more seeds, larger data or models), where that has been run, and on what device."""
    doc.heading(2, "At paper scale")
    ran = {f.experiment.name: f for f in paper}
    doc.para(
        "Each claim's primary test (the statistic is in the claims table) under the "
        "`default` profile and under the `paper` profile. "
        "The `paper` profiles rerun each experiment at the scale its claims need "
        "(more seeds; larger data, wider or deeper models where the claim is about "
        "scale; each experiment's docstring says what), meant for a GPU "
        "(`benchmarks/gpu_session.sh`); those small enough for a CPU were run on one, "
        "and the device column says where each was trained. Their primaries are their "
        "own Holm family, over the experiments run so far (the family, and so the "
        "adjusted p-values, grows as more are run). Where a `paper` profile also widens "
        "the grid, the model or the budget (init scales, widths, layers, examples, "
        "epochs), its "
        "statistic is taken over a different set of conditions, so the two estimates "
        "need not agree within their intervals: compare the verdicts. "
        f"Run so far: {len(ran)} of {len(default)} experiments"
        + (f" ({', '.join(f'`{n}`' for n in sorted(ran))})." if ran else ".")
    )
    rows = []
    for claim in claims:
        here = _primary(default, claim.id)
        if here is None:
            continue
        f, row = here
        there = _primary(paper, claim.id)
        if there is None:
            paper_cells = ["not run yet", "—"]
        else:
            device = _device_text(there[0].folder.meta())
            paper_cells = [
                f"{_estimate_text(there[1])}, {device}",
                _verdict_text(there[1]),
            ]
        rows.append(
            [claim.id, f"`{f.experiment.name}`", _estimate_text(row), _verdict_text(row),
             *paper_cells]
        )  # fmt: skip
    doc.table(
        ["id", "experiment", "default: estimate [CI] (n)", "default verdict",
         "paper: estimate [CI] (n), device", "paper verdict"],
        rows,
    )  # fmt: skip


def _device_text(meta: dict) -> str:
    """The devices that trained a results folder, named as `toolkit compare` names them
    (a CPU with its host's model and vector extensions, since CPU numbers depend on them)."""
    return ", ".join(cmp.environment(meta).get("device", ["?"]))


def _hardware_section(doc: Doc, results: Path, profile: str, found) -> None:
    pairs = []
    for f in found:
        for other in sorted((results / f.experiment.name).glob(f"{profile}-*")):
            if (other / "summary.csv").exists():
                pairs.append((f, other))
    if not pairs:
        return
    doc.heading(2, "Same command, other hardware")
    doc.para(
        "`toolkit compare` of each result folder with its twin run elsewhere (same run "
        "ids): per metric and grid point, TOST equivalence of the paired-by-seed "
        "difference at the default tolerances (0.01 for accuracies, 5% of the mean "
        "otherwise). The software column shows when the JAX version changed with the "
        "hardware; a twin trained under an earlier protocol of the experiment is not "
        "comparable and says why (it needs rerunning on that hardware)."
    )
    rows = []
    for f, other in pairs:
        meta_b = ResultsFolder(other).meta()
        jax_a = f.folder.meta().get("versions", {}).get("jax", "?")
        jax_b = meta_b.get("versions", {}).get("jax", "?")
        software = f"jax {jax_a}" if jax_a == jax_b else f"jax {jax_a} vs {jax_b}"
        folders = f"{profile} vs {other.name} ({meta_b.get('device_kind', '?')})"
        try:
            comparison = cmp.compare(f.folder.path, other)
        except cmp.CompareError as err:
            reason = str(err).replace(str(results) + "/", "")
            rows.append(
                [
                    f"`{f.experiment.name}`",
                    folders,
                    software,
                    f"not comparable: {reason}",
                    "—",
                    "—",
                    "—",
                ]
            )
            continue
        counts = comparison.counts()
        claims = comparison.claims
        changed = 0 if claims.empty else int((claims["status"] != "same").sum())
        rows.append(
            [
                f"`{f.experiment.name}`",
                folders,
                software,
                str(counts["equivalent"]),
                str(counts["inconclusive"]),
                str(counts["different"]),
                str(changed),
            ]
        )
    doc.table(
        [
            "experiment",
            "folders",
            "software",
            "equivalent",
            "inconclusive",
            "different",
            "verdicts changed",
        ],
        rows,
    )


README_START = "<!-- claims table: written by `toolkit report` -->"
README_END = "<!-- end of claims table -->"


def readme_with_claims(readme: str, results: Path, profile: str, base: Path) -> str:
    """``readme`` with the claims table between the two marker comments refreshed."""
    if README_START not in readme or README_END not in readme:
        return readme
    found = gather(results, profile)
    table = Doc()
    table.table(CLAIM_HEADER, claim_rows(read_claims(), found, base, anchors=False))
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return head + README_START + "\n\n" + table.markdown() + "\n" + README_END + tail


def check_inputs(results: Path | str, profile: str) -> None:
    """Every results folder the report reads (and every twin it compares with) reads
    back well-formed, and there is at least one; a ResultsError otherwise. Nothing is
    written before this passes."""
    results = Path(results)
    folders = [ResultsFolder(results / n / profile) for n in spec.experiment_names()]
    folders = [f for f in folders if (f.path / "verdicts.csv").exists()]
    if not folders:
        raise ResultsError(
            f"no results for profile {profile!r} under {results} (no <experiment>/{profile}/"
            f"verdicts.csv); run `toolkit run <experiment> --profile {profile}` first, or "
            "pick a profile that has results"
        )
    for folder in folders:
        folder.check(complete=True)
        for twin in sorted(folder.path.parent.glob(f"{profile}-*")):
            if (twin / "summary.csv").exists():
                ResultsFolder(twin).check()


def write(
    results: Path | str = "results", profile: str = "default", readme: Path | None = None
) -> list[Path]:
    """Write ``REPORT.md`` and ``REPORT.html`` into ``results`` (and, for the default
    profile, refresh the claims table in ``readme``); return the paths written."""
    results = Path(results)
    doc = build(results, profile)
    suffix = "" if profile == "default" else f"-{profile}"
    md, page = results / f"REPORT{suffix}.md", results / f"REPORT{suffix}.html"
    atomic_write_bytes(md, doc.markdown().encode())
    atomic_write_bytes(page, doc.html("How neural networks learn: the claims, tested").encode())
    written = [md, page]
    if readme is not None and profile == "default" and Path(readme).exists():
        text = Path(readme).read_text()
        new = readme_with_claims(text, results, profile, Path(readme).parent)
        if new != text:
            atomic_write_bytes(Path(readme), new.encode())
            written.append(Path(readme))
    return written
