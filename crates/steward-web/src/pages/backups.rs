//! Backups: the DR report with real numbers. Per source, its state, the last successful
//! backup, the last passed drill, the recovery point (RPO) and recovery time (RTO) against
//! their targets, and what needs attention; per repository, its last check and prune.

use chrono::{DateTime, Utc};
use maud::{html, Markup};
use steward_dr::report::{human, Brief, DrReport, SourceReport};

use crate::{layout::page, span, when, Shell};

/// A source's state as a pill: text plus the health pill's colour class, never colour alone.
pub fn status_pill(status: &str) -> Markup {
    let (class, text) = match status {
        "ok" => ("ok", "ok"),
        "at_risk" => ("bad", "at risk"),
        "unproven" => ("unknown", "unproven"),
        other => ("unknown", other),
    };
    html! { span class=(format!("pill {class}")) { (text) } }
}

/// Met, missed, or not judged: in words, coloured as well.
fn verdict(met: Option<bool>) -> Markup {
    html! {
        @match met {
            Some(true) => span.ok { "met" },
            Some(false) => span.bad { "missed" },
            None => span.muted { "not judged yet" },
        }
    }
}

/// `2026-12-01 10:57 UTC (3h 2m ago)`.
fn at(now: DateTime<Utc>, t: DateTime<Utc>) -> Markup {
    html! { (when(t)) " " span.muted { "(" (span((now - t).num_seconds())) " ago)" } }
}

/// A snapshot id shortened to its first 8 characters, as restic prints it.
fn short_id(id: &str) -> String {
    id.chars().take(8).collect()
}

/// The target and whether it is met; without a target there is nothing to judge.
fn target(t: Option<f64>, met: Option<bool>) -> Markup {
    html! {
        @match t {
            Some(t) => { "target " (human(t)) ": " (verdict(met)) }
            None => span.muted { "no target" },
        }
    }
}

fn last_backup(now: DateTime<Utc>, s: &SourceReport) -> Markup {
    html! {
        @if let Some(b) = &s.last_successful_backup {
            (at(now, b.at))
            @if let Some(id) = &b.snapshot { br; "snapshot " code title=(id) { (short_id(id)) } }
        } @else {
            span.muted { "none yet" }
        }
        @if let Some(b) = s.last_backup.as_ref().filter(|b| b.ok == Some(false)) {
            br; span.bad { "last attempt failed " (when(b.at)) }
        }
    }
}

fn last_drill(now: DateTime<Utc>, s: &SourceReport) -> Markup {
    html! {
        @if let Some(d) = &s.last_passed_drill {
            (at(now, d.at))
            @if let Some(r) = d.restore_s { br; span.muted { "restored in " (human(r)) } }
        } @else if s.rpo_basis == "backup" {
            span.muted { "no drill configured" }
        } @else {
            span.muted { "none passed yet" }
        }
        @if let Some(d) = s.last_drill.as_ref().filter(|d| d.ok == Some(false)) {
            br; span.bad { "last drill failed " (when(d.at)) }
        }
    }
}

fn rpo(s: &SourceReport) -> Markup {
    html! {
        @match s.rpo_s {
            Some(r) => {
                strong { (human(r)) } " "
                span.muted { @if s.rpo_basis == "drill" { "(proven by a drill)" } @else { "(last backup, not proven by a drill)" } }
            }
            None => span.muted { "none yet" },
        }
        br; (target(s.rpo_target_s, s.rpo_met))
    }
}

fn rto(s: &SourceReport) -> Markup {
    html! {
        @match s.rto_s {
            Some(r) => { strong { (human(r)) } " " span.muted { "(last passed drill)" } }
            None => span.muted { "not measured" },
        }
        br; (target(s.rto_target_s, s.rto_met))
    }
}

fn run_outcome(now: DateTime<Utc>, b: Option<&Brief>, never: &str) -> Markup {
    html! {
        @match b {
            Some(b) => {
                @match b.ok {
                    Some(true) => span.ok { "ok" },
                    Some(false) => span.bad { "failed" },
                    None => span.muted { "running" },
                }
                " " (at(now, b.at))
                @if let Some(e) = b.error.as_ref().filter(|_| b.ok == Some(false)) { br; span.bad { (e) } }
            }
            None => span.muted { (never) },
        }
    }
}

/// The page.
pub fn render(shell: &Shell, r: &DrReport) -> Markup {
    let now = r.generated_at;
    let count = |st: &str| r.sources.iter().filter(|s| s.status == st).count();
    let body = html! {
        h1 { "Backups" }
        p.muted { "Disaster-recovery report generated " (when(r.generated_at)) "." }
        @if r.sources.is_empty() {
            p { "No backup sources are configured." }
            p.muted {
                "Add a " code { "[[backup.sources]]" } " section (and a " code { "[[backup.repositories]]" }
                " for it to write to) to the server's configuration; see " code { "docs/backup.md" } "."
            }
        } @else {
            p {
                (r.sources.len()) @if r.sources.len() == 1 { " source: " } @else { " sources: " }
                (count("ok")) " ok, "
                @if count("at_risk") > 0 { span.bad { (count("at_risk")) " at risk" } } @else { "0 at risk" }
                ", " (count("unproven")) " unproven."
            }
            div.table-wrap { table {
                caption { "Backup sources: recovery point (RPO) and recovery time (RTO) against their targets" }
                thead { tr {
                    th scope="col" { "Source" } th scope="col" { "Status" }
                    th scope="col" { "Last successful backup" } th scope="col" { "Last passed drill" }
                    th scope="col" { "RPO" } th scope="col" { "RTO" } th scope="col" { "Notes" }
                } }
                tbody {
                    @for s in &r.sources {
                        tr {
                            th scope="row" {
                                (s.name) br;
                                span.muted { (s.kind) " → " (s.repository) }
                                @if let Some(sch) = &s.schedule { br; span.muted { (sch) } }
                            }
                            td { (status_pill(s.status)) }
                            td { (last_backup(now, s)) }
                            td { (last_drill(now, s)) }
                            td { (rpo(s)) }
                            td { (rto(s)) }
                            td {
                                @if s.notes.is_empty() { span.muted { "none" } }
                                @else { ul.notes { @for n in &s.notes { li { (n) } } } }
                            }
                        }
                    }
                }
            } }
        }

        h2 { "Repositories" }
        @if r.repositories.is_empty() {
            p.muted { "No backup repositories are configured." }
        } @else {
            div.table-wrap { table {
                caption { "Backup repositories and their last integrity check" }
                thead { tr {
                    th scope="col" { "Repository" } th scope="col" { "Location" }
                    th scope="col" { "Last check" } th.hide-sm scope="col" { "Last prune" }
                } }
                tbody {
                    @for repo in &r.repositories {
                        tr {
                            th scope="row" { (repo.name) }
                            td { code { (repo.location) } }
                            td { (run_outcome(now, repo.last_check.as_ref(), "never checked")) }
                            td.hide-sm { (run_outcome(now, repo.last_prune.as_ref(), "never pruned")) }
                        }
                    }
                }
            } }
        }
    };
    page(shell, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Nav;
    use chrono::{Duration, TimeZone};
    use steward_dr::report::RepoReport;

    fn shell() -> Shell<'static> {
        Shell {
            title: "Backups",
            nav: Nav::Backups,
            actor: Some("ops"),
            csrf: Some("c"),
            flash: None,
        }
    }

    fn brief(at: DateTime<Utc>, ok: bool) -> Brief {
        Brief {
            at,
            ok: Some(ok),
            snapshot: ok.then(|| "0123456789abcdef0123".to_string()),
            snapshot_time: Some(at),
            bytes: Some(1024),
            duration_s: Some(3.0),
            restore_s: Some(42.0),
            error: (!ok).then(|| "repository <locked>".to_string()),
        }
    }

    fn source(name: &str, status: &'static str) -> SourceReport {
        SourceReport {
            name: name.into(),
            kind: "directory".into(),
            repository: "main".into(),
            schedule: None,
            last_backup: None,
            last_successful_backup: None,
            last_drill: None,
            last_passed_drill: None,
            rpo_s: None,
            rpo_basis: "backup",
            rpo_target_s: None,
            rpo_met: None,
            rto_s: None,
            rto_target_s: None,
            rto_met: None,
            status,
            notes: vec![],
        }
    }

    fn report() -> DrReport {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let old = now - Duration::hours(30);
        let mut risky = source("appdb", "at_risk");
        risky.kind = "postgres".into();
        risky.schedule = Some("0 3 * * *".into());
        risky.last_backup = Some(brief(now - Duration::hours(2), false));
        risky.last_successful_backup = Some(brief(old, true));
        risky.last_drill = Some(brief(old, true));
        risky.last_passed_drill = Some(brief(old, true));
        risky.rpo_s = Some(30.0 * 3600.0);
        risky.rpo_basis = "drill";
        risky.rpo_target_s = Some(86_400.0);
        risky.rpo_met = Some(false);
        risky.rto_s = Some(42.0);
        risky.rto_target_s = Some(600.0);
        risky.rto_met = Some(true);
        risky.notes = vec![
            "the last backup failed".into(),
            "recovery point 30.0 h is older than the target 24.0 h".into(),
        ];
        let mut fine = source("<script>alert(1)</script>", "ok");
        fine.last_backup = Some(brief(now - Duration::minutes(5), true));
        fine.last_successful_backup = fine.last_backup.clone();
        fine.rpo_s = Some(300.0);
        DrReport {
            generated_at: now,
            sources: vec![risky, fine, source("fresh", "unproven")],
            repositories: vec![RepoReport {
                name: "main".into(),
                location: "/srv/backup/main".into(),
                last_check: Some(brief(now - Duration::hours(1), false)),
                last_prune: None,
            }],
        }
    }

    #[test]
    fn the_report_shows_status_numbers_and_notes_in_words() {
        let html = render(&shell(), &report()).into_string();
        assert!(html.contains(r#"<a href="/ui/backups" aria-current="page">Backups</a>"#));
        assert!(html.contains("generated 2026-12-01 12:00 UTC"));
        assert!(
            html.contains(r#"3 sources: 1 ok, <span class="bad">1 at risk</span>, 1 unproven."#)
        );
        // Status pills: text and the health pill's classes.
        assert!(html.contains(r#"<span class="pill bad">at risk</span>"#));
        assert!(html.contains(r#"<span class="pill ok">ok</span>"#));
        assert!(html.contains(r#"<span class="pill unknown">unproven</span>"#));
        // The at-risk source: type, schedule, snapshot short id, failed attempt, drill.
        assert!(html.contains("postgres → main") && html.contains("0 3 * * *"));
        assert!(html.contains(r#"<code title="0123456789abcdef0123">01234567</code>"#));
        assert!(html.contains("last attempt failed 2026-12-01 10:00 UTC"));
        assert!(html.contains("2026-11-30 06:00 UTC"));
        assert!(html.contains("(1d 6h ago)"));
        assert!(html.contains("restored in 42.0 s"));
        // RPO and RTO: value, basis, target and verdict in words.
        assert!(html.contains("<strong>30.0 h</strong>"));
        assert!(html.contains("(proven by a drill)"));
        assert!(html.contains(r#"target 24.0 h: <span class="bad">missed</span>"#));
        assert!(html.contains(r#"target 10 min: <span class="ok">met</span>"#));
        assert!(html.contains("(last backup, not proven by a drill)"));
        assert!(html.contains("no target"));
        assert!(html.contains("no drill configured"));
        assert!(html.contains("<li>the last backup failed</li>"));
        assert!(html.contains("<li>recovery point 30.0 h is older than the target 24.0 h</li>"));
        // Accessible tables: captions, column and row headers.
        assert_eq!(html.matches("<caption>").count(), 2);
        assert!(html.contains(r#"<th scope="col">RPO</th>"#));
        assert!(html.contains(r#"<th scope="row">main</th>"#));
        // The repository: location, last check failed with its error (escaped), never pruned.
        assert!(html.contains("<code>/srv/backup/main</code>"));
        assert!(html.contains(r#"<span class="bad">failed</span> 2026-12-01 11:00 UTC"#));
        assert!(html.contains("repository &lt;locked&gt;"));
        assert!(html.contains("never pruned"));
        assert!(!html.contains("No backup sources are configured"));
    }

    #[test]
    fn source_names_are_escaped() {
        let html = render(&shell(), &report()).into_string();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<script>alert"));
    }

    #[test]
    fn without_sources_the_page_says_how_to_add_one() {
        let r = DrReport {
            generated_at: Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap(),
            sources: vec![],
            repositories: vec![],
        };
        let html = render(&shell(), &r).into_string();
        assert!(html.contains("No backup sources are configured."));
        assert!(html.contains("<code>[[backup.sources]]</code>"));
        assert!(html.contains("docs/backup.md"));
        assert!(html.contains("No backup repositories are configured."));
        assert!(!html.contains("<table"));
    }

    #[test]
    fn statuses_map_to_the_health_pill_classes() {
        assert_eq!(
            status_pill("ok").into_string(),
            r#"<span class="pill ok">ok</span>"#
        );
        assert_eq!(
            status_pill("at_risk").into_string(),
            r#"<span class="pill bad">at risk</span>"#
        );
        assert_eq!(
            status_pill("unproven").into_string(),
            r#"<span class="pill unknown">unproven</span>"#
        );
        assert_eq!(short_id("abc"), "abc");
    }
}
